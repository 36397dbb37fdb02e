"""The ELBO posterior's own noise: how far its mean moves from one noise seed to the next, against the
width it claims, at each count of noise levels and draws; and whether the grid resolves it.

    python benchmarks/elbo_variance.py --run RUN --fields train_data/inference-nonlinear/calibration.npz \
        [--n_fields 10 | --indices 19,127] [--seeds 8] [--settings "4:1 8:1 4:4 8:4"] [--grid 13] \
        [--refined_grid 25] [--fine 81] [--studies spread,grid] [--saved_grids OUT/grid_check.npz] \
        [--out benchmarks/out/elbo_variance] [--results benchmarks/results/elbo_variance.json]

Each setting "levels:draws" is the ELBO of cosmodiff.inference.likelihoods.negative_elbo (common random numbers
across the grid) on the first --n_fields fields (or the fields at --indices), once per seed. Per
setting and parameter: the seed spread, the standard deviation over seeds of the posterior mean
divided by the mean posterior sigma (median and largest over the fields), the network evaluations
and seconds per field and seed. The grid check compares the first setting's seed-0 posterior on --grid and --refined_grid points per
parameter: the moves of mean and sigma in units of sigma, for the grids as they are and for both read
by cubic interpolation on --fine points per parameter (cosmodiff.inference.likelihoods.cubic_interpolation). The
noise draws are the same at both grids, so a --grid whose points --refined_grid contains is read off
it. Both grids' log-likelihoods are kept in OUT/grid_check.npz; --saved_grids reads the refined grid
from such a file instead of the network (the setting it was made with first in --settings), so other
readings and coarser grids contained in it are checked for no evaluation. --studies picks the spread
rows, the grid check or both.
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from cosmodiff.checkpoint import load_run, torch_device
from cosmodiff.cli import ArgumentParser, COUNT, INDEX, Number, exit_on
from cosmodiff.condition import Condition
from cosmodiff.data import open_data
from cosmodiff.fields import FieldError
from cosmodiff.inference.methods import selected
from cosmodiff.launch import set_threads
from cosmodiff.inference.likelihoods import (CUBIC_POINTS, cubic_interpolation, elbo_levels, grid_posterior, negative_elbo,
                                 parameter_grid, summaries)
from cosmodiff.repository import ROOT
from cosmodiff.transforms import transform_from_dict

GRID_POINTS = Number(int, 3)


def elbo_grid(model, fields, grid, n_levels, n_draws, seed, batch_size):
    """The ELBO log-likelihood of every field on the grid (F, M), its axes and the seconds it took."""
    network, formulation, condition, _ = model
    axes, points = parameter_grid(condition.low, condition.high, grid)
    started = time.time()
    nll = negative_elbo(formulation, network, fields, condition.standardise(points).to(fields.device), n_levels,
                        n_draws, seed, batch_size, progress=False)
    return axes, -nll, time.time() - started


def saved_grid(path, n_fields):
    """The refined grid a grid check kept (its axes, the first n_fields fields' log-likelihoods), in
    elbo_grid's shape with no seconds spent."""
    with np.load(path) as saved:
        if len(saved["refined_log_likelihood"]) < n_fields:
            raise ValueError(f"{path} holds {len(saved['refined_log_likelihood'])} fields' grids, fewer than "
                             f"--n_fields {n_fields}")
        return list(saved["refined_axes"]), saved["refined_log_likelihood"][:n_fields], 0.0


def sub_lattice(computed, grid):
    """elbo_grid's result on `grid` points per parameter read off a finer grid that contains them: the
    noise is the same at every theta, so the values are those elbo_grid would compute, for no evaluation."""
    axes, log_likes, _ = computed
    step = (len(axes[0]) - 1) // (grid - 1)
    every = (slice(None),) + (slice(None, None, step),) * len(axes)
    kept = log_likes.reshape(len(log_likes), *[len(axis) for axis in axes])[every]
    return [axis[::step] for axis in axes], kept.reshape(len(log_likes), -1), 0.0


def moments(axes, log_likes, names, fine=0):
    """Per field, the posterior mean and sigma of every parameter (F, P) each; with fine, read by cubic
    interpolation on fine points per parameter."""
    read = [cubic_interpolation(log_like, axes, fine) if fine else (axes, log_like) for log_like in log_likes]
    fields = [summaries(grid_posterior(log_like, fit_axes), fit_axes, names) for fit_axes, log_like in read]
    return (np.array([[field[name]["mean"] for name in names] for field in fields]),
            np.array([[field[name]["std"] for name in names] for field in fields]))


def posterior_moments(model, fields, grid, n_levels, n_draws, seed, batch_size):
    """Per field, the ELBO posterior's mean and sigma of every parameter (F, P) each, and the seconds."""
    axes, log_likes, seconds = elbo_grid(model, fields, grid, n_levels, n_draws, seed, batch_size)
    return (*moments(axes, log_likes, model[3]), seconds)


def spread_row(model, fields, args, setting):
    """One setting's seed spread per parameter, its evaluations and seconds per field."""
    n_levels, n_draws = (int(part) for part in setting.split(":"))
    runs = [posterior_moments(model, fields, args.grid, n_levels, n_draws, seed, args.batch_size)
            for seed in range(args.seeds)]
    means = np.stack([run[0] for run in runs])  # (seeds, F, P)
    sigmas = np.stack([run[1] for run in runs])
    ratio = means.std(axis=0, ddof=1) / sigmas.mean(axis=0)  # (F, P)
    levels = len(elbo_levels(model[1], n_levels)[0])
    return dict(setting=setting, n_levels=n_levels, levels_after_snapping=levels, n_draws=n_draws,
                grid=args.grid, evaluations_per_field=args.grid ** 2 * levels * n_draws,
                seconds_per_field=float(np.mean([run[2] for run in runs])) / len(fields),
                spread_over_sigma={name: dict(median=float(np.median(ratio[:, i])), max=float(ratio[:, i].max()))
                                   for i, name in enumerate(model[3])},
                sigma={name: float(sigmas[..., i].mean()) for i, name in enumerate(model[3])})


def grid_check(model, fields, args, setting):
    """The largest move over the fields of the posterior mean and sigma from --grid to --refined_grid, in
    sigmas: the grids as they are, and with --fine both read by cubic interpolation."""
    n_levels, n_draws = (int(part) for part in setting.split(":"))
    readings = {"grid": 0, "cubic_interpolation": args.fine} if args.fine else {"grid": 0}
    refined = (saved_grid(args.saved_grids, len(fields)) if args.saved_grids
               else elbo_grid(model, fields, args.refined_grid, n_levels, n_draws, 0, args.batch_size))
    refined_grid = len(refined[0][0])
    result = dict(setting=setting, grid=args.grid, refined_grid=refined_grid, fine=args.fine)
    coarse = (sub_lattice(refined, args.grid) if (refined_grid - 1) % (args.grid - 1) == 0
              else elbo_grid(model, fields, args.grid, n_levels, n_draws, 0, args.batch_size))
    np.savez(Path(args.out) / "grid_check.npz", names=np.array(model[3]), coarse_axes=np.stack(coarse[0]),
             coarse_log_likelihood=coarse[1], refined_axes=np.stack(refined[0]), refined_log_likelihood=refined[1])
    for reading, fine in readings.items():
        coarse_means, coarse_sigmas = moments(*coarse[:2], model[3], fine)
        fine_means, fine_sigmas = moments(*refined[:2], model[3], fine)
        result[reading] = {name: dict(
            mean_move_over_sigma=float(np.max(np.abs(fine_means - coarse_means)[:, i] / fine_sigmas[:, i])),
            sigma_move_over_sigma=float(np.max(np.abs(fine_sigmas - coarse_sigmas)[:, i] / fine_sigmas[:, i])))
            for i, name in enumerate(model[3])}
    return result


def main(args):
    if args.fine and args.grid < CUBIC_POINTS:
        raise ValueError(f"--fine reads the grids by cubic interpolation, which needs --grid {CUBIC_POINTS} or more "
                         f"(got {args.grid})")
    set_threads(torch.get_num_threads())
    network, formulation, config = load_run(args.run)
    device = torch_device()
    condition = Condition.from_dict(config["condition"])
    model = (network.to(device), formulation, condition, condition.names)
    fieldset = open_data(args.fields, config["image_size"])
    chosen = selected(len(fieldset.fields), args.indices, args.fields) if args.indices else slice(args.n_fields)
    model_space = transform_from_dict(config["transform"]).forward(fieldset.fields[chosen])
    fields = torch.from_numpy(model_space).float()[:, None].to(device)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    settings, studies = args.settings.split(), args.studies.split(",")
    rows = [spread_row(model, fields, args, setting) for setting in settings] if "spread" in studies else []
    report = dict(run=str(args.run), fields=str(args.fields), n_fields=len(fields), indices=args.indices,
                  seeds=args.seeds, device=str(device), saved_grids=args.saved_grids and str(args.saved_grids),
                  rows=rows)
    if "grid" in studies:
        report["grid_check"] = grid_check(model, fields, args, settings[0])
    (Path(args.out) / "elbo_variance.json").write_text(json.dumps(report, indent=1))
    if args.results:
        Path(args.results).write_text(json.dumps(report, indent=1) + "\n")
    print("| levels:draws | evaluations / field | s / field | " + " | ".join(
        f"{name} spread / sigma (median, max)" for name in condition.names) + " |")
    for row in rows:
        print(f"| {row['setting']} | {row['evaluations_per_field']} | {row['seconds_per_field']:.2f} | " + " | ".join(
            f"{row['spread_over_sigma'][name]['median']:.2f}, {row['spread_over_sigma'][name]['max']:.2f}"
            for name in condition.names) + " |")
    print(json.dumps(report.get("grid_check")))


if __name__ == "__main__":
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a conditional run folder")
    parser.add_argument("--fields", default=str(ROOT / "train_data" / "inference-nonlinear" / "calibration.npz"))
    parser.add_argument("--n_fields", type=COUNT, default=10)
    parser.add_argument("--indices", default=None, help="comma-separated field indices, instead of the first --n_fields")
    parser.add_argument("--seeds", type=Number(int, 2), default=8)
    parser.add_argument("--settings", default="4:1 8:1 4:4 8:4", help="levels:draws, space-separated")
    parser.add_argument("--grid", type=GRID_POINTS, default=13)
    parser.add_argument("--refined_grid", type=GRID_POINTS, default=25)
    parser.add_argument("--fine", type=INDEX, default=81, help="points per parameter of the cubic interpolation in "
                        "the grid check (0: the grids only)")
    parser.add_argument("--saved_grids", default=None, help="a grid_check.npz whose refined grid the grid check reads "
                        "instead of the network")
    parser.add_argument("--studies", default="spread,grid", choices=["spread,grid", "spread", "grid"])
    parser.add_argument("--batch_size", type=COUNT, default=256)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "elbo_variance"))
    parser.add_argument("--results", default=None, help="also write the report here, e.g. "
                        "benchmarks/results/elbo_variance.json")
    exit_on((FieldError, ValueError), main, parser.parse_args())
