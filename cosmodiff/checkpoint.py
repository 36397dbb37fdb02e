"""Run folders: config.json, model.safetensors (EMA weights), accelerate state for resuming, log.csv.

Every file is written to a temporary name and renamed into place, and config.json (which names the
state folder to resume from) is written last, so a run killed at any moment leaves its last complete
checkpoint loadable. Nothing is unpickled: weights are safetensors, settings JSON, and accelerate's
optimizer state is read with torch.load(weights_only=True).
"""
import csv
import json
import os
import shutil
import time
from pathlib import Path

from safetensors.torch import load_file, save_file

from cosmodiff.diffusion import build_formulation
from cosmodiff.models import build_model


FORMAT = 2  # 1: before formulations (vp settings without a name); 2: config["diffusion"] names its formulation


class CheckpointError(ValueError):
    """A folder that is not a usable run: the message names it and the problem."""


def atomic_write_text(path, text):
    temporary = Path(f"{path}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def new_run_dir(results_dir, run_name, model_name):
    """results_dir/run_name, or results_dir/<time>-<model> when no name is given."""
    name = run_name or f"{time.strftime('%Y%m%d-%H%M%S')}-{model_name.replace('/', '')}"
    run_dir = Path(results_dir) / name
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


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
    return config


def read_log(run_dir):
    """log.csv's rows as dicts of floats (step as int), in step order."""
    path = Path(run_dir) / "log.csv"
    if not path.exists():
        raise CheckpointError(f"{run_dir}: has no log.csv")
    rows = [{name: float(value) for name, value in row.items()} for row in csv.DictReader(path.open())]
    return [dict(row, step=int(row["step"])) for row in rows]


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
        shutil.rmtree(temporary_state, ignore_errors=True)  # left by a run killed while saving
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temporary_state))
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return
    save_file(tensors(ema), str(temporary_state / "ema.safetensors"))
    shutil.rmtree(run_dir / state_name, ignore_errors=True)
    os.replace(temporary_state, run_dir / state_name)
    save_file(tensors(ema.ema_model), str(run_dir / "model.safetensors.tmp"), metadata={"step": str(config["step"])})
    os.replace(run_dir / "model.safetensors.tmp", run_dir / "model.safetensors")
    atomic_write_text(run_dir / "config.json", json.dumps(dict(config, state=state_name), indent=1))
    for old in run_dir.glob("state-*"):
        if old.name != state_name:
            shutil.rmtree(old, ignore_errors=True)


def load_training_state(run_dir, accelerator, ema):
    """Restore model, optimizer, RNGs and EMA from the state folder config.json names; returns the config."""
    config = read_config(run_dir)
    state = Path(run_dir) / config["state"]
    accelerator.load_state(str(state))
    ema.load_state_dict(load_file(str(state / "ema.safetensors")))
    return config


def latest_run(results_dir):
    """The run folder under results_dir whose config.json was written last."""
    configs = sorted(Path(results_dir).glob("*/config.json"), key=lambda path: path.stat().st_mtime)
    if not configs:
        raise CheckpointError(f"{results_dir}: no run folders with a config.json; train one with "
                              "`accelerate launch train.py` or pass --checkpoint DIR")
    return configs[-1].parent


def load_run(run_dir):
    """The EMA network of a run, built from config.json and loaded strictly from model.safetensors,
    its formulation and its config."""
    config = read_config(run_dir)
    config_path, weights_path = Path(run_dir) / "config.json", Path(run_dir) / "model.safetensors"
    try:
        model = build_model(config["model"]["name"], config["model"]["kwargs"])
        formulation = build_formulation(config["diffusion"])
        config["image_size"], config["transform"]
    except KeyError as error:
        raise CheckpointError(f"{config_path}: lacks the key {error}") from None
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{config_path}: {error}") from None
    if not weights_path.exists():
        raise CheckpointError(f"{run_dir}: has no model.safetensors")
    try:
        weights = load_file(str(weights_path))
    except Exception as error:  # safetensors raises its own error types for truncated or garbage files
        raise CheckpointError(f"{weights_path}: not a readable safetensors file ({error})") from None
    try:
        model.load_state_dict(weights, strict=True)
    except (RuntimeError, OSError, ValueError) as error:
        detail = " ".join(line.strip() for line in str(error).strip().splitlines()[:3])
        raise CheckpointError(f"{weights_path}: the weights do not match the model in config.json ({detail})") from None
    return model.eval(), formulation, config
