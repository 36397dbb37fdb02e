"""Sampling a run folder into fields in physical units: what generate_images.py does, in the package
so that other scripts (evaluate/cosmology.py) sample in-process. Sample i's noise is seeded from
(seed, i); processes take turns at the batches and write each to OUT/parts as it is done; an
interrupted call with the same settings keeps those; the main process merges them into samples.npy
and writes samples.json (settings, timing, box size, every sample's parameters)."""
import contextlib
import json
import shutil
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cosmodiff import plots
from cosmodiff.atomic import atomic_path, atomic_write_text, writable_folder
from cosmodiff.checkpoint import load_run, output_lock
from cosmodiff.condition import DEFAULT_GUIDANCE, Condition, parse_params, read_params_table
from cosmodiff.diffusion import DEFAULT_SAMPLER, SAMPLERS, network_evaluations, sample, sampler_steps
from cosmodiff.fields import render_colormap
from cosmodiff.transforms import transform_from_dict


def physical_fields(formulation, network, transform, size, indices, seed, sampler, steps, **options):
    """Fields (N, size, size) in physical units: sample i of `indices` solved from noise seeded with
    (seed, i) by the sampler (options: cond, grid, churn, guidance) and inverted by the run's
    transform. Every caller that turns a network into fields goes through here."""
    model_space = sample(formulation, network, (1, size, size), indices, seed, transform.x0_range, sampler, steps,
                         **options)
    fields = transform.inverse(model_space[:, 0].float().cpu().numpy())
    if not np.isfinite(fields).all():  # checked where they are made, in the units they are written in
        raise ValueError("a sampled field is not finite in physical units; nothing was written")
    return fields


def write_previews(fields, out, colormap, count=16):
    """The first fields as colormapped PNGs (log density scaled to [0, 1] over the set) and one grid."""
    from PIL import Image

    logs = np.log(np.maximum(fields[:count], 1e-3 * fields.mean()) / fields.mean())
    low, high = np.percentile(logs, [0.5, 99.5])
    for i, field in enumerate(logs):
        Image.fromarray(render_colormap((field - low) / (high - low), colormap)).save(out / f"sample_{i:04d}.png")
    plots.field_grid(fields[:count], out / "samples_grid.png", cmap=colormap)


def sample_fields(run_dir, out, accelerator, num_samples=20, params=None, params_file=None, guidance=None,
                  unconditional=False, seed=42, sampler=DEFAULT_SAMPLER, steps=None, grid=None, churn=0.0, batch_size=16,
                  colormap="gnuplot"):
    """Sample a run folder into the folder out: samples.npy (N, H, W) in physical units, PNG previews
    (colormap) and samples.json. A conditional run samples num_samples fields at each point of params
    ("Omega_m=0.3,sigma_8=0.8") or of the table params_file, with classifier-free guidance weight
    guidance (default DEFAULT_GUIDANCE), or its unconditional fields with unconditional=True. steps
    (default: the sampler's), grid (default: the sampler's) and churn set the solve; generate_images.py's
    flags of the same names say more."""
    network, formulation, config = load_run(run_dir)
    network.to(accelerator.device)
    steps = sampler_steps(formulation, sampler, steps)
    transform = transform_from_dict(config["transform"])
    condition, points = parameter_points(config, params, params_file, guidance, unconditional)
    guidance = (DEFAULT_GUIDANCE if guidance is None else guidance) if condition else 1.0
    total = num_samples * (len(points) if condition else 1)
    out = Path(out)
    writable_folder(out, "--out")
    settings = dict(checkpoint=str(run_dir), step=config["step"], seed=seed, sampler=sampler, steps=steps,
                    grid=grid or SAMPLERS[sampler].grid, churn=churn, guidance=guidance,
                    num_samples=total, batch_size=batch_size)
    conds = None
    if unconditional:
        settings.update(unconditional=True)
    if condition:
        settings.update(param_names=condition.names, points=points.tolist())
        conds = condition.standardise(points).repeat_interleave(num_samples, dim=0).to(accelerator.device)
    solve = dict(seed=seed, sampler=sampler, steps=steps, grid=grid, churn=churn, guidance=guidance)
    with output_lock(out, "sampling") if accelerator.is_main_process else contextlib.nullcontext():
        parts = start_parts(out / "parts", settings, accelerator)
        try:
            seconds = sample_batches(accelerator, network, formulation, transform, config["image_size"], parts,
                                     total, batch_size, conds, solve)
        except ValueError:  # a non-finite sample: nothing of this call stays behind (output_lock: the folder it made)
            if accelerator.is_main_process:
                shutil.rmtree(parts, ignore_errors=True)
            raise
        if accelerator.is_main_process:
            write_samples(out, parts, settings, config, seconds, accelerator, colormap)


def sample_batches(accelerator, network, formulation, transform, size, parts, total, batch_size, conds, solve):
    """This process's share of the batches, each written to parts as it is done; returns the seconds.
    solve: physical_fields' seed, sampler, steps and options."""
    started = time.time()
    starts = list(range(0, total, batch_size))[accelerator.process_index::accelerator.num_processes]
    with tqdm(total=total, desc=f"{solve['sampler']} {solve['steps']} steps", unit="sample",
              disable=not accelerator.is_main_process) as progress:
        for start in starts:
            batch = list(range(start, min(start + batch_size, total)))
            part = parts / f"{start:09d}.npy"
            if not part.exists():  # an interrupted run's finished batches are kept
                with accelerator.autocast():
                    fields = physical_fields(formulation, network, transform, size, batch,
                                             cond=None if conds is None else conds[batch], **solve)
                with atomic_path(part) as temporary:
                    np.save(temporary, fields)
            progress.update(len(batch) * accelerator.num_processes)
    accelerator.wait_for_everyone()
    return time.time() - started


def parameter_points(config, params=None, params_file=None, guidance=None, unconditional=False):
    """A conditional run's Condition and its parameter points (R, P) from params or params_file;
    (None, None) for an unconditional run, which takes neither."""
    given = params or params_file
    if config.get("condition") is None:
        if given or guidance is not None or unconditional:
            raise ValueError("this run is unconditional; it takes no --params, --params_file, --guidance or "
                             "--unconditional")
        return None, None
    condition = Condition.from_dict(config["condition"])
    if unconditional:
        if given or guidance is not None:
            raise ValueError("--unconditional samples without parameters; it takes no --params, --params_file "
                             "or --guidance")
        return None, None
    if not given:
        raise ValueError(f"this run is conditioned on {', '.join(condition.names)}: give --params "
                         f"{','.join(f'{name}=VALUE' for name in condition.names)} or --params_file")
    if params and params_file:
        raise ValueError("give --params or --params_file, not both")
    names, values = parse_params(params) if params else read_params_table(params_file)
    return condition, condition.points(names, values, "--params" if params else params_file)


def samples_match(folder, wanted):
    """Whether folder already holds samples.npy from the settings in wanted (every key equal in its
    samples.json): the one rule by which a script reuses samples instead of sampling again."""
    folder = Path(folder)
    if not ((folder / "samples.npy").exists() and (folder / "samples.json").exists()):
        return False
    recorded = json.loads((folder / "samples.json").read_text())
    return all(recorded.get(key) == value for key, value in wanted.items())


def start_parts(parts, settings, accelerator):
    """The folder of finished batches, one .npy each: kept from an interrupted run with the same
    settings, emptied otherwise."""
    if accelerator.is_main_process:
        record = parts / "settings.json"
        if not record.exists() or json.loads(record.read_text()) != settings:
            shutil.rmtree(parts, ignore_errors=True)
            parts.mkdir(parents=True)
            record.write_text(json.dumps(settings))
    accelerator.wait_for_everyone()
    return parts


def write_samples(out, parts, settings, config, seconds, accelerator, colormap):
    """samples.npy merged from the batches one at a time into a memory-mapped file (memory is one
    batch, whatever the number of samples), previews, samples.json; then the batches go."""
    size = config["image_size"]
    total = settings["num_samples"]
    with atomic_path(out / "samples.npy") as temporary:
        merged = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.float32, shape=(total, size, size))
        for start in range(0, total, settings["batch_size"]):
            batch = np.load(parts / f"{start:09d}.npy")
            merged[start:start + len(batch)] = batch
        merged.flush()
        del merged
    fields = np.load(out / "samples.npy", mmap_mode="r")
    write_previews(np.array(fields[:16]), out, colormap)
    record = dict(settings, model=config["model"]["name"], formulation=config["diffusion"].get("formulation", "vp"),
                  network_evaluations=network_evaluations(settings["sampler"], settings["steps"], settings["guidance"]),
                  num_processes=accelerator.num_processes, seconds=seconds,
                  seconds_per_sample=seconds / total, box_size=config["box_size"],
                  device=str(accelerator.device), mixed_precision=accelerator.mixed_precision)
    if "points" in settings:  # every sample's parameters, in the order of samples.npy
        per_point = total // len(settings["points"])
        record["params"] = [point for point in settings["points"] for _ in range(per_point)]
    atomic_write_text(out / "samples.json", json.dumps(record, indent=1))
    shutil.rmtree(parts)
    print(f"{total} fields of {size}x{size} in {seconds:.1f} s "
          f"({record['seconds_per_sample']:.3f} s/sample) -> {out / 'samples.npy'}")
