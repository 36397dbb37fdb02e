"""The posterior on a conditional run's parameters (e.g. Omega_m, sigma_8) of one field or several,
from the diffusion model's likelihood (its ELBO), from the power spectrum alone, or from a neural
posterior estimate on the field (NPE).

    python evaluate/infer.py FIELDS --checkpoint RUN [--npe NPE_RUN] [--npe_power_spectrum NPE_PK_RUN]
                             [--method elbo,power_spectrum,npe,npe_power_spectrum]
                             [--indices 0,1,2] [--grid 21] [--joint] [--n_levels 8] [--n_draws 1] [--device cuda]
                             [--mcmc STEPS] [--out evaluation/inference]

FIELDS is any data path cosmodiff.data.open_data reads (a split folder: its test.npz; fields larger
than the run's are block-averaged). The methods are cosmodiff.inference.methods.METHODS. The
posterior is evaluated on a grid over the run's training range of every parameter (a flat prior
there), for each field, or for the selected fields taken together with --joint. The runs given fix
the parameters and the prior: --checkpoint (a conditional diffusion run, needed by elbo), --npe
(a folder from evaluate/train_npe.py, needed by npe) or --npe_power_spectrum (one from
evaluate/train_npe.py --summary power_spectrum, needed by npe_power_spectrum). The model's ELBO uses
common random numbers: the same --n_levels noise levels and --n_draws noise draws at every grid point
(cosmodiff/inference/likelihoods.py), on --device (default: the GPU where there is one). The power-spectrum
baseline is a Gaussian likelihood of ln P(k) whose mean is a quadratic in the parameters fitted over
the run's training simulations (--train, default the run's training data) and whose covariance comes
from them. NPE's density q(theta | summary) is read on
the same grid (cosmodiff/inference/npe.py). With --mcmc STEPS, every method's posterior comes from emcee chains
of that many steps (--walkers walkers started from the grid posterior), at any resolution; the figure
bins them on the grid. With --fine N, every grid is read by cubic interpolation on N points per
parameter (--grid 4 or more): a cheaper way than emcee to resolve a posterior narrower than the cells
(cosmodiff/inference/likelihoods.py). Writes posterior.json (per field and method: mean, std, 68% and 95% intervals,
the grid posterior and log-likelihood, the true value where FIELDS carries it, seconds) and
posterior.png (every method's contours).
"""
import argparse
from pathlib import Path

import numpy as np
import torch

from cosmodiff.checkpoint import CheckpointError, output_lock, weights_digest
from cosmodiff.cli import (ArgumentParser, COUNT, INDEX, POSITIVE, Number, device_name, exit_on, finite_json,
                          writable_folder)
from cosmodiff.fields import FieldError
from cosmodiff.inference.methods import (DEFAULT_GRID, DEFAULT_METHODS, DEFAULT_WALKERS, METHODS, MODEL_KINDS, plot,
                                         posterior_of)
from cosmodiff.inference.likelihoods import CUBIC_POINTS
from cosmodiff.launch import set_threads

GRID_POINTS = Number(int, 3)  # a grid posterior needs a point between the prior's edges
WALKERS = Number(int, 4)  # emcee: at least twice the two parameters


def main(args):
    if args.fine and args.grid < CUBIC_POINTS:
        raise ValueError(f"--fine reads the grid by cubic interpolation, which needs --grid {CUBIC_POINTS} or more "
                         f"(got {args.grid})")
    set_threads(torch.get_num_threads())
    writable_folder(args.out, "--out")
    with output_lock(args.out, "inference"):
        infer(args)


def infer(args):
    """Every chosen method's posterior of the selected fields, printed and written to --out."""
    folders = {kind: getattr(args, kind) for kind in MODEL_KINDS}
    results, likelihoods, space, methods = posterior_of(
        args.fields, folders, args.method, args.indices, args.box_size, args.train, grid=args.grid,
        joint=args.joint, mcmc=args.mcmc, walkers=args.walkers, fine=args.fine, n_levels=args.n_levels, n_draws=args.n_draws,
        seed=args.seed, batch_size=args.batch_size, device=args.device)
    for result in results:
        print_result(result, space.names, methods)
    write_posterior(args, folders, space, methods, results, likelihoods)
    print(", ".join(f"{METHODS[m].label} {likelihood.seconds_per_field:.2f} s per field"
                    for m, likelihood in likelihoods.items())
          + f"; written: {Path(args.out) / 'posterior.json'}, {Path(args.out) / 'posterior.png'}")


def print_result(result, names, methods):
    truth = result["truth"]
    print(f"{result['label']}:" + "".join(
        f"\n  {method:>14}: " + ", ".join(
            f"{name} {result[method][name]['mean']:.4f} +- {result[method][name]['std']:.4f}"
            + (f" (true {truth[i]:.4f})" if truth else "") for i, name in enumerate(names))
        for method in methods))


def write_posterior(args, folders, space, methods, results, likelihoods):
    """posterior.json (settings, the digest of each model folder's weights and every result, refused if
    not finite) and posterior.png in --out, and with the ELBO elbo_levels.npz: its log-likelihood per
    field, noise level and grid point, so a benchmark can weigh the levels afresh without the network."""
    out, names = Path(args.out), space.names
    settings = dict(**{kind: str(folder) for kind, folder in folders.items()}, methods=methods, fields=str(args.fields),
                    grid=args.grid, fine=args.fine, n_levels=args.n_levels, n_draws=args.n_draws, mcmc=args.mcmc, walkers=args.walkers,
                    seed=args.seed, joint=args.joint, names=names,
                    weights={key: weights_digest(folder) for key, folder in folders.items() if folder is not None},
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
    parser.add_argument("fields", help="field set (any data path cosmodiff.data.open_data reads)")
    parser.add_argument("--method", default=",".join(DEFAULT_METHODS),
                        help=f"comma-separated, of {', '.join(METHODS)}")
    for kind, model_kind in MODEL_KINDS.items():  # a folder per kind of model a method needs
        users = [name for name, method in METHODS.items() if method.needs == kind]
        parser.add_argument(f"--{kind}", default=None,
                            help=f"{model_kind.describe.split(', ', 1)[1]} (for {', '.join(users)})")
    parser.add_argument("--box_size", type=POSITIVE, default=None, help="Mpc/h of FIELDS (default: from the data, "
                        "else 1000); must be the run's")
    parser.add_argument("--indices", default=None, help="comma-separated field indices (default: all)")
    parser.add_argument("--grid", type=GRID_POINTS, default=DEFAULT_GRID, help="grid points per parameter")
    parser.add_argument("--joint", action="store_true", help="one posterior for the selected fields together")
    parser.add_argument("--fine", type=INDEX, default=0, help="read every grid by cubic interpolation on this many "
                        "points per parameter, for posteriors narrower than the grid's cells (0: the grid as it is)")
    parser.add_argument("--n_levels", type=COUNT, default=8, help="ELBO noise levels")
    parser.add_argument("--n_draws", type=COUNT, default=1, help="ELBO noise draws per level")
    parser.add_argument("--mcmc", type=INDEX, default=0, help="emcee steps after the grid (0: the grid's posterior)")
    parser.add_argument("--walkers", type=WALKERS, default=DEFAULT_WALKERS, help="emcee walkers (with --mcmc)")
    parser.add_argument("--seed", type=INDEX, default=0)
    parser.add_argument("--batch_size", type=COUNT, default=64, help="network batch of the ELBO")
    parser.add_argument("--device", type=device_name, default=None,
                        help="where the ELBO's network runs, e.g. cpu, cuda:1 (default: the GPU where there is one)")
    parser.add_argument("--train", default=None, help="training fields for the P(k) baseline (default: the run's)")
    parser.add_argument("--out", default="evaluation/inference")
    return parser


if __name__ == "__main__":
    exit_on((CheckpointError, FieldError, ValueError), main, build_parser().parse_args())
