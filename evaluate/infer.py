"""The posterior on a conditional run's parameters (e.g. Omega_m, sigma_8) of one field or several,
from the diffusion model's likelihood (its ELBO), from the power spectrum alone, or from a neural
posterior estimate on the field (NPE).

    python evaluate/infer.py FIELDS --checkpoint RUN [--npe NPE_RUN] [--method elbo,power_spectrum,npe]
                             [--indices 0,1,2] [--grid 21] [--joint] [--n_levels 8] [--n_draws 1]
                             [--mcmc STEPS] [--out evaluation/inference]

FIELDS is any field set load_fields reads (fields larger than the run's are block-averaged). The
posterior is evaluated on a grid over the run's training range of every parameter (a flat prior
there), for each field, or for the selected fields taken together with --joint. The runs given fix
the parameters and the prior: --checkpoint (a conditional diffusion run, needed by elbo) or --npe
(a folder from evaluate/train_npe.py, needed by npe). The model's ELBO uses common random numbers:
the same --n_levels noise levels and --n_draws noise draws at every grid point
(cosmodiff/inference.py). The power-spectrum baseline is a Gaussian likelihood of ln P(k) whose mean
is a quadratic in the parameters fitted over the run's training simulations (--train, default the
run's training data) and whose covariance comes from them. NPE's density q(theta | field) is read on
the same grid (cosmodiff/npe.py). With --mcmc STEPS, every method's posterior comes from emcee chains
of that many steps (--walkers walkers started from the grid posterior), at any resolution; the figure
bins them on the grid. Writes posterior.json (per field and method: mean, std, 68% and 95% intervals,
the grid posterior and log-likelihood, the true value where FIELDS carries it, seconds) and
posterior.png (every method's contours).
"""
import argparse
import time
from functools import partial
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from cosmodiff.checkpoint import CheckpointError, load_run, output_lock
from cosmodiff.cli import ArgumentParser, COUNT, INDEX, POSITIVE, Number, exit_on, finite_json, writable_folder
from cosmodiff.condition import Condition, parameter_values
from cosmodiff.fields import FieldError, fit_image_size, load_fields
from cosmodiff.inference import (PowerSpectrumLikelihood, elbo_levels, grid_draws, grid_posterior, mcmc_samples,
                                 negative_elbo, parameter_grid, sample_histogram, sample_summaries, summaries)
from cosmodiff.npe import grid_log_posterior, load_npe
from cosmodiff.transforms import transform_from_dict

ROOT = Path(__file__).resolve().parents[1]
GRID_POINTS = Number(int, 3)  # a grid posterior needs a point between the prior's edges
WALKERS = Number(int, 4)  # emcee: at least twice the two parameters


def matching_fields(fieldset, space, source):
    """The fields at the model's side, refused when their box is not the runs' (each pixel would then
    span another length than the model was trained on)."""
    if fieldset.box_size != space.box_size:
        recorded = "is not recorded, so it is taken as" if fieldset.box_size_assumed else "is"
        raise FieldError(f"{source}: its box size {recorded} {fieldset.box_size:g} Mpc/h but the run was trained on "
                         f"a {space.box_size:g} Mpc/h box; pass --box_size if the fields are of that box")
    return fit_image_size(fieldset, space.image_size)


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


class Space(NamedTuple):
    """What the runs given fix: the parameters' names and flat prior, the model's field size and box,
    and the training data the power-spectrum baseline is fitted on."""
    names: list
    low: list
    high: list
    image_size: int
    box_size: float
    train_path: str


class Likelihood(NamedTuple):
    """A method's log-likelihood at every grid point for every selected field (N, M), its seconds per
    field, and of_points(positions, points) -> the summed log-likelihood of those fields at any points
    (for emcee); the ELBO's also each noise level's term of the grid, (N, L, M), and the levels (L,)."""
    grid: np.ndarray
    seconds_per_field: float
    of_points: callable
    per_level: np.ndarray = None
    sigmas: list = None


def parameter_space(args, diffusion_config, npe_config):
    """The Space of the diffusion run if given, else of the NPE folder; both must share parameters."""
    if diffusion_config is not None:
        condition = Condition.from_dict(diffusion_config["condition"])
        space = Space(condition.names, condition.low, condition.high, diffusion_config["image_size"],
                      diffusion_config["box_size"], diffusion_config["data"]["path"])
    else:
        space = Space(npe_config["names"], npe_config["low"], npe_config["high"], npe_config["image_size"],
                      npe_config["box_size"], npe_config["data_path"])
    if npe_config is not None and npe_config["names"] != space.names:
        raise CheckpointError(f"{args.npe}: infers {','.join(npe_config['names'])} but {args.checkpoint} is "
                              f"conditioned on {','.join(space.names)}")
    return Space(*space[:5], args.train or space.train_path)


def elbo_likelihood(args, space, fields, points, models):
    network, formulation, config = models["elbo"]
    transform = transform_from_dict(config["transform"])
    model_space = torch.from_numpy(transform.forward(fields)).float()[:, None]
    condition = Condition.from_dict(config["condition"])
    torch.manual_seed(args.seed)

    def of_points(positions, pts, progress=False, per_level=False):
        return -negative_elbo(formulation, network, model_space[positions], condition.standardise(pts), args.n_levels,
                              args.n_draws, args.seed, args.batch_size, progress=progress, per_level=per_level)
    started = time.time()
    per_level = of_points(slice(None), points, progress=True, per_level=True)
    return Likelihood(per_level.sum(axis=1), (time.time() - started) / len(fields),
                      lambda positions, pts: of_points(positions, pts).sum(0), per_level,
                      elbo_levels(formulation, args.n_levels)[0].tolist())


def power_spectrum_likelihood(args, space, fields, points, models):
    started = time.time()
    path = Path(space.train_path)
    train = fit_image_size(load_fields(path / "train.npz" if (path / "train.npz").exists() else path), space.image_size)
    baseline = PowerSpectrumLikelihood(train.fields, parameter_values(train, space.names, train.sources[0]), space.box_size)
    log_pk = baseline.log_spectra(fields)
    grid = baseline.log_likelihood_of_spectra(log_pk, points)
    return Likelihood(grid, (time.time() - started) / len(fields),
                      lambda positions, pts: baseline.log_likelihood_of_spectra(log_pk[positions], pts).sum(0))


def npe_likelihood(args, space, fields, points, models):
    """NPE's posterior density under the flat prior, which is the likelihood up to a constant per field
    (so fields combine by summing, as the other methods' do)."""
    posterior, _ = models["npe"]
    started = time.time()
    grid = grid_log_posterior(posterior, fields, points)
    return Likelihood(grid, (time.time() - started) / len(fields),
                      lambda positions, pts: grid_log_posterior(posterior, fields[positions], pts).sum(0))


# method -> (its label in figures and tables, what computes its likelihood)
METHODS = {"elbo": ("diffusion ELBO", elbo_likelihood), "power_spectrum": ("P(k) only", power_spectrum_likelihood),
           "npe": ("NPE (CNN summary)", npe_likelihood)}
METHOD_COLOURS = {"elbo": "C3", "power_spectrum": "C0", "npe": "C2"}


def plot(results, names, methods, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = results[:4]
    figure, axes = plt.subplots(1, len(shown), figsize=(4 * len(shown), 3.8), squeeze=False)
    for ax, result in zip(axes[0], shown):
        for method in methods:
            colour = METHOD_COLOURS[method]
            posterior = np.asarray(result[method]["posterior"])
            grid_axes = result[method].get("axes", result["axes"])  # a benchmark may merge grids of several runs
            if posterior.ndim == 2:
                levels = np.sort(posterior.ravel())[::-1]
                mass = np.cumsum(levels)
                contour_levels = sorted({levels[min(np.searchsorted(mass, q), len(levels) - 1)] for q in (0.95, 0.68)})
                ax.contour(grid_axes[1], grid_axes[0], posterior, levels=contour_levels, colors=colour)
            else:
                ax.plot(grid_axes[0], posterior, color=colour)
            ax.plot([], [], color=colour, label=METHODS[method][0])
        if result["truth"] is not None and len(names) == 2:
            ax.plot(result["truth"][1], result["truth"][0], "k*", ms=10, label="truth")
        ax.set(xlabel=names[-1], ylabel=names[0] if len(names) == 2 else "posterior",
               title=result["label"] + " (68%, 95%)")
        ax.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def chosen_methods(args):
    methods = [name for name in args.method.split(",") if name]
    unknown = [name for name in methods if name not in METHODS]
    if unknown or not methods:
        raise ValueError(f"--method {args.method}: choose from {', '.join(METHODS)} (comma-separated)")
    if "elbo" in methods and args.checkpoint is None:
        raise ValueError("--method elbo needs --checkpoint, a conditional diffusion run")
    if "npe" in methods and args.npe is None:
        raise ValueError("--method npe needs --npe, a folder made by evaluate/train_npe.py")
    if args.checkpoint is None and args.npe is None:
        raise ValueError("give --checkpoint (a conditional diffusion run) or --npe (an NPE folder): they fix the "
                         "parameters and their prior")
    return methods


def load_models(args):
    models = {}
    if args.checkpoint is not None:
        models["elbo"] = load_run(args.checkpoint)
        if models["elbo"][2].get("condition") is None:
            raise CheckpointError(f"{args.checkpoint}: an unconditional run has no parameters to infer; train one "
                                  "with --condition")
    if args.npe is not None:
        models["npe"] = load_npe(args.npe)
    return models


def main(args):
    writable_folder(args.out, "--out")
    with output_lock(args.out, "inference"):
        infer(args)


def infer(args):
    """Every chosen method's posterior of the selected fields, printed and written to --out."""
    methods = chosen_methods(args)
    models = load_models(args)
    space = parameter_space(args, models["elbo"][2] if "elbo" in models else None,
                            models["npe"][1] if "npe" in models else None)
    names = space.names
    fieldset = matching_fields(load_fields(args.fields, box_size=args.box_size), space, args.fields)
    chosen = selected(fieldset, args.indices, args.fields)
    true_values = truths(fieldset, chosen, names)
    fields = fieldset.fields[chosen]
    axes, points = parameter_grid(space.low, space.high, args.grid)
    likelihoods = {method: METHODS[method][1](args, space, fields, points, models) for method in methods}

    groups = [(f"fields {','.join(map(str, chosen))} jointly", list(range(len(chosen))))] if args.joint else [
        (f"field {index}", [position]) for position, index in enumerate(chosen)]
    results = []
    for label, positions in groups:
        shared_truth = len({tuple(true_values[p] or ()) for p in positions}) == 1
        truth = true_values[positions[0]] if shared_truth else None
        result = dict(label=label, indices=[chosen[p] for p in positions], truth=truth,
                      axes=[axis.tolist() for axis in axes])
        for method, likelihood in likelihoods.items():
            log_likelihood = likelihood.grid[positions].sum(axis=0)
            posterior = grid_posterior(log_likelihood, axes)
            result[method] = dict(summaries(posterior, axes, names, truth), posterior=posterior.tolist(),
                                  log_likelihood=log_likelihood.reshape(posterior.shape).tolist(),
                                  seconds_per_field=likelihood.seconds_per_field)
            if args.mcmc:
                started = time.time()
                samples, acceptance = mcmc_samples(partial(likelihood.of_points, positions), space.low, space.high,
                                                   grid_draws(posterior, axes, args.walkers, args.seed), args.mcmc,
                                                   args.seed)
                result[method] = dict(sample_summaries(samples, axes, names, truth),
                                      posterior=sample_histogram(samples, axes).tolist(), samples=samples.tolist(),
                                      acceptance=acceptance, grid_seconds_per_field=likelihood.seconds_per_field,
                                      seconds_per_field=likelihood.seconds_per_field + (time.time() - started) / len(positions))
        results.append(result)
        print_result(label, result, names, truth, methods)
    write_posterior(args, space, methods, results, likelihoods)
    print(", ".join(f"{METHODS[m][0]} {likelihood.seconds_per_field:.2f} s per field" for m, likelihood in likelihoods.items())
          + f"; written: {Path(args.out) / 'posterior.json'}, {Path(args.out) / 'posterior.png'}")


def print_result(label, result, names, truth, methods):
    print(f"{label}:" + "".join(
        f"\n  {method:>14}: " + ", ".join(
            f"{name} {result[method][name]['mean']:.4f} +- {result[method][name]['std']:.4f}"
            + (f" (true {truth[i]:.4f})" if truth else "") for i, name in enumerate(names))
        for method in methods))


def write_posterior(args, space, methods, results, likelihoods):
    """posterior.json (settings and every result, refused if not finite) and posterior.png in --out, and
    with the ELBO elbo_levels.npz: its log-likelihood per field, noise level and grid point, so a
    benchmark can weigh the levels afresh without the network."""
    out, names = Path(args.out), space.names
    settings = dict(checkpoint=str(args.checkpoint), npe=str(args.npe), methods=methods, fields=str(args.fields),
                    grid=args.grid, n_levels=args.n_levels, n_draws=args.n_draws, mcmc=args.mcmc, walkers=args.walkers,
                    seed=args.seed, joint=args.joint, names=names,
                    prior={name: [low, high] for name, low, high in zip(names, space.low, space.high)})
    text = finite_json(dict(settings=settings, results=results), f"the posterior of {args.fields}")
    (out / "posterior.json").write_text(text)
    if "elbo" in likelihoods:
        elbo = likelihoods["elbo"]
        np.savez(out / "elbo_levels.npz", log_likelihood=elbo.per_level, sigmas=np.asarray(elbo.sigmas),
                 indices=np.asarray([index for result in results for index in result["indices"]]))
    plot(results, names, methods, out / "posterior.png")


def build_parser():
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("fields", help="field set (any format load_fields reads)")
    parser.add_argument("--method", default="elbo,power_spectrum",
                        help=f"comma-separated, of {', '.join(METHODS)}")
    parser.add_argument("--checkpoint", default=None, help="a conditional diffusion run folder (for elbo)")
    parser.add_argument("--npe", default=None, help="an NPE folder from evaluate/train_npe.py (for npe)")
    parser.add_argument("--box_size", type=POSITIVE, default=None, help="Mpc/h of FIELDS (default: from the data, "
                        "else 1000); must be the run's")
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
