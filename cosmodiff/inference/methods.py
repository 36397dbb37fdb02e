"""Posteriors of fields over a conditional run's parameters, by every inference method: one record per
method in METHODS (label, colour, the model it needs, the settings it reads, its likelihood), used by
evaluate/infer.py, benchmarks/inference.py and `cosmodiff.posterior`. Adding a method is a function
returning a Likelihood, a METHODS row and a test (CONTRIBUTING.md).

Every method gives a log-likelihood on a grid over the runs' flat prior (grid_posterior normalises it);
fields combine by summing log-likelihoods, and emcee reads any method at any point (of_points).
"""
import time
from functools import partial
from typing import Callable, NamedTuple

import numpy as np
import torch

from cosmodiff.checkpoint import CheckpointError, load_run, torch_device
from cosmodiff.condition import Condition, parameter_values
from cosmodiff.data import open_data
from cosmodiff.fields import FieldError, fit_image_size
from cosmodiff.inference.likelihoods import (PowerSpectrumLikelihood, cubic_interpolation, elbo_levels, grid_draws, grid_posterior,
                                 mcmc_samples, negative_elbo, parameter_grid, sample_histogram, sample_summaries,
                                 summaries)
from cosmodiff.inference.npe import grid_log_posterior, load_npe, npe_inputs, summary_of
from cosmodiff.plots import save, subplots
from cosmodiff.transforms import transform_from_dict


class Space(NamedTuple):
    """What the models given fix: the parameters' names and flat prior, the model's field size and box,
    and the training data the power-spectrum baseline is fitted on."""
    names: list
    low: list
    high: list
    image_size: int
    box_size: float
    train_path: str


class Likelihood(NamedTuple):
    """A method's log-likelihood at every grid point for every field (N, M), its seconds per field,
    and of_points(positions, points) -> the summed log-likelihood of those fields at any points (for
    emcee); the ELBO's also each noise level's term of the grid, (N, L, M), and the levels (L,)."""
    grid: np.ndarray
    seconds_per_field: float
    of_points: Callable
    per_level: np.ndarray = None
    sigmas: list = None


def elbo_likelihood(space, fields, points, models, n_levels=8, n_draws=1, seed=0, batch_size=64, device=None):
    """The conditional diffusion model's ELBO with common random numbers (likelihoods.negative_elbo), its
    network on device (default: the GPU where there is one)."""
    network, formulation, config = models["checkpoint"]
    device = torch_device(device)
    network.to(device)
    transform = transform_from_dict(config["transform"])
    model_space = torch.from_numpy(transform.forward(fields)).float()[:, None].to(device)
    condition = Condition.from_dict(config["condition"])
    torch.manual_seed(seed)

    def of_points(positions, pts, progress=False, per_level=False):
        return -negative_elbo(formulation, network, model_space[positions], condition.standardise(pts), n_levels,
                              n_draws, seed, batch_size, progress=progress, per_level=per_level)
    started = time.time()
    per_level = of_points(slice(None), points, progress=True, per_level=True)
    return Likelihood(per_level.sum(axis=1), (time.time() - started) / len(fields),
                      lambda positions, pts: of_points(positions, pts).sum(0), per_level,
                      elbo_levels(formulation, n_levels)[0].tolist())


def power_spectrum_likelihood(space, fields, points, models):
    """A Gaussian likelihood of ln P(k) fitted on the training simulations (space.train_path)."""
    started = time.time()
    train = open_data(space.train_path, space.image_size)
    baseline = PowerSpectrumLikelihood(train.fields, parameter_values(train, space.names, train.sources[0]), space.box_size)
    log_pk = baseline.log_spectra(fields)
    grid = baseline.log_likelihood_of_spectra(log_pk, points)
    return Likelihood(grid, (time.time() - started) / len(fields),
                      lambda positions, pts: baseline.log_likelihood_of_spectra(log_pk[positions], pts).sum(0))


def npe_likelihood(space, fields, points, models, model="npe"):
    """The posterior density of the NPE in models[model] under the flat prior, which is the likelihood up
    to a constant per field (so fields combine by summing, as the other methods' do)."""
    posterior, config = models[model]
    started = time.time()
    inputs = npe_inputs(config, fields)
    grid = grid_log_posterior(posterior, inputs, points)
    return Likelihood(grid, (time.time() - started) / len(fields),
                      lambda positions, pts: grid_log_posterior(posterior, inputs[positions], pts).sum(0))


class Method(NamedTuple):
    """An inference method: its label in figures and tables, its colour, the kind of model it needs (a
    key of MODEL_KINDS; None: only the runs' training data), the settings it reads (evaluate/infer.py's
    flags of those names) and its likelihood(space, fields, points, models, **settings) -> Likelihood."""
    label: str
    colour: str
    needs: str
    settings: tuple
    likelihood: Callable


METHODS = {
    "elbo": Method("diffusion ELBO", "C3", "checkpoint", ("n_levels", "n_draws", "seed", "batch_size", "device"),
                   elbo_likelihood),
    "power_spectrum": Method("P(k) Gaussian likelihood", "C0", None, (), power_spectrum_likelihood),
    "npe": Method("NPE (CNN summary)", "C2", "npe", (), npe_likelihood),
    "npe_power_spectrum": Method("NPE (P(k) summary)", "C4", "npe_power_spectrum", (),
                                 partial(npe_likelihood, model="npe_power_spectrum")),
}


def diffusion_run(folder):
    """A conditional run folder's network, formulation and config."""
    model = load_run(folder)
    if model[2].get("condition") is None:
        raise CheckpointError(f"{folder}: an unconditional run has no parameters to infer; train one with --condition")
    return model


def run_space(model):
    config = model[2]
    condition = Condition.from_dict(config["condition"])
    return Space(condition.names, condition.low, condition.high, config["image_size"], config["box_size"],
                 config["data"]["path"])


def npe_of_summary(summary, describe, folder):
    """An NPE folder's posterior and config, refused when it reads another summary than the kind's."""
    model = load_npe(folder)
    if summary_of(model[1]) != summary:
        raise CheckpointError(f"{folder}: an NPE on the {summary_of(model[1])} summary; {describe.split(',')[0]} "
                              f"takes one on the {summary} summary")
    return model


def npe_space(model):
    config = model[1]
    return Space(config["names"], config["low"], config["high"], config["image_size"], config["box_size"],
                 config["data_path"])


class ModelKind(NamedTuple):
    """A kind of model an inference method needs: what gives its folder (the flag, and what the folder
    is), how a folder loads (folder -> model), the Space a model fixes, and the summary an NPE kind
    reads (None for other kinds)."""
    describe: str
    load: Callable
    space: Callable
    npe_summary: str = None


def npe_kind(name, summary, made_by):
    describe = f"models['{name}'] (--{name}), a folder made by {made_by}"
    return ModelKind(describe, partial(npe_of_summary, summary, describe), npe_space, summary)


DEFAULT_METHODS = ("elbo", "power_spectrum")  # what infer.py and cosmodiff.posterior compute unless told
DEFAULT_GRID = 21  # grid points per parameter
DEFAULT_WALKERS = 16  # emcee's walkers after the grid

MODEL_KINDS = {
    "checkpoint": ModelKind("models['checkpoint'] (--checkpoint), a conditional diffusion run", diffusion_run, run_space),
    "npe": npe_kind("npe", "field", "evaluate/train_npe.py"),
    "npe_power_spectrum": npe_kind("npe_power_spectrum", "power_spectrum", "evaluate/train_npe.py --summary power_spectrum"),
}
# the NPE kinds and the summary each reads (what benchmarks train them on)
NPE_SUMMARIES = {name: kind.npe_summary for name, kind in MODEL_KINDS.items() if kind.npe_summary}


def chosen_methods(methods, folders):
    """The method names (a list, or a comma-separated string), each with the model it needs given
    (folders: a MODEL_KINDS key -> a folder or None; another key is refused)."""
    unknown_kinds = sorted(set(folders) - set(MODEL_KINDS))
    if unknown_kinds:
        raise ValueError(f"unknown kind of model {', '.join(unknown_kinds)}; the kinds are {', '.join(MODEL_KINDS)}")
    given = methods if isinstance(methods, str) else ",".join(map(str, methods))
    chosen = [name for name in given.split(",") if name]
    unknown = [name for name in chosen if name not in METHODS]
    if unknown or not chosen:
        raise ValueError(f"method {given} (--method): choose from {', '.join(METHODS)} (comma-separated)")
    for name in chosen:
        needs = METHODS[name].needs
        if needs and folders.get(needs) is None:
            raise ValueError(f"method {name} (--method) needs {MODEL_KINDS[needs].describe}")
    if not any(folders.values()):
        kinds = [kind.describe for kind in MODEL_KINDS.values()]
        raise ValueError("give " + "; ".join(kinds[:-1]) + f"; or {kinds[-1]}: they fix the parameters and their prior")
    return chosen


def load_models(folders):
    """The models of the folders given (a MODEL_KINDS key -> a folder or None), keyed as Method.needs names them."""
    return {name: MODEL_KINDS[name].load(folder) for name, folder in folders.items() if folder is not None}


def parameter_space(models, folders, train=None):
    """The Space of the first model given (MODEL_KINDS' order: the diffusion run first); all must share
    parameters. train: the P(k) baseline's training data (default: that model's)."""
    given = [name for name in MODEL_KINDS if name in models]
    spaces = {name: MODEL_KINDS[name].space(models[name]) for name in given}
    space, source = spaces[given[0]], folders[given[0]]
    for name in given[1:]:
        if spaces[name].names != space.names:
            raise CheckpointError(f"{folders[name]}: infers {','.join(spaces[name].names)} but {source} "
                                  f"infers {','.join(space.names)}")
    return Space(*space[:5], train or space.train_path)


def matching_fields(fieldset, space, source):
    """The fields at the model's side, refused when their box is not the runs' (each pixel would then
    span another length than the model was trained on)."""
    if fieldset.box_size != space.box_size:
        recorded = "is not recorded, so it is taken as" if fieldset.box_size_assumed else "is"
        raise FieldError(f"{source}: its box size {recorded} {fieldset.box_size:g} Mpc/h but the run was trained on "
                         f"a {space.box_size:g} Mpc/h box; pass box_size (--box_size) if the fields are of that box")
    return fit_image_size(fieldset, space.image_size)


def selected(count, indices, source):
    """Positions of the comma-separated indices among count fields (all when None)."""
    chosen = list(range(count)) if indices is None else [int(i) for i in indices.split(",")]
    outside = [i for i in chosen if not 0 <= i < count]
    if outside:
        raise FieldError(f"{source}: has {count} fields; index {outside[0]} does not exist")
    return chosen


def truths(fieldset, chosen, names):
    """The chosen fields' true parameters, or None each when the set does not carry them all."""
    if any(name not in fieldset.param_names for name in names):
        return [None] * len(chosen)
    return parameter_values(fieldset, names, "")[chosen].tolist()


def posteriors(fields, true_values, indices, space, methods, models, grid=DEFAULT_GRID, joint=False, mcmc=0,
               walkers=DEFAULT_WALKERS, fine=0,
               **settings):
    """Every method's posterior of fields (N, H, W) at the model's size, per field (indices label them)
    or, with joint, of them together: a list of results (label, indices, truth, axes, and per method
    its summaries, grid posterior and log-likelihood, seconds per field; emcee's samples with mcmc
    steps), and each method's Likelihood. With fine, every grid is read by cubic interpolation on fine
    points per parameter (likelihoods.cubic_interpolation; the method's own axes then go with it).
    settings: the methods' own (Method.settings)."""
    axes, points = parameter_grid(space.low, space.high, grid)
    likelihoods = {method: METHODS[method].likelihood(space, fields, points, models,
                                                      **{name: settings[name] for name in METHODS[method].settings
                                                         if name in settings})
                   for method in methods}
    groups = [(f"fields {','.join(map(str, indices))} jointly", list(range(len(indices))))] if joint else [
        (f"field {index}", [position]) for position, index in enumerate(indices)]
    results = []
    for label, positions in groups:
        shared_truth = len({tuple(true_values[p] or ()) for p in positions}) == 1
        truth = true_values[positions[0]] if shared_truth else None
        result = dict(label=label, indices=[indices[p] for p in positions], truth=truth,
                      axes=[axis.tolist() for axis in axes])
        for method, likelihood in likelihoods.items():
            result[method] = method_result(likelihood, positions, axes, space, truth, mcmc, walkers,
                                           settings.get("seed", 0), fine)
        results.append(result)
    return results, likelihoods


def method_result(likelihood, positions, axes, space, truth, mcmc, walkers, seed, fine=0):
    """One method's posterior of the fields at positions: the grid's (read by cubic interpolation with
    fine), or emcee's from it."""
    log_likelihood = likelihood.grid[positions].sum(axis=0)
    fitted = {}
    if fine:
        axes, log_likelihood = cubic_interpolation(log_likelihood, axes, fine)
        fitted = dict(axes=[axis.tolist() for axis in axes])
    posterior = grid_posterior(log_likelihood, axes)
    result = dict(summaries(posterior, axes, space.names, truth), posterior=posterior.tolist(),
                  log_likelihood=log_likelihood.reshape(posterior.shape).tolist(),
                  seconds_per_field=likelihood.seconds_per_field, **fitted)
    if not mcmc:
        return result
    started = time.time()
    samples, acceptance = mcmc_samples(partial(likelihood.of_points, positions), space.low, space.high,
                                       grid_draws(posterior, axes, walkers, seed), mcmc, seed)
    return dict(sample_summaries(samples, axes, space.names, truth), posterior=sample_histogram(samples, axes).tolist(),
                samples=samples.tolist(), acceptance=acceptance, grid_seconds_per_field=likelihood.seconds_per_field,
                seconds_per_field=likelihood.seconds_per_field + (time.time() - started) / len(positions), **fitted)


def plot(results, names, methods, path):
    """Every method's 68% and 95% contours (a curve for one parameter) for the first four results."""
    shown = results[:4]
    figure, axes = subplots(1, len(shown), figsize=(4 * len(shown), 3.8), squeeze=False)
    for ax, result in zip(axes[0], shown):
        for method in methods:
            colour = METHODS[method].colour
            posterior = np.asarray(result[method]["posterior"])
            grid_axes = result[method].get("axes", result["axes"])  # a benchmark may merge grids of several runs
            if posterior.ndim == 2:
                levels = np.sort(posterior.ravel())[::-1]
                mass = np.cumsum(levels)
                contour_levels = sorted({levels[min(np.searchsorted(mass, q), len(levels) - 1)] for q in (0.95, 0.68)})
                ax.contour(grid_axes[1], grid_axes[0], posterior, levels=contour_levels, colors=colour)
            else:
                ax.plot(grid_axes[0], posterior, color=colour)
            ax.plot([], [], color=colour, label=METHODS[method].label)
        if result["truth"] is not None and len(names) == 2:
            ax.plot(result["truth"][1], result["truth"][0], "k*", ms=10, label="truth")
        ax.set(xlabel=names[-1], ylabel=names[0] if len(names) == 2 else "posterior",
               title=result["label"] + " (68%, 95%)")
        ax.legend(fontsize=7)
    save(figure, path)


def prepared(methods, folders, train=None):
    """The chosen method names, the models they need (folders: a MODEL_KINDS key -> a folder or None) and
    the Space those fix (parameter_space)."""
    chosen_names = chosen_methods(methods, folders)
    models = load_models(folders)
    return chosen_names, models, parameter_space(models, folders, train)


def posterior_of(fields_path, folders, methods=DEFAULT_METHODS, indices=None, box_size=None, train=None,
                 **options):
    """Every chosen method's posterior of the fields of a data path (any open_data reads; the chosen
    indices, default all): posteriors' results and likelihoods, and the Space. folders: a MODEL_KINDS key
    (checkpoint: a conditional diffusion run; npe, npe_power_spectrum: NPE folders) -> a folder or
    None; options: posteriors' grid, joint, mcmc, walkers and the methods' settings."""
    chosen_names, models, space = prepared(methods, folders, train)
    fieldset = matching_fields(open_data(fields_path, file="test", box_size=box_size), space, fields_path)
    chosen = selected(len(fieldset), indices, fields_path)
    results, likelihoods = posteriors(fieldset.fields[chosen], truths(fieldset, chosen, space.names), chosen, space,
                                      chosen_names, models, **options)
    return results, likelihoods, space, chosen_names
