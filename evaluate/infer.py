"""The posterior on a conditional run's parameters (e.g. Omega_m, sigma_8) of one field or several,
from the model's likelihood (its ELBO) and, for comparison, from the power spectrum alone.

    python evaluate/infer.py FIELDS --checkpoint RUN [--indices 0,1,2] [--grid 21] [--joint]
                             [--n_levels 8] [--n_draws 1] [--mcmc STEPS] [--out evaluation/inference]

FIELDS is any field set load_fields reads (fields larger than the run's are block-averaged). The
posterior is evaluated on a grid over the run's training range of every parameter (a flat prior
there), for each field, or for the selected fields taken together with --joint. The model's ELBO
uses common random numbers: the same --n_levels noise levels and --n_draws noise draws at every grid
point (cosmodiff/inference.py). With --mcmc STEPS, both methods' posteriors come from emcee chains of
that many steps (--walkers walkers started from the grid posterior), at any resolution; the figure
bins them on the grid. The power-spectrum baseline is a Gaussian likelihood of ln P(k) whose
mean is a quadratic in the parameters fitted over the run's training simulations (--train, default
the run's training data) and whose covariance comes from them. Writes posterior.json (per field and
method: mean, std, 68% and 95% intervals, the true value where FIELDS carries it, seconds) and
posterior.png (contours of both methods).
"""
import argparse
import time
from pathlib import Path

import numpy as np
import torch

from cosmodiff.checkpoint import CheckpointError, load_run
from cosmodiff.cli import ArgumentParser, COUNT, INDEX, Number, exit_on, finite_json, writable_folder
from cosmodiff.condition import Condition, parameter_values
from cosmodiff.fields import FieldError, fit_image_size, load_fields
from cosmodiff.inference import (PowerSpectrumLikelihood, grid_draws, grid_posterior, mcmc_samples,
                                 negative_elbo, parameter_grid, sample_histogram, sample_summaries, summaries)
from cosmodiff.transforms import LogTransform

ROOT = Path(__file__).resolve().parents[1]
GRID_POINTS = Number(int, 3)  # a grid posterior needs a point between the prior's edges
WALKERS = Number(int, 4)  # emcee: at least twice the two parameters


def selected(fieldset, indices, source):
    chosen = list(range(len(fieldset))) if indices is None else [int(i) for i in indices.split(",")]
    outside = [i for i in chosen if not 0 <= i < len(fieldset)]
    if outside:
        raise FieldError(f"{source}: has {len(fieldset)} fields; index {outside[0]} does not exist")
    return chosen


def truths(fieldset, chosen, names):
    if any(name not in fieldset.param_names for name in names):
        return [None] * len(chosen)
    return parameter_values(fieldset, names, "")[chosen].tolist()


def training_set(args, config):
    path = Path(args.train or config["data"]["path"])
    if (path / "train.npz").exists():
        path = path / "train.npz"
    return fit_image_size(load_fields(path), config["image_size"])


def plot(results, names, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = results[:4]
    figure, axes = plt.subplots(1, len(shown), figsize=(4 * len(shown), 3.8), squeeze=False)
    for ax, result in zip(axes[0], shown):
        for method, colour in (("elbo", "C3"), ("power_spectrum", "C0")):
            posterior = np.asarray(result[method]["posterior"])
            if posterior.ndim == 2:
                levels = np.sort(posterior.ravel())[::-1]
                mass = np.cumsum(levels)
                contour_levels = sorted({levels[min(np.searchsorted(mass, q), len(levels) - 1)] for q in (0.95, 0.68)})
                ax.contour(result["axes"][1], result["axes"][0], posterior, levels=contour_levels, colors=colour)
            else:
                ax.plot(result["axes"][0], posterior, color=colour)
            ax.plot([], [], color=colour, label={"elbo": "diffusion ELBO", "power_spectrum": "P(k) only"}[method])
        if result["truth"] is not None and len(names) == 2:
            ax.plot(result["truth"][1], result["truth"][0], "k*", ms=10, label="truth")
        ax.set(xlabel=names[-1], ylabel=names[0] if len(names) == 2 else "posterior",
               title=result["label"] + " (68%, 95%)")
        ax.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(args):
    writable_folder(args.out, "--out")
    network, formulation, config = load_run(args.checkpoint)
    if config.get("condition") is None:
        raise CheckpointError(f"{args.checkpoint}: an unconditional run has no parameters to infer; train one "
                              "with --condition")
    condition = Condition.from_dict(config["condition"])
    names = condition.names
    fieldset = fit_image_size(load_fields(args.fields), config["image_size"])
    chosen = selected(fieldset, args.indices, args.fields)
    true_values = truths(fieldset, chosen, names)
    transform = LogTransform.from_dict(config["transform"])
    model_space = torch.from_numpy(transform.forward(fieldset.fields[chosen])).float()[:, None]
    axes, points = parameter_grid(condition.low, condition.high, args.grid)

    torch.manual_seed(args.seed)
    started = time.time()
    nll = negative_elbo(formulation, network, model_space, condition.standardise(points), args.n_levels, args.n_draws,
                        args.seed, args.batch_size)
    elbo_seconds = (time.time() - started) / len(chosen)
    started = time.time()
    train = training_set(args, config)
    baseline = PowerSpectrumLikelihood(train.fields, parameter_values(train, names, train.sources[0]), config["box_size"])
    log_pk = baseline.log_spectra(fieldset.fields[chosen])
    power_log_like = baseline.log_likelihood_of_spectra(log_pk, points)
    power_seconds = (time.time() - started) / len(chosen)

    groups = [(f"fields {','.join(map(str, chosen))} jointly", list(range(len(chosen))))] if args.joint else [
        (f"field {index}", [position]) for position, index in enumerate(chosen)]
    results = []
    for label, positions in groups:
        shared_truth = len({tuple(true_values[p] or ()) for p in positions}) == 1
        truth = true_values[positions[0]] if shared_truth else None
        result = dict(label=label, indices=[chosen[p] for p in positions], truth=truth,
                      axes=[axis.tolist() for axis in axes])
        likelihoods = dict(
            elbo=lambda pts: -negative_elbo(formulation, network, model_space[positions], condition.standardise(pts),
                                            args.n_levels, args.n_draws, args.seed, args.batch_size, progress=False).sum(0),
            power_spectrum=lambda pts: baseline.log_likelihood_of_spectra(log_pk[positions], pts).sum(0))
        for method, log_like, seconds in (("elbo", -nll[positions].sum(axis=0), elbo_seconds),
                                          ("power_spectrum", power_log_like[positions].sum(axis=0), power_seconds)):
            posterior = grid_posterior(log_like, axes)
            result[method] = dict(summaries(posterior, axes, names, truth), posterior=posterior.tolist(),
                                  seconds_per_field=seconds)
            if args.mcmc:
                started = time.time()
                samples, acceptance = mcmc_samples(likelihoods[method], condition.low, condition.high,
                                                   grid_draws(posterior, axes, args.walkers, args.seed), args.mcmc,
                                                   args.seed)
                result[method] = dict(sample_summaries(samples, axes, names, truth),
                                      posterior=sample_histogram(samples, axes).tolist(), samples=samples.tolist(),
                                      acceptance=acceptance, grid_seconds_per_field=seconds,
                                      seconds_per_field=seconds + (time.time() - started) / len(positions))
        results.append(result)
        print_result(label, result, names, truth)
    write_posterior(args, condition, results)
    print(f"ELBO {elbo_seconds:.1f} s per field, power spectrum {power_seconds:.2f} s per field; "
          f"written: {Path(args.out) / 'posterior.json'}, {Path(args.out) / 'posterior.png'}")


def print_result(label, result, names, truth):
    print(f"{label}:" + "".join(
        f"\n  {method:>14}: " + ", ".join(
            f"{name} {result[method][name]['mean']:.4f} +- {result[method][name]['std']:.4f}"
            + (f" (true {truth[i]:.4f})" if truth else "") for i, name in enumerate(names))
        for method in ("elbo", "power_spectrum")))


def write_posterior(args, condition, results):
    """posterior.json (settings and every result, refused if not finite) and posterior.png in --out."""
    out, names = Path(args.out), condition.names
    settings = dict(checkpoint=str(args.checkpoint), fields=str(args.fields), grid=args.grid, n_levels=args.n_levels,
                    n_draws=args.n_draws, mcmc=args.mcmc, walkers=args.walkers, seed=args.seed, joint=args.joint, names=names,
                    prior={name: [low, high] for name, low, high in zip(names, condition.low, condition.high)})
    text = finite_json(dict(settings=settings, results=results), f"the posterior of {args.fields}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "posterior.json").write_text(text)
    plot(results, names, out / "posterior.png")


def build_parser():
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("fields", help="field set (any format load_fields reads)")
    parser.add_argument("--checkpoint", required=True, help="a conditional run folder")
    parser.add_argument("--indices", default=None, help="comma-separated field indices (default: all)")
    parser.add_argument("--grid", type=GRID_POINTS, default=21, help="grid points per parameter")
    parser.add_argument("--joint", action="store_true", help="one posterior for the selected fields together")
    parser.add_argument("--n_levels", type=COUNT, default=8, help="ELBO noise levels")
    parser.add_argument("--n_draws", type=COUNT, default=1, help="ELBO noise draws per level")
    parser.add_argument("--mcmc", type=INDEX, default=0, help="emcee steps after the grid (0: the grid's posterior)")
    parser.add_argument("--walkers", type=WALKERS, default=16, help="emcee walkers (with --mcmc)")
    parser.add_argument("--seed", type=INDEX, default=0)
    parser.add_argument("--batch_size", type=COUNT, default=64)
    parser.add_argument("--train", default=None, help="training fields for the P(k) baseline (default: the run's)")
    parser.add_argument("--out", default="evaluation/inference")
    return parser


if __name__ == "__main__":
    exit_on((CheckpointError, FieldError, ValueError), main, build_parser().parse_args())
