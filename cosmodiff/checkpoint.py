"""Run folders: config.json, model.safetensors (EMA weights), accelerate state for resuming, log.csv.

Every file is written to a temporary name and renamed into place, and config.json (which names the
state folder to resume from) is the commit: a run killed at any moment resumes from the checkpoint
config.json names, whole. model.safetensors carries its step; if a kill fell between it and
config.json, the EMA weights of config.json's step are read from its state folder instead, so a
folder never mixes two steps. A failed write (a full disk) removes what it began and leaves the
previous checkpoint as it was. Nothing is unpickled: weights are safetensors, settings JSON, and
accelerate's optimizer state is read with torch.load(weights_only=True).
"""
import contextlib
import csv
import fcntl
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from cosmodiff.atomic import atomic_path, atomic_write_text
from cosmodiff.ranges import COUNT, FINITE, INDEX, POSITIVE, Number, checked_numbers
from cosmodiff.diffusion import FORMULATIONS, build_formulation
from cosmodiff.models import build_model
from cosmodiff.config import setting_ranges


FORMAT = 2  # 1: before formulations (vp settings without a name); 2: config["diffusion"] names its formulation


class CheckpointError(ValueError):
    """A folder that is not a usable run: the message names it and the problem."""


def new_run_dir(results_dir, run_name, model_name):
    """results_dir/run_name, or results_dir/<time>-<model> when no name is given (not created yet)."""
    return Path(results_dir) / (run_name or f"{time.strftime('%Y%m%d-%H%M%S')}-{model_name.replace('/', '')}")


HELD_LOCKS = {}  # folder -> its open lock file, kept open (and so locked) until released or the process ends


def lock_folder(folder, holder, hint):
    """Hold folder/.lock until release_folders() or the process's end (the kernel drops it when the
    process dies, even by kill -9); a second process that asks for the folder is refused in one
    sentence naming the holder's pid. holder: what holds it ("training run"); hint: what to do instead."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    handle = (folder / ".lock").open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder_pid = handle.read().strip() or "pid unknown"
        handle.close()
        raise CheckpointError(f"{folder}: in use by another {holder} ({holder_pid}); wait for it to end or {hint}") from None
    handle.truncate(0)
    handle.write(f"pid {os.getpid()}")
    handle.flush()
    HELD_LOCKS[folder] = handle


def lock_run(run_dir):
    """A training run's hold on its run folder."""
    lock_folder(run_dir, "training run", "pick another --run_name")


def release_folders():
    """Give up every folder this process holds (work done in-process, a caller's process goes on)."""
    while HELD_LOCKS:
        HELD_LOCKS.popitem()[1].close()


def holds_training_run(folder):
    """Whether a folder (or the folder a link names) is a training run's: its config.json has train_args."""
    try:
        return "train_args" in json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError, TypeError):
        return False


@contextlib.contextmanager
def output_lock(folder, holder):
    """The output folder held while a command works towards it (sampling, evaluation, inference, prepare,
    NPE training); a folder holding a training run is refused, and a folder it made and left empty but for
    the lock goes again when the work fails."""
    folder = Path(folder)
    if holds_training_run(folder):
        raise CheckpointError(f"{folder}: holds a training run (its config.json and weights), which the {holder} "
                              "would overwrite; pick another --out")
    made = not folder.exists()
    lock_folder(folder, holder, "pick another --out")
    try:
        yield
    except BaseException:
        if made and folder.is_dir() and [path.name for path in folder.iterdir()] == [".lock"]:
            shutil.rmtree(folder)
        raise
    finally:
        HELD_LOCKS.pop(folder).close()


# config.json's numeric keys (dotted; a list's entries share their key) -> the range train.py's flags and
# the transform fitted on the data give them; the network's sizes are counts, and train_args are the flags'
CONFIG_RANGES = {
    "format": COUNT, "image_size": COUNT, "box_size": POSITIVE, "step": INDEX, "sampling_timesteps": COUNT,
    "n_parameters": COUNT, "num_processes": COUNT, "data.n_fields": COUNT,
    "transform.offset": FINITE, "transform.scale": POSITIVE, "transform.eps": POSITIVE, "transform.log_mean": FINITE,
    "transform.log_std": POSITIVE, "transform.data_std": POSITIVE, "transform.x_min": FINITE,
    "transform.x_max": FINITE, "transform.gains": POSITIVE,
    "diffusion.sigma_data": POSITIVE, "diffusion.sigma_min": POSITIVE, "diffusion.sigma_max": POSITIVE,
    **{f"diffusion.{flag}": options["type"] for formulation in FORMULATIONS.values()
       for flag, options in formulation.flags.items() if isinstance(options.get("type"), Number)},
    "model.kwargs.*": COUNT, "model.kwargs.cond_dim": INDEX, "model.kwargs.mlp_ratio": POSITIVE,
    "condition.mean": FINITE, "condition.std": POSITIVE, "condition.low": FINITE, "condition.high": FINITE,
    **{f"train_args.{name}": kind for name, kind in setting_ranges().items()},
}


def read_config(run_dir):
    path = Path(run_dir) / "config.json"
    if not Path(run_dir).is_dir():
        raise CheckpointError(f"{run_dir}: no such run folder")
    if not path.exists():
        raise CheckpointError(f"{run_dir}: not a run folder (no config.json); train one with train.py")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}: unreadable config ({error})") from None
    if config.get("format", 1) > FORMAT:
        raise CheckpointError(f"{path}: written by a newer version (run folder format {config['format']}; this one "
                              f"reads up to {FORMAT}); upgrade cosmodiff to use it")
    return checked_numbers(config, CONFIG_RANGES, path, CheckpointError)


def read_log(run_dir):
    """log.csv's rows as dicts of floats (step as int; NaN where a row has no value), in step order."""
    path = Path(run_dir) / "log.csv"
    if not path.exists():
        raise CheckpointError(f"{run_dir}: has no log.csv")
    rows = [{name: float(value or "nan") for name, value in row.items()} for row in csv.DictReader(path.open())]
    return [dict(row, step=int(row["step"])) for row in rows]


def log_images_per_s(run_dir, after_step=0):
    """Training images/s over log.csv's rows past after_step (equal windows: total images / total seconds)."""
    rates = [row["images_per_s"] for row in read_log(run_dir) if row["step"] > after_step]
    return len(rates) / sum(1 / rate for rate in rates)


def tensors(module):
    return {name: tensor.detach().cpu().contiguous() for name, tensor in module.state_dict().items()}


def save_checkpoint(run_dir, accelerator, ema, config):
    """Accelerate state (model, optimizer, RNGs) and the EMA, then EMA weights, then config.json.

    Call on every process (accelerate's state gathers per-process RNGs); only the main one writes.
    """
    run_dir = Path(run_dir)
    state_name = f"state-{config['step']:07d}"
    temporary_state = run_dir / f"{state_name}.tmp"
    if accelerator.is_main_process:
        remove_partial_saves(run_dir)  # left by a run killed while saving
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(temporary_state))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            commit(run_dir, ema, config, state_name, temporary_state)
    except (OSError, RuntimeError) as error:  # torch.save reports a full disk as a RuntimeError
        remove_partial_saves(run_dir)
        previous = f"step {read_config(run_dir)['step']}" if (run_dir / "config.json").exists() else "none yet"
        raise CheckpointError(f"{run_dir}: could not write the checkpoint of step {config['step']} "
                              f"({getattr(error, 'strerror', None) or error}); the previous checkpoint ({previous}) is intact") from None


def remove_partial_saves(run_dir):
    for partial in [*run_dir.glob("*.tmp"), *run_dir.glob("*.tmp.*")]:
        shutil.rmtree(partial) if partial.is_dir() else partial.unlink()


def commit(run_dir, ema, config, state_name, temporary_state):
    save_file(tensors(ema), str(temporary_state / "ema.safetensors"))
    shutil.rmtree(run_dir / state_name, ignore_errors=True)  # an uncommitted one, from a killed save
    os.replace(temporary_state, run_dir / state_name)
    with atomic_path(run_dir / "model.safetensors") as temporary:
        save_file(tensors(ema.ema_model), str(temporary), metadata={"step": str(config["step"])})
    atomic_write_text(run_dir / "config.json", json.dumps(dict(config, state=state_name), indent=1))
    for old in run_dir.glob("state-*"):
        if old.name != state_name:
            shutil.rmtree(old, ignore_errors=True)


def training_state(run_dir, config):
    """The state folder config.json names, which --resume needs."""
    if "state" not in config:
        raise CheckpointError(f"{run_dir}: has no training state (its weights sample, but it cannot resume)")
    state = Path(run_dir) / config["state"]
    if not (state / "ema.safetensors").exists():
        raise CheckpointError(f"{state}: the training state config.json names is missing or incomplete; "
                              "the run cannot resume (its weights still sample)")
    return state


def load_training_state(run_dir, accelerator, ema):
    """Restore model, optimizer, RNGs and EMA from the state folder config.json names; returns the config."""
    config = read_config(run_dir)
    state = training_state(run_dir, config)
    accelerator.load_state(str(state))
    ema.load_state_dict(load_file(str(state / "ema.safetensors")))
    return config


def committed_weights(run_dir, config):
    """The EMA weights of config.json's step: model.safetensors, or the state folder's EMA when a kill
    fell between writing the two."""
    weights_path = Path(run_dir) / "model.safetensors"
    if not weights_path.exists():
        raise CheckpointError(f"{run_dir}: has no model.safetensors")
    try:
        with safe_open(str(weights_path), "pt") as handle:
            step = (handle.metadata() or {}).get("step")
        if step in (None, str(config.get("step"))) or "state" not in config:
            return load_file(str(weights_path))
        ema = load_file(str(training_state(run_dir, config) / "ema.safetensors"))
    except CheckpointError:
        raise
    except Exception as error:  # safetensors raises its own error types for truncated or garbage files
        raise CheckpointError(f"{weights_path}: not a readable safetensors file ({error})") from None
    return {name[len("ema_model."):]: tensor for name, tensor in ema.items() if name.startswith("ema_model.")}


def sha256(path):
    """The SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_digest(folder):
    """The SHA-256 of a run or NPE folder's model.safetensors: which weights a result came from, so a
    cached result is not read against a model retrained since."""
    return sha256(Path(folder) / "model.safetensors")


def verify_manifest(folder):
    """Refuse a run folder whose files are missing or differ from its manifest.json (a pretrained
    model's; no manifest: nothing to check)."""
    manifest_path = Path(folder) / "manifest.json"
    if not manifest_path.is_file():
        return
    try:
        checksums = dict(json.loads(manifest_path.read_text())["sha256"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{manifest_path}: not a manifest with a 'sha256' table ({error})") from None
    for name, expected in checksums.items():
        path = Path(folder) / name
        if not path.is_file():
            raise CheckpointError(f"{path}: listed in {manifest_path} but missing")
        if sha256(path) != expected:
            raise CheckpointError(f"{path}: its SHA-256 differs from {manifest_path}'s; the file is damaged or replaced")


def latest_run(results_dir):
    """The run folder under results_dir whose config.json was written last."""
    configs = sorted(Path(results_dir).glob("*/config.json"), key=lambda path: path.stat().st_mtime)
    if not configs:
        raise CheckpointError(f"{results_dir}: no run folders with a config.json; train one with "
                              "`accelerate launch train.py` or pass --checkpoint DIR")
    return configs[-1].parent


def torch_device(name=None):
    """The named torch device, else the GPU where there is one: where a loaded run computes."""
    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


def load_run(run_dir):
    """The EMA network of a run, built from config.json and loaded strictly from model.safetensors,
    its formulation and its config; a folder with a manifest.json (pretrained/) is checked against it first."""
    verify_manifest(run_dir)
    config = read_config(run_dir)
    config_path, weights_path = Path(run_dir) / "config.json", Path(run_dir) / "model.safetensors"
    missing = [key for key in ("model", "diffusion", "image_size", "transform") if key not in config]
    if missing:
        raise CheckpointError(f"{config_path}: lacks the key '{missing[0]}'")
    try:
        model = build_model(config["model"]["name"], config["model"]["kwargs"])
        formulation = build_formulation(config["diffusion"])
    except KeyError as error:
        raise CheckpointError(f"{config_path}: lacks the key {error}") from None
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{config_path}: {error}") from None
    weights = committed_weights(run_dir, config)
    try:
        model.load_state_dict(weights, strict=True)
    except (RuntimeError, OSError, ValueError) as error:
        detail = " ".join(line.strip() for line in str(error).strip().splitlines()[:3])
        raise CheckpointError(f"{weights_path}: the weights do not match the model in config.json ({detail})") from None
    return model.eval(), formulation, config
