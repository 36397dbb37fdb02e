"""The training loop: a run folder trained from its settings (config.TrainConfig: train.py's
flags), new or resumed, with its log, checkpoints, fidelity checks and sample grids; train.py and
`cosmodiff.train` call run_training."""
import collections
import contextlib
import dataclasses
import csv
import importlib.util
import itertools
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import broadcast_object_list, set_seed
from tqdm import tqdm

from cosmodiff import plots
from cosmodiff.checkpoint import (CheckpointError, latest_run, load_training_state, lock_run, new_run_dir, read_config,
                                  read_log, release_folders, save_checkpoint, training_state)
from cosmodiff.atomic import writable_folder
from cosmodiff.launch import Preemption, accelerated, device_has_bf16_units, launch_device_type, mixed_precision
from cosmodiff.loader import FieldDataset, StepBatches, fitting_sample, training_batches
from cosmodiff.run import build_training, training_condition, training_fields, validation_set
from cosmodiff.sampling import physical_fields
from cosmodiff.transforms import TRANSFORMS, augment_periodic, transform_from_dict

# elapsed_s: wall-clock training seconds; cpu_s: the main process's CPU seconds (all its threads), the
# compute a run used whatever else shared the machine
# val_mafd, val_floor: the in-training fidelity check's MAFD and its floor, at each --save_every step
LOG_COLUMNS = ["step", "loss", "lr", "images_per_s", "elapsed_s", "cpu_s", "val_mafd", "val_floor"]
DEFAULTS_BEFORE_THE_FLAG = {"lr_schedule": "cosine"}  # a run folder from before --lr_schedule resumes as it trained
# what --resume may be given (how long, and how fast: precision and compilation); the rest is the run's
RESUME_FLAGS = {"resume", "train_steps", "results_dir", "precision", "compile"}
TIMING_STEPS = 20  # --train_minutes: steps timed before the step count is fixed (inside the warm-up)
SPIKE_WINDOW, SPIKE_MIN_HISTORY = 100, 20  # --loss_spike: the median of the last 100 steps, once 20 are known
PREEMPTED = 75  # exit status after SIGTERM/SIGUSR1: checkpoint written, resume with --resume (sysexits' EX_TEMPFAIL)


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss); the message names the step."""


def tracker_settings(settings):
    """accelerate's experiment trackers for --report_to (the tensorboard package must be installed)."""
    if settings.report_to == "tensorboard" and importlib.util.find_spec("tensorboard") is None:
        raise ValueError("--report_to tensorboard needs the tensorboard package: pip install tensorboard")
    return dict(log_with=settings.report_to, project_dir=settings.results_dir) if settings.report_to else {}


def dropped(cond, settings):
    """The batch's conditions with a --cond_drop_prob share replaced by NaN (no condition), so the
    network also learns the unconditional estimate classifier-free guidance needs."""
    drop = torch.rand(len(cond), device=cond.device) < settings.cond_drop_prob
    return cond.masked_fill(drop[:, None], float("nan"))


def learning_rate(step, settings):
    """Linear warm-up, then the --lr_schedule: constant (a checkpoint at any step is the run that
    budget gives, which the convergence study relies on), cosine decay to 10% of --lr at --train_steps,
    or wsd (warm-up, stable, decay: flat, then linear to zero over the last --cooldown_fraction of
    --train_steps, the cool-down Hagele et al. 2024 pair with a constant rate). Flat while a
    --train_minutes run has not fixed its step count."""
    warm = settings.lr * min(1.0, (step + 1) / settings.warmup_steps)
    if step < settings.warmup_steps or settings.train_steps is None or settings.lr_schedule == "constant":
        return warm
    if settings.lr_schedule == "wsd":
        cooldown = max(1, round(settings.cooldown_fraction * settings.train_steps))
        return warm * min(1.0, (settings.train_steps - step) / cooldown)
    progress = min(1.0, (step - settings.warmup_steps) / max(1, settings.train_steps - settings.warmup_steps))
    return settings.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def start_or_resume(settings, accelerator):
    """The run folder and its arguments: a new one, or a resumed one with its saved arguments."""
    if settings.resume is None:
        writable_folder(settings.results_dir, "--results_dir")
        run_dir = new_run_dir(settings.results_dir, settings.run_name, settings.model) if accelerator.is_main_process else None
        if run_dir is not None and any((run_dir / name).exists() for name in ("config.json", "model.safetensors")):
            raise CheckpointError(f"{run_dir}: holds a run already; continue it with --resume {run_dir} or pick "
                                  "another --run_name")
        return Path(broadcast(accelerator, str(run_dir))), settings, None
    ignored = [f"--{field.name}" for field in dataclasses.fields(settings)
               if field.name not in RESUME_FLAGS and getattr(settings, field.name) != field.default]
    if ignored:
        raise ValueError(f"--resume continues a run with its own settings; {', '.join(ignored)} cannot change them "
                         "(only --train_steps, --precision and --compile can)")
    run_dir = latest_run(settings.results_dir) if settings.resume == "latest" else Path(settings.resume)
    config = read_config(run_dir)
    if config.get("format", 1) < 2:
        raise CheckpointError(f"{run_dir}: written by an earlier version whose training state this one cannot "
                              "resume; it samples as before, but training must start a new run")
    training_state(run_dir, config)
    # flags newer than the run: their defaults, or what runs trained with before the flag existed
    # (a stored argument no flag takes any more is dropped)
    known = {field.name for field in dataclasses.fields(settings)}
    saved = type(settings)(**{name: value for name, value in {**DEFAULTS_BEFORE_THE_FLAG, **config["train_args"]}.items()
                             if name in known})
    saved.train_steps = settings.train_steps or saved.train_steps
    saved.precision, saved.compile = settings.precision, settings.compile
    saved.resume = str(run_dir)
    return run_dir, saved, config


def broadcast(accelerator, value):
    """The main process's value of a picklable object, on every process."""
    return broadcast_object_list([value])[0] if accelerator.num_processes > 1 else value


def sample_grid(ema_network, formulation, config, path, n_samples=16):
    """A grid of DDIM samples from the EMA network, in physical units (a conditional run's at the
    training set's mean parameters)."""
    transform = transform_from_dict(config["transform"])
    size = config["image_size"]
    device = next(ema_network.parameters()).device
    cond = None if config["condition"] is None else torch.zeros(n_samples, len(config["condition"]["names"]),
                                                                   device=device)
    fields = physical_fields(formulation, ema_network, transform, size, range(n_samples), 0, "ddim",
                             config["sampling_timesteps"], cond=cond)
    plots.field_grid(fields, path, columns=8, title=f"step {config['step']}, DDIM {config['sampling_timesteps']} steps")


def fidelity_check(accelerator, validation, ema_network, formulation, config, row, run_dir):
    """The fidelity check into this step's log row, the trackers (with its samples) and validation.png."""
    try:
        scores, fields = validation(ema_network, formulation)
    except ValueError as error:  # a non-finite sample: neither this step's checkpoint nor its log rows are written
        raise TrainingError(f"step {config['step']}: the fidelity check failed ({error}); the last checkpoint is "
                            "kept") from None
    row.update({name: f"{value:.5f}" for name, value in scores.items()})
    accelerator.log(dict(scores, val_mafd_over_floor=scores["val_mafd"] / scores["val_floor"]), step=config["step"])
    if accelerator.log_with:
        logs = np.log(fields[:16] / fields[:16].mean(axis=(1, 2), keepdims=True))
        images = (logs - logs.min()) / (logs.max() - logs.min())
        accelerator.get_tracker("tensorboard").log_images({"samples": images[:, None]}, config["step"], dataformats="NCHW")
    plots.validation(read_log(run_dir) + [dict(row, step=config["step"], val_mafd=scores["val_mafd"],
                                                val_floor=scores["val_floor"])], run_dir / "validation.png")
    print(f"step {config['step']}: MAFD {100 * scores['val_mafd']:.1f}% against held-out fields "
          f"(floor {100 * scores['val_floor']:.1f}%)")


def steps_in_budget(accelerator, settings, seconds_per_step):
    """The step count that fills --train_minutes at the speed of the first TIMING_STEPS steps (the
    main process's measure, on every process); from then on the run is an ordinary --train_steps run."""
    seconds_per_step = broadcast(accelerator, seconds_per_step)
    steps = max(TIMING_STEPS, int(settings.train_minutes * 60 / seconds_per_step))
    if accelerator.is_main_process:
        print(f"{seconds_per_step:.2f} s per step: {steps} steps fill {settings.train_minutes:g} minutes.")
    return steps


def start_log(path, resumed_step):
    """A log.csv holding only the rows up to the step training starts from (those past a checkpoint are
    redone); returns the wall-clock and CPU training seconds those rows had counted."""
    kept = [row for row in csv.DictReader(path.open()) if int(row["step"]) <= resumed_step] if path.exists() else []
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, LOG_COLUMNS, restval="")
        writer.writeheader()
        writer.writerows(kept)
    return (float(kept[-1]["elapsed_s"]), float(kept[-1].get("cpu_s") or 0)) if kept else (0.0, 0.0)


def append_log(path, rows):
    with path.open("a", newline="") as file:
        csv.DictWriter(file, LOG_COLUMNS).writerows(rows)


def check_replicas_agree(accelerator, network):
    """Data parallelism must leave every process with the same parameters; fail loudly if not."""
    flat = torch.cat([p.detach().double().flatten() for p in network.parameters()])
    weights = torch.arange(len(flat), device=flat.device) % 9973 + 1
    fingerprint = torch.stack([flat.sum(), (flat * weights).sum()])
    gathered = accelerator.gather(fingerprint[None]).cpu()
    if not torch.equal(gathered, gathered[:1].expand_as(gathered)):
        raise RuntimeError(f"parameters differ between the {accelerator.num_processes} processes: {gathered.tolist()}")
    if accelerator.num_processes > 1 and accelerator.is_main_process:
        print(f"Checked: parameters identical on all {accelerator.num_processes} processes.")


def run_training(settings):
    """Trains a run (settings: config.TrainConfig); returns the exit status (0 when done,
    PREEMPTED when a signal stopped it at a checkpoint) and the run folder."""
    device_type = launch_device_type()
    precision, note = mixed_precision(settings.precision, device_type,
                                      settings.precision in ("auto", "bf16") and device_has_bf16_units(device_type))
    if note and os.environ.get("RANK", "0") == "0":
        print(note, file=sys.stderr)
    with accelerated(gradient_accumulation_steps=settings.grad_accum, mixed_precision=precision,
                     **tracker_settings(settings)) as accelerator:
        return train(settings, accelerator)


def check_spike(loss, recent_losses, settings, step):
    """Stop before the update when a loss is --loss_spike times the median of the last steps' (a run
    diverging while its loss is still finite); the same on every process, the loss being all-reduced."""
    if len(recent_losses) < SPIKE_MIN_HISTORY:
        return
    median = float(np.median(recent_losses))
    if not loss <= settings.loss_spike * median:
        raise TrainingError(f"step {step + 1}: the loss jumped to {loss:.4g}, {loss / median:.0f}x the median "
                            f"{median:.4g} of the last {len(recent_losses)} steps; stopped before the update, the last "
                            f"checkpoint is kept (start again with a lower --lr than {settings.lr:g})")


def optimizer_step(accelerator, model, optimizer, formulation, batches, condition, settings, step, recent_losses):
    """One optimizer step over --grad_accum micro-batches; returns their losses. A non-finite gradient
    or a loss spike (check_spike; recent_losses: the last steps' mean losses) stops training before the update."""
    losses = []
    for _ in range(settings.grad_accum):
        with accelerator.accumulate(model):
            fields, cond = (tensor.to(accelerator.device) for tensor in next(batches))
            loss = formulation.loss(model, augment_periodic(fields), dropped(cond, settings) if condition else None,
                                    k_power=settings.loss_k_power)
            check_spike(accelerator.reduce(loss.detach(), reduction="mean").item(), recent_losses, settings, step)
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                gradient_norm = accelerator.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
                if not torch.isfinite(gradient_norm):  # the same on every process: gradients are all-reduced
                    raise TrainingError(f"step {step + 1}: the loss is {loss.item():.4g} and its gradients are not "
                                        "finite; stopped before the update, the last checkpoint is kept (lower "
                                        "--lr or check the data)")
            optimizer.step()
            optimizer.zero_grad()
        losses.append(loss.detach())
    return losses


def setup(settings, accelerator):
    """Everything a run trains with, new or resumed: its folder and arguments, data, condition,
    transform, fidelity check, network, formulation, EMA, optimizer, config and batches."""
    run_dir, settings, resumed = start_or_resume(settings, accelerator)
    if settings.train_minutes is None:
        settings.train_steps = settings.train_steps or 400
    set_seed(settings.seed, device_specific=True)  # each process draws its own noise (batches: shards.StepBatches)
    if settings.batch_size % accelerator.num_processes:
        raise ValueError(f"--batch_size {settings.batch_size} must be divisible by the {accelerator.num_processes} processes")
    with accelerator.main_process_first():
        fieldset = training_fields(settings)
    condition = training_condition(settings, resumed, fieldset)
    if accelerator.is_main_process:
        lock_run(run_dir)
    transform = transform_from_dict(resumed["transform"]) if resumed else TRANSFORMS[settings.transform].fit(
        fitting_sample(fieldset.fields, settings.image_size), settings.data_std)
    validation = validation_set(settings, transform, condition) if accelerator.is_main_process else None
    network, formulation, ema, model, optimizer, config = build_training(settings, accelerator, resumed, fieldset, condition,
                                                                         transform)
    if resumed:
        config["step"] = load_training_state(run_dir, accelerator, ema)["step"]
    batches = training_batches(FieldDataset(fieldset.fields, transform, settings.image_size,
                                            condition.of_fields(fieldset) if condition else None),
                               StepBatches(len(fieldset), settings.batch_size, settings.seed, accelerator.process_index,
                                           accelerator.num_processes, start=config["step"] * settings.grad_accum),
                               settings.num_workers)
    if settings.report_to:
        accelerator.project_configuration.logging_dir = str(run_dir)
        accelerator.init_trackers("tensorboard", config={k: v for k, v in dataclasses.asdict(settings).items() if v is not None})
    return TrainingRun(run_dir=run_dir, settings=settings, condition=condition, validation=validation, network=network,
                       formulation=formulation, ema=ema, model=torch.compile(model) if settings.compile else model,
                       optimizer=optimizer, config=config,
                       batches=batches)


@dataclasses.dataclass
class TrainingRun:
    """Everything a run trains with, new or resumed (setup's result)."""
    run_dir: Path
    settings: object  # config.TrainConfig
    condition: object
    validation: object
    network: torch.nn.Module
    formulation: object
    ema: object
    model: torch.nn.Module  # the prepared network the loss runs through (compiled with --compile; same parameters)
    optimizer: torch.optim.Optimizer
    config: dict
    batches: object


class TrainingLog:
    """log.csv's rows as training goes: the mean loss and speed of each window of steps, and the
    wall-clock and CPU seconds of training alone (a fidelity check's time is left out)."""

    def __init__(self, accelerator, path, start_step):
        self.accelerator, self.path = accelerator, path
        elapsed_before, cpu_before = start_log(path, start_step) if accelerator.is_main_process else (0.0, 0.0)
        self.started, self.cpu_started = time.time() - elapsed_before, time.process_time() - cpu_before
        self.rows, self.losses, self.window_start = [], [], time.time()

    def record(self, step, lr, batch_size):
        """A row for the steps since the last one, ending at `step`; returns its mean loss and images/s."""
        mean_loss = self.accelerator.reduce(torch.stack(self.losses).mean(), reduction="mean").item()
        images_per_s = len(self.losses) * batch_size / (time.time() - self.window_start)
        self.rows.append(dict(step=step, loss=f"{mean_loss:.6f}", lr=f"{lr:.3e}", images_per_s=f"{images_per_s:.2f}",
                              elapsed_s=f"{time.time() - self.started:.1f}",
                              cpu_s=f"{time.process_time() - self.cpu_started:.1f}"))
        self.accelerator.log(dict(loss=mean_loss, lr=lr, images_per_s=images_per_s), step=step)
        self.restart_window()
        return mean_loss, images_per_s

    def restart_window(self):
        self.losses, self.window_start = [], time.time()

    @contextlib.contextmanager
    def paused(self):
        """Time spent inside is not training time."""
        started, cpu_started = time.time(), time.process_time()
        yield
        self.started += time.time() - started
        self.cpu_started += time.process_time() - cpu_started

    def write(self):
        """Append the rows not yet written (main process)."""
        if self.accelerator.is_main_process:
            append_log(self.path, self.rows)
            self.rows = []


def checkpoint(accelerator, run, log, stopping):
    """At a save step: the fidelity check (not when stopping), the log's rows, the checkpoint, and
    the sample grid."""
    config = run.config
    if run.validation and not stopping:
        with log.paused():
            fidelity_check(accelerator, run.validation, run.ema.ema_model, run.formulation, config, log.rows[-1],
                           run.run_dir)
    log.write()  # the log first: a kill between the two must not lose rows
    save_checkpoint(run.run_dir, accelerator, run.ema, config)
    if accelerator.is_main_process and not stopping:
        try:
            sample_grid(run.ema.ema_model, run.formulation, config, run.run_dir / f"samples-{config['step']:07d}.png")
        except ValueError as error:  # a preview, not a check: a diverging loss stops the next step
            print(f"step {config['step']}: no sample grid ({error})", file=sys.stderr)
    log.restart_window()


def train(settings, accelerator):
    """run_training's loop on one process of the accelerator."""
    try:
        run = setup(settings, accelerator)
        return train_loop(accelerator, run), run.run_dir
    finally:
        release_folders()


def train_loop(accelerator, run):
    """Steps from the run's step to --train_steps, logging and checkpointing; returns the exit status."""
    settings, config = run.settings, run.config
    start_step = config["step"]
    log = TrainingLog(accelerator, run.run_dir / "log.csv", start_step)
    progress = tqdm(initial=start_step, total=settings.train_steps, disable=not accelerator.is_main_process,
                    desc=f"training {settings.model}")
    timing_start = time.time()
    recent_losses = collections.deque(maxlen=SPIKE_WINDOW)
    with Preemption() as preemption:
        for step in itertools.count(start_step):
            if settings.train_steps is not None and step >= settings.train_steps:
                break
            for group in run.optimizer.param_groups:
                group["lr"] = learning_rate(step, settings)
            losses = optimizer_step(accelerator, run.model, run.optimizer, run.formulation, run.batches,
                                    run.condition, settings, step, recent_losses)
            recent_losses.append(torch.stack(losses).mean().item())
            log.losses += losses
            run.ema.update()
            progress.update()
            config["step"] = step + 1
            if settings.train_steps is None and config["step"] - start_step == TIMING_STEPS:
                settings.train_steps = steps_in_budget(accelerator, settings, (time.time() - timing_start) / TIMING_STEPS)
                config["train_args"]["train_steps"] = settings.train_steps  # a resumed run ends where this one would
                progress.total = settings.train_steps
            stopping = preemption.requested(accelerator)
            saving = config["step"] % settings.save_every == 0 or config["step"] == settings.train_steps or stopping
            if config["step"] % settings.log_every == 0 or saving:
                mean_loss, images_per_s = log.record(config["step"], learning_rate(step, settings), settings.batch_size)
                progress.set_postfix(loss=f"{mean_loss:.4f}", img_s=f"{images_per_s:.1f}")
            if saving:
                checkpoint(accelerator, run, log, stopping)
            if stopping:
                if accelerator.is_main_process:
                    print(f"{preemption.received}: stopped after step {config['step']} with its checkpoint written; "
                          f"continue with `train.py --resume {run.run_dir}`", file=sys.stderr)
                return PREEMPTED
    check_replicas_agree(accelerator, run.network)
    if accelerator.is_main_process:
        print(f"Run folder: {run.run_dir}")
    return 0
