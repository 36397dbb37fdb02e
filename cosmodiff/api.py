"""The calls a notebook makes: train a run, load it, sample fields, compare two field sets, and compute
a posterior over parameters. Each takes explicit arguments and returns arrays, dicts or paths; the
scripts (train.py, generate_images.py, evaluate/*.py) are these calls behind flags.

    import cosmodiff
    run_dir = cosmodiff.train("train_data/nonlinear", train_steps=400)
    run = cosmodiff.load(run_dir)
    fields = cosmodiff.sample(run, 16)
    report = cosmodiff.evaluate(real, fields, box_size=run.config["box_size"])
"""
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from tqdm import tqdm

from cosmodiff import stats
from cosmodiff.checkpoint import load_run, torch_device
from cosmodiff.condition import DEFAULT_GUIDANCE, Condition
from cosmodiff.config import settings_help, train_config
from cosmodiff.diffusion import DEFAULT_SAMPLER, sampler_steps
from cosmodiff.fields import FieldSet, validate
from cosmodiff.inference.methods import (DEFAULT_GRID, DEFAULT_METHODS, METHODS, matching_fields, posterior_of,
                                         posteriors, prepared)
from cosmodiff.ranges import COUNT, GUIDANCE, INDEX, POSITIVE, checked_numbers
from cosmodiff.repository import DEFAULT_DATA
from cosmodiff.sampling import physical_fields
from cosmodiff.training import PREEMPTED, TrainingError, run_training
from cosmodiff.transforms import transform_from_dict


class Run(NamedTuple):
    """A trained run folder: its EMA network, formulation, config.json, transform and condition (None
    for an unconditional run)."""
    folder: Path
    network: torch.nn.Module
    formulation: object
    config: dict
    transform: object
    condition: Condition


def train(data_path=None, results_dir="results", run_name=None, train_steps=None, **settings):
    """Train a run on any data path cosmodiff.data.open_data reads into results_dir/run_name; returns the
    run folder. data_path is needed for a new run (a resumed one, resume=RUN_DIR, reads its own; train.py's
    default data is the repository's particle-mesh split, cosmodiff.mock makes such fields anywhere).
    settings: the other fields of cosmodiff.TrainConfig by name, e.g. model="dit-xs/4", lr=1e-3,
    condition="Omega_m,sigma_8", checked against their ranges and choices (train.py's flags are the same
    settings). The settings, their defaults and ranges:"""
    if data_path is None and settings.get("resume") is None:
        raise ValueError("cosmodiff.train: give data_path, the fields to train on (train.py's default is "
                         f"{DEFAULT_DATA}; python -m cosmodiff.mock --split nonlinear makes it)")
    given = {} if data_path is None else dict(data_path=str(data_path))
    status, run_dir = run_training(train_config(**given, results_dir=str(results_dir), run_name=run_name,
                                                train_steps=train_steps, **settings))
    if status == PREEMPTED:
        raise TrainingError(f"a signal stopped training at a checkpoint of {run_dir}; continue with "
                            f"cosmodiff.train(resume='{run_dir}')")
    return Path(run_dir)


train.__doc__ += "\n\n" + textwrap.indent(settings_help(), "    ")


def load(run_dir):
    """A run folder as a Run (weights loaded strictly, config checked)."""
    network, formulation, config = load_run(run_dir)
    condition = Condition.from_dict(config["condition"]) if config.get("condition") else None
    return Run(Path(run_dir), network, formulation, config, transform_from_dict(config["transform"]), condition)


def sample(run, num_samples=16, params=None, guidance=None, sampler=DEFAULT_SAMPLER, steps=None, grid=None, seed=42,
           batch_size=16, device=None):
    """num_samples fields (N, H, W) in physical units from a Run (or run folder), in memory. A
    conditional run samples at params, a dict of its parameters ({"Omega_m": 0.3, "sigma_8": 0.8}),
    with classifier-free guidance weight guidance (default DEFAULT_GUIDANCE); an unconditional run takes
    neither. Sample i's noise is seeded from (seed, i), as generate_images.py's; steps and grid default
    to the sampler's."""
    checked_numbers({"num_samples": num_samples, "batch_size": batch_size, "seed": seed},
                    {"num_samples": COUNT, "batch_size": COUNT, "seed": INDEX}, "cosmodiff.sample")
    if guidance is not None:
        checked_numbers({"guidance": guidance}, {"guidance": GUIDANCE}, "cosmodiff.sample")
    if params is not None and not isinstance(params, Mapping):
        raise ValueError(f"cosmodiff.sample: 'params' must be a dict of parameter values such as "
                         f"{{'Omega_m': 0.3, 'sigma_8': 0.8}}, got {type(params).__name__}")
    run = load(run) if not isinstance(run, Run) else run
    points = None
    if run.condition is not None or params is not None or guidance is not None:
        if run.condition is None:
            raise ValueError(f"{run.folder}: this run is unconditional; it takes no params or guidance")
        if params is None:
            raise ValueError(f"{run.folder}: this run is conditioned on {', '.join(run.condition.names)}; give params")
        points = run.condition.points(list(params), np.array([list(params.values())], dtype=float), "params")
        points = np.repeat(points, num_samples, axis=0)
    return sampled(run, num_samples, points, guidance, sampler, steps, grid, seed, batch_size, device)


def sampled(run, num_samples, points, guidance, sampler, steps, grid, seed, batch_size, device):
    """num_samples fields of a loaded Run in batches, field i's noise seeded from (seed, i); points: each
    field's parameters (num_samples, P) in the run's condition order, or None for an unconditional run."""
    device = torch_device(device)
    network = run.network.to(device)
    cond, options = None, {}
    if points is not None:
        cond = run.condition.standardise(points).to(device)
        options["guidance"] = DEFAULT_GUIDANCE if guidance is None else guidance
    steps = sampler_steps(run.formulation, sampler, steps)
    batches = []
    for start in tqdm(range(0, num_samples, batch_size), desc=f"{sampler} {steps} steps", unit="batch"):
        indices = list(range(start, min(start + batch_size, num_samples)))
        batches.append(physical_fields(run.formulation, network, run.transform, run.config["image_size"], indices,
                                       seed, sampler, steps, cond=None if cond is None else cond[indices], grid=grid,
                                       **options))
    return np.concatenate(batches)


def evaluate(real, generated, box_size, train=None, real_sims=None, generated_sims=None):
    """evaluate/power_spectrum.py's report of generated against real fields (N, H, W) of a box_size
    Mpc/h box: the scorecard (every statistic over its floor, and the worst), MAFD next to its floor,
    per-k ratio, pixel PDF, Minkowski functionals, peaks, reduced bispectrum, seams and, with train (the
    training fields), memorisation. real_sims: each real field's simulation (a FieldSet's sim_index),
    so that floors are drawn by simulation; generated_sims likewise when `generated` is a real set too."""
    real, generated = (checked_fields(fields, name) for fields, name in ((real, "real"), (generated, "generated")))
    train = None if train is None else checked_fields(train, "train")
    checked_numbers({"box_size": box_size}, {"box_size": POSITIVE}, "cosmodiff.evaluate")
    return stats.compare(real, generated, box_size, train=train, progress=False, real_sims=real_sims,
                         generated_sims=generated_sims)


def checked_fields(fields, name):
    """fields as a float array (N, H, W), refused in one sentence naming the argument as the scripts
    refuse a file (cosmodiff.fields.validate): another rank, NaN, values below -1."""
    array = np.asarray(fields, dtype=np.float64)
    if array.ndim == 2:
        array = array[None]
    validate(array, [f"the {name} fields (field {index})" for index in range(max(1, len(array)))])
    return array


def posterior(fields, models, methods=DEFAULT_METHODS, indices=None, box_size=None, truths=None, grid=DEFAULT_GRID,
              joint=False, mcmc=0, **settings):
    """Every chosen method's posterior (cosmodiff.inference.methods.METHODS) of fields: a data path
    (open_data; a split folder's test.npz; indices: a list of field positions, default all) or an array
    (N, H, W) of the models' box (box_size Mpc/h, default theirs) with optional truths (N, P). models:
    the kind of model each method needs -> its folder (MODEL_KINDS: {"checkpoint": RUN} for the ELBO,
    "npe" and "npe_power_spectrum" for NPE folders from evaluate/train_npe.py); methods: a list of
    METHODS names. Returns posteriors' list of results, one per field (or one with joint). settings:
    the chosen methods' own (Method.settings, e.g. n_levels, n_draws, seed, batch_size, device), emcee's
    walkers with mcmc, and fine (cubic reading of the grid); an argument no chosen method reads is refused."""
    if not isinstance(models, Mapping):
        raise ValueError("cosmodiff.posterior: models must be a dict of the kind of model -> its folder, e.g. "
                         "{'checkpoint': RUN}")
    if isinstance(methods, str) or not all(isinstance(method, str) for method in methods):
        raise ValueError(f"cosmodiff.posterior: methods must be a list of method names, e.g. ['elbo', "
                         f"'power_spectrum'], got {methods!r}")
    read = {name for method in methods if method in METHODS for name in METHODS[method].settings}
    read |= {"fine", *(["walkers"] if mcmc else [])}
    ignored = sorted(set(settings) - read)
    if ignored:
        raise ValueError(f"cosmodiff.posterior: {', '.join(ignored)} would be ignored: no chosen method "
                         f"({', '.join(methods)}) reads it" + ("" if mcmc else " (walkers needs mcmc)"))
    options = dict(grid=grid, joint=joint, mcmc=mcmc, **settings)
    folders = dict(models)
    if isinstance(fields, (str, Path)):
        if truths is not None:
            raise ValueError(f"cosmodiff.posterior: {fields} carries its own truths; truths goes with an array")
        positions = None if indices is None else ",".join(str(int(index)) for index in indices)
        return posterior_of(fields, folders, list(methods), positions, box_size, **options)[0]
    if indices is not None:
        raise ValueError("cosmodiff.posterior: indices picks fields of a data path; select an array's fields by "
                         "slicing it")
    fields = checked_fields(fields, "posterior's").astype(np.float32)
    names, loaded, space = prepared(list(methods), folders)
    fieldset = matching_fields(FieldSet(fields=fields, sources=["fields"] * len(fields),
                                        box_size=space.box_size if box_size is None else box_size), space, "fields")
    true_values = [None] * len(fields) if truths is None else np.asarray(truths, dtype=float).tolist()
    return posteriors(fieldset.fields, true_values, list(range(len(fields))), space, names, loaded, **options)[0]
