"""Emulated field sets: a conditional run's fields at chosen cosmologies, in place of simulations, for
what learns from simulated fields (the NPE of evaluate/train_npe.py --emulator). A new cosmology costs
only sampling time, so an emulated set can spread its fields over more cosmologies than were simulated."""
import numpy as np

from cosmodiff.api import Run, load, sampled
from cosmodiff.ranges import COUNT, INDEX, checked_numbers
from cosmodiff.diffusion import DEFAULT_SAMPLER
from cosmodiff.fields import FieldSet


def latin_hypercube(n_points, low, high, seed):
    """n_points (n_points, P) on a seeded Latin hypercube over the box [low, high] (scipy's): each
    parameter's range cut into n_points strata, one point in each."""
    from scipy.stats import qmc

    low, high = np.asarray(low, np.float64), np.asarray(high, np.float64)
    unit = qmc.LatinHypercube(d=len(low), rng=np.random.default_rng(seed)).random(n_points)
    return low + unit * (high - low)


def emulated_set(run, points, fields_per_point, guidance=None, sampler=DEFAULT_SAMPLER, steps=None, seed=0,
                 batch_size=16, device=None):
    """fields_per_point fields of a conditional Run (or run folder) at each parameter point (M, P; the
    run's condition order), as a FieldSet carrying the points as params and each point's index as its
    sim_index (fields of one point belong together in splits). Every field has its own noise."""
    checked_numbers({"fields_per_point": fields_per_point, "batch_size": batch_size, "seed": seed},
                    {"fields_per_point": COUNT, "batch_size": COUNT, "seed": INDEX}, "cosmodiff.emulate")
    run = load(run) if not isinstance(run, Run) else run
    if run.condition is None:
        raise ValueError(f"{run.folder}: this run is unconditional; an emulator is a run trained with --condition")
    points = np.asarray(points, np.float64)
    if points.ndim != 2 or points.shape[1] != len(run.condition.names) or not len(points):
        raise ValueError(f"cosmodiff.emulate: points must be (M, {len(run.condition.names)}) values of "
                         f"{', '.join(run.condition.names)}, got shape {points.shape}")
    params = np.repeat(run.condition.points(run.condition.names, points, "cosmodiff.emulate"), fields_per_point, axis=0)
    fields = sampled(run, len(params), params, guidance, sampler, steps, None, seed, batch_size, device)
    return FieldSet(fields=fields.astype(np.float32), box_size=float(run.config["box_size"]), params=params,
                    param_names=list(run.condition.names), sources=[f"emulated by {run.folder}"] * len(params),
                    sim_index=np.repeat(np.arange(len(points)), fields_per_point))
