"""Embedded default data: particle-mesh mock dark-matter fields from a LCDM linear power spectrum.

Gaussian initial conditions with the linear matter P(k) of colossus (Eisenstein & Hu 1998 with
BAO, normalised to sigma_8: pure Python, installs in seconds, and within a few per cent of a
Boltzmann code, far below the sample variance of a 250 Mpc/h box), displaced to z = 9 with
second-order Lagrangian perturbation theory and evolved to z = 0 by a particle-mesh N-body code
(`--method pm`, the default; `--method 2lpt` displaces the particles to z = 0 at once), painted
with cloud-in-cell on a periodic mesh, and cut into 2D slabs along each axis. Each field is
normalised to mean 1 (1 + delta of its slab).

    python -m cosmodiff.mock --out mock.npz --n_sims 2 --grid 64
    python -m cosmodiff.mock --split conditional --out train_data/conditional

The default split (train_data/nonlinear/train.npz, test.npz; particle mesh) and the 2lpt split
(train_data/train.npz, test.npz) are at Quijote's fiducial cosmology; the
conditional split varies (Omega_m, sigma_8): training simulations on a Latin hypercube over Quijote's
ranges, test simulations at fixed points (a 3x3 grid over the inner 80% of both ranges and the
fiducial point), several per point so each point has its own sample-variance floor.
"""
import contextlib
import itertools
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from cosmodiff.fields import FieldSet, block_average, cube_to_slabs, load_fields, save_fields
from cosmodiff.nbody import Growth, cic_weights, evolve, lpt_initial_conditions, paint
from cosmodiff.parameters import LATIN_HYPERCUBE_RANGES, PARAM_NAMES, QUIJOTE_FIDUCIAL
from cosmodiff.repository import DATA_FOLDER, DEFAULT_DATA, DEFAULT_SPLIT

# Defaults that make a visible cosmic web at 64x64: 128^3 particles in a 250 Mpc/h box, slabs of 4
# cells (7.8 Mpc/h) along each axis, block-averaged from 128 to 64 pixels (3.9 Mpc/h each).
DEFAULTS = dict(grid=128, box_size=250.0, slab_thickness=4, image_size=64)
DEFAULT_TRAIN_SIMS, DEFAULT_TEST_SIMS, DEFAULT_SEED = 24, 4, 0
LARGE_TRAIN_SIMS = 96  # the large split: the default's training simulations and more, the same test split
# The conditional split: 48 Latin-hypercube simulations (4608 fields) to train on, 4 simulations
# (384 fields) at each of 10 test points; its own seed, so no simulation shares the default's phases.
CONDITIONAL_TRAIN_SIMS, CONDITIONAL_SIMS_PER_POINT, CONDITIONAL_SEED = 48, 4, 1
DERIVATIVE_STEPS = {"Omega_m": 0.05, "sigma_8": 0.05}  # the conditional split's finite-difference steps
# The inference split: simulations at cosmologies drawn from the prior (their own Latin hypercubes and
# seeds, so no phase is shared with any other split), a few far-apart slabs each: a calibration file to
# fit corrections on and a test file to judge posteriors on.
INFERENCE_SIMS, INFERENCE_SLABS_PER_SIM, INFERENCE_SEEDS = 64, 2, {"calibration": 2, "test": 3}
# Their particle-mesh counterparts: more cosmologies, fewer slabs of each, so the training split keeps
# the 2lpt split's size while covering the hypercube four times as densely, and the calibration and
# test files hold INFERENCE_NONLINEAR_SIMS * INFERENCE_SLABS_PER_SIM fields each.
CONDITIONAL_NONLINEAR_SIMS, CONDITIONAL_NONLINEAR_SLABS, INFERENCE_NONLINEAR_SIMS = 200, 24, 100
# The particle-mesh NPE's training split: ten times the 2lpt NPE's simulations, the conditional-nonlinear
# split's and more on a Latin hypercube of their own seed (no phase shared with any other split).
NPE_NONLINEAR_SIMS, NPE_NONLINEAR_SEED = 10 * CONDITIONAL_TRAIN_SIMS, 4
# The floor check: fiducial particle-mesh simulations of their own seed, which no floor, model or test
# split has seen. Its test file spreads 384 fields over FLOOR_CHECK_TEST_SIMS simulations (a tight
# floor); its simulations file keeps every slab of the rest, to draw independent real sets from.
FLOOR_CHECK_TEST_SIMS, FLOOR_CHECK_SIMS, FLOOR_CHECK_SEED = 16, 48, 5
# Held-out cosmologies for a conditional particle-mesh model: points of their own Latin hypercube over
# the training ranges, CONDITIONAL_SIMS_PER_POINT simulations each (a floor by simulation at every point)
HOLDOUT_POINTS, HOLDOUT_SEED = 20, 6
A_START, PM_STEPS = 0.1, 10  # the particle-mesh method: 2LPT initial conditions at z = 9, then FastPM steps


def colossus_cosmology(params):
    """The flat LCDM cosmology of a parameter dict, as colossus computes it."""
    from colossus.cosmology import cosmology

    return cosmology.Cosmology(name="mock", flat=True, H0=100 * params["h"], Om0=params["Omega_m"],
                               Ob0=params["Omega_b"], sigma8=params["sigma_8"], ns=params["n_s"], persistence="")


def linear_power(params, redshift=0.0):
    """Linear matter P(k, z) (k in h/Mpc -> (Mpc/h)^3) and Omega_m(z), from colossus."""
    cosmo = colossus_cosmology(params)
    return (lambda k: cosmo.matterPowerSpectrum(k, z=redshift)), float(cosmo.Om(redshift))


def wavenumbers(grid, box_size):
    """k_x, k_y, k_z (h/Mpc) broadcastable over numpy's rfftn layout."""
    k = 2 * np.pi * np.fft.fftfreq(grid, d=box_size / grid)
    k_half = 2 * np.pi * np.fft.rfftfreq(grid, d=box_size / grid)
    return k[:, None, None], k[None, :, None], k_half[None, None, :]


def gaussian_density(power, grid, box_size, rng):
    """Fourier modes of a Gaussian linear density field with P_est(k) = V/N^6 <|delta_k|^2> = P(k)."""
    kx, ky, kz = wavenumbers(grid, box_size)
    k = np.sqrt(kx ** 2 + ky ** 2 + kz ** 2)
    amplitude = np.zeros_like(k)
    amplitude[k > 0] = np.sqrt(power(k[k > 0]) * grid ** 3 / box_size ** 3)
    return np.fft.rfftn(rng.standard_normal((grid, grid, grid))) * amplitude


def lpt_potentials(delta_k, grid, box_size):
    """The wavenumbers and the first- and second-order LPT potentials (Fourier space) of a linear field:
    lap phi1 = delta, lap phi2 = sum_{i<j} (phi1_ii phi1_jj - phi1_ij^2) (Scoccimarro 1998)."""
    kvec = wavenumbers(grid, box_size)
    k2 = kvec[0] ** 2 + kvec[1] ** 2 + kvec[2] ** 2
    k2[0, 0, 0] = 1.0
    phi1 = -delta_k / k2
    shape = (grid,) * 3

    def second_derivative(i, j):
        return np.fft.irfftn(-kvec[i] * kvec[j] * phi1, s=shape, axes=(0, 1, 2))

    d = {(i, j): second_derivative(i, j) for i in range(3) for j in range(i, 3)}
    source = (d[0, 0] * d[1, 1] + d[0, 0] * d[2, 2] + d[1, 1] * d[2, 2]
              - d[0, 1] ** 2 - d[0, 2] ** 2 - d[1, 2] ** 2)
    return kvec, phi1, -np.fft.rfftn(source) / k2


def lpt2_displacement(delta_k, grid, box_size, omega_m):
    """2LPT displacement (3, N, N, N) in Mpc/h: Psi = -grad phi1 + D2 grad phi2, D2 = -3/7 Omega_m^(-1/143)."""
    kvec, phi1, phi2 = lpt_potentials(delta_k, grid, box_size)
    growth2 = -3.0 / 7.0 * omega_m ** (-1.0 / 143.0)
    return np.stack([np.fft.irfftn(1j * kvec[i] * (-phi1 + growth2 * phi2), s=(grid,) * 3, axes=(0, 1, 2))
                     for i in range(3)])


def lpt_displacements(delta_k, grid, box_size):
    """The first- and second-order displacements -grad phi1 and grad phi2 (each (3, N, N, N), Mpc/h)."""
    kvec, phi1, phi2 = lpt_potentials(delta_k, grid, box_size)
    return [np.stack([np.fft.irfftn(1j * kvec[i] * phi, s=(grid,) * 3, axes=(0, 1, 2)) for i in range(3)])
            for phi in (-phi1, phi2)]


def particle_mesh_density(params, grid, box_size, rng, redshift=0.0, pm_steps=PM_STEPS):
    """Particle-mesh N-body density cube (mean 1) at `redshift`: 2LPT initial conditions at A_START,
    then pm_steps FastPM steps linear in a on a force mesh of the particle grid (cosmodiff.nbody)."""
    power, _ = linear_power(params, 0.0)
    displacement_1, displacement_2 = lpt_displacements(gaussian_density(power, grid, box_size, rng), grid, box_size)
    growth = Growth(colossus_cosmology(params))
    positions, momenta = (tensor.float() for tensor in  # single precision: positions to ~1e-5 Mpc/h, faster FFTs
                          lpt_initial_conditions(displacement_1, displacement_2, growth, A_START, box_size))
    a_steps = list(np.linspace(A_START, 1 / (1 + redshift), pm_steps + 1))
    positions, _ = evolve(positions, momenta, growth, a_steps, grid, box_size)
    delta = paint(cic_weights(positions, grid, box_size), grid, positions.shape[1])
    return (delta + 1).numpy()


def lpt_density(params, grid, box_size, rng, redshift=0.0):
    """2LPT density cube (mean 1) at `redshift` for one cosmology: particles start on the grid's nodes.

    At z = 0 LPT damps the largest scales' power by a few per cent (its propagator falls as
    exp(-k^2 sigma_v^2 / 2)); at z >= 2 the large scales follow linear theory to < 1%.
    """
    power, omega_m = linear_power(params, redshift)
    delta_k = gaussian_density(power, grid, box_size, rng)
    displacement = lpt2_displacement(delta_k, grid, box_size, omega_m)
    nodes = np.indices((grid,) * 3).reshape(3, -1) * (box_size / grid)
    positions = torch.from_numpy(nodes + displacement.reshape(3, -1))
    return (paint(cic_weights(positions, grid, box_size), grid, positions.shape[1]) + 1).numpy()


def simulation_params(seed, sim, latin_hypercube, n_sims):
    """Cosmology of simulation `sim`: fiducial, or its stratum of a seeded Latin hypercube."""
    params = dict(QUIJOTE_FIDUCIAL)
    if latin_hypercube:
        from scipy.stats import qmc

        unit = qmc.LatinHypercube(d=2, rng=np.random.default_rng([seed, 7919])).random(n_sims)[sim]
        for value, (name, (low, high)) in zip(unit, LATIN_HYPERCUBE_RANGES.items()):
            params[name] = low + value * (high - low)
    return params


def simulation_slabs(sim, cosmology, seed, grid, box_size, slab_thickness, image_size, redshift, method, pm_steps,
                     slabs_per_sim):
    """The slabs (each of mean 1) of simulation `sim` at a cosmology; its phases depend only on (seed, sim)."""
    simulate = partial(particle_mesh_density, pm_steps=pm_steps) if method == "pm" else lpt_density
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(sim,)))
    slabs = block_average(cube_to_slabs(simulate(cosmology, grid, box_size, rng, redshift), slab_thickness),
                          image_size or grid)
    if slabs_per_sim:
        slabs = slabs[::len(slabs) // slabs_per_sim][:slabs_per_sim]
    return slabs / slabs.mean(axis=(1, 2), keepdims=True, dtype=np.float64)


def make_mock_set(n_sims, grid=DEFAULTS["grid"], box_size=DEFAULTS["box_size"],
                  slab_thickness=DEFAULTS["slab_thickness"], image_size=DEFAULTS["image_size"],
                  seed=DEFAULT_SEED, latin_hypercube=False, first_sim=0, redshift=0.0, progress=True, cosmologies=None,
                  method="pm", pm_steps=PM_STEPS, slabs_per_sim=None, workers=1):
    """Fields of simulations first_sim .. first_sim + n_sims - 1; simulation i's phases depend only on
    (seed, i); cosmologies, if given, holds each simulation's parameters (else fiducial or the hypercube's).
    method: "2lpt" (displaced once) or "pm" (particle-mesh N-body from 2LPT initial conditions).
    slabs_per_sim keeps that many evenly spaced slabs of each simulation (default: all). workers > 1
    runs that many simulations at once, one thread each (the same fields as one worker)."""
    total_sims = first_sim + n_sims
    sims = list(range(first_sim, total_sims))
    cosmology_of = [cosmologies[sim - first_sim] if cosmologies else simulation_params(seed, sim, latin_hypercube, total_sims)
                    for sim in sims]
    simulate = partial(simulation_slabs, seed=seed, grid=grid, box_size=box_size, slab_thickness=slab_thickness,
                       image_size=image_size, redshift=redshift, method=method, pm_steps=pm_steps,
                       slabs_per_sim=slabs_per_sim)
    processes = min(workers, n_sims)
    with contextlib.ExitStack() as stack:
        if processes > 1:
            pool = stack.enter_context(ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"),
                                                           initializer=torch.set_num_threads, initargs=(1,)))
            results = pool.map(simulate, sims, cosmology_of)
        else:
            results = map(simulate, sims, cosmology_of)
        stacks = list(tqdm(results, total=n_sims, desc=f"{method} mocks", unit="sim", disable=not progress))
    params = [[cosmology[name] for name in PARAM_NAMES] for cosmology, slabs in zip(cosmology_of, stacks) for _ in slabs]
    sim_index = [sim for sim, slabs in zip(sims, stacks) for _ in slabs]
    fields = np.concatenate(stacks).astype(np.float32)
    return FieldSet(fields=fields, box_size=box_size, params=np.asarray(params), param_names=list(PARAM_NAMES),
                    sources=[f"mock sim {s}" for s in sim_index], sim_index=np.asarray(sim_index))


def conditional_test_points():
    """(Omega_m, sigma_8) of the conditional test set: a 3x3 grid over the inner 80% of the Latin
    hypercube's ranges, then Quijote's fiducial point."""
    axes = [np.linspace(low + 0.1 * (high - low), high - 0.1 * (high - low), 3) for low, high in
            LATIN_HYPERCUBE_RANGES.values()]
    grid = [{name: round(float(value), 6) for name, value in zip(LATIN_HYPERCUBE_RANGES, pair)}
            for pair in itertools.product(*axes)]
    return grid + [{name: QUIJOTE_FIDUCIAL[name] for name in LATIN_HYPERCUBE_RANGES}]


def conditional_test_set(method, train_sims, workers=1):
    """CONDITIONAL_SIMS_PER_POINT simulations at each of conditional_test_points(), numbered after the
    split's train_sims training simulations (so no phase is shared with them)."""
    cosmologies = [dict(QUIJOTE_FIDUCIAL, **point) for point in conditional_test_points()
                   for _ in range(CONDITIONAL_SIMS_PER_POINT)]
    return make_mock_set(len(cosmologies), seed=CONDITIONAL_SEED, first_sim=train_sims, cosmologies=cosmologies,
                         method=method, workers=workers)


def derivative_set(method, train_sims, workers=1):
    """Simulations at the fiducial point moved by -/+ DERIVATIVE_STEPS in one parameter at a time, the
    same CONDITIONAL_SIMS_PER_POINT phases at each (paired, as Quijote's derivative simulations), so
    finite differences of P(k) cancel most of the sample variance; numbered after the test simulations."""
    first_sim = train_sims + CONDITIONAL_SIMS_PER_POINT * len(conditional_test_points())
    sets = [make_mock_set(CONDITIONAL_SIMS_PER_POINT, seed=CONDITIONAL_SEED, first_sim=first_sim,
                          cosmologies=[dict(QUIJOTE_FIDUCIAL, **{name: QUIJOTE_FIDUCIAL[name] + sign * step})]
                          * CONDITIONAL_SIMS_PER_POINT, method=method, workers=workers)
            for name, step in DERIVATIVE_STEPS.items() for sign in (-1, 1)]
    return concatenated(sets)


def holdout_set(workers=1):
    """CONDITIONAL_SIMS_PER_POINT particle-mesh simulations at each of HOLDOUT_POINTS cosmologies of a
    Latin hypercube of their own seed, CONDITIONAL_NONLINEAR_SLABS slabs each (no phase shared with
    any other split)."""
    cosmologies = [simulation_params(HOLDOUT_SEED, point, True, HOLDOUT_POINTS) for point in range(HOLDOUT_POINTS)
                   for _ in range(CONDITIONAL_SIMS_PER_POINT)]
    return make_mock_set(len(cosmologies), seed=HOLDOUT_SEED, cosmologies=cosmologies, method="pm",
                         slabs_per_sim=CONDITIONAL_NONLINEAR_SLABS, workers=workers)


def conditional_split(method, train_sims, slabs_per_sim=None):
    """Files of a conditional split: train_sims Latin-hypercube training simulations, the test points'
    simulations and the paired derivative simulations."""
    return {"train": partial(make_mock_set, train_sims, seed=CONDITIONAL_SEED, latin_hypercube=True, method=method,
                             slabs_per_sim=slabs_per_sim),
            "test": partial(conditional_test_set, method, train_sims),
            "derivatives": partial(derivative_set, method, train_sims)}


def inference_split(method, n_sims):
    """Files of an inference split: calibration and test, n_sims prior draws each, a few slabs per draw."""
    return {file: partial(make_mock_set, n_sims, seed=seed, latin_hypercube=True, method=method,
                          slabs_per_sim=INFERENCE_SLABS_PER_SIM) for file, seed in INFERENCE_SEEDS.items()}


def npe_train_set(workers=1):
    """NPE_NONLINEAR_SIMS particle-mesh simulations over the hypercube: the conditional-nonlinear split's
    training file (made in its folder once, and read from there) and the rest numbered after them, so
    the larger set costs only its new simulations."""
    conditional_train, _ = ensure_split(SPLIT_FOLDERS["conditional-nonlinear"], "conditional-nonlinear", workers,
                                        files=["train"])
    more = make_mock_set(NPE_NONLINEAR_SIMS - CONDITIONAL_NONLINEAR_SIMS, seed=NPE_NONLINEAR_SEED, latin_hypercube=True,
                         first_sim=CONDITIONAL_NONLINEAR_SIMS, method="pm", slabs_per_sim=CONDITIONAL_NONLINEAR_SLABS,
                         workers=workers)
    return concatenated([load_fields(conditional_train), more])


def large_train_set(method, workers=1):
    """LARGE_TRAIN_SIMS fiducial simulations: the default training simulations and those after the
    default test simulations, so the default test split stays held out."""
    first_extra = DEFAULT_TRAIN_SIMS + DEFAULT_TEST_SIMS
    return concatenated([make_mock_set(DEFAULT_TRAIN_SIMS, first_sim=0, method=method, workers=workers),
                         make_mock_set(LARGE_TRAIN_SIMS - DEFAULT_TRAIN_SIMS, first_sim=first_extra, method=method,
                                       workers=workers)])


def default_test_set(method, workers=1):
    """The default test simulations (after the default training ones), held out of every fiducial
    training split."""
    return make_mock_set(DEFAULT_TEST_SIMS, first_sim=DEFAULT_TRAIN_SIMS, method=method, workers=workers)


def concatenated(sets):
    """One field set of several of the same box and parameter names."""
    return FieldSet(fields=np.concatenate([s.fields for s in sets]), box_size=sets[0].box_size,
                    params=np.concatenate([s.params for s in sets]), param_names=sets[0].param_names,
                    sources=sum((s.sources for s in sets), []), sim_index=np.concatenate([s.sim_index for s in sets]))


# name -> file -> the field set it holds, made on first use by ensure_split
SPLITS = {
    "2lpt": {"train": partial(make_mock_set, DEFAULT_TRAIN_SIMS, first_sim=0, method="2lpt"),
             "test": partial(default_test_set, method="2lpt")},
    "nonlinear": {"train": partial(make_mock_set, DEFAULT_TRAIN_SIMS, first_sim=0, method="pm"),
                  "test": partial(default_test_set, method="pm")},
    "large": {"train": partial(large_train_set, method="2lpt"), "test": partial(default_test_set, method="2lpt")},
    "large-nonlinear": {"train": partial(large_train_set, method="pm"), "test": partial(default_test_set, method="pm")},
    "inference": inference_split("2lpt", INFERENCE_SIMS),
    "inference-nonlinear": inference_split("pm", INFERENCE_NONLINEAR_SIMS),
    "conditional": conditional_split("2lpt", CONDITIONAL_TRAIN_SIMS),
    "conditional-nonlinear": conditional_split("pm", CONDITIONAL_NONLINEAR_SIMS, CONDITIONAL_NONLINEAR_SLABS),
    "conditional-nonlinear-holdout": {"test": holdout_set},
    "npe-nonlinear": {"train": npe_train_set},
    "floor-check": {"test": partial(make_mock_set, FLOOR_CHECK_TEST_SIMS, seed=FLOOR_CHECK_SEED, method="pm",
                                    slabs_per_sim=384 // FLOOR_CHECK_TEST_SIMS),
                    "simulations": partial(make_mock_set, FLOOR_CHECK_SIMS, seed=FLOOR_CHECK_SEED, method="pm",
                                           first_sim=FLOOR_CHECK_TEST_SIMS)},
}


# the 2lpt split sits in the data folder itself, where run folders trained on it look for its test file
SPLIT_FOLDERS = {name: DATA_FOLDER if name == "2lpt" else DATA_FOLDER / name for name in SPLITS}
DEFAULT_WORKERS = os.cpu_count() or 1  # a split made on first use runs one simulation on each core


def ensure_split(folder, name=DEFAULT_SPLIT, workers=DEFAULT_WORKERS, files=None):
    """A named split (by simulation) in folder/<file>.npz (train, test, ...; only `files` where given),
    each file made once (by `workers` processes); returns the train and test paths."""
    folder = Path(folder)
    missing = {file: make for file, make in SPLITS[name].items()
               if (files is None or file in files) and not (folder / f"{file}.npz").exists()}
    if missing:
        print(f"Generating the {name} mock data set in {folder} (once) ...")
        start = time.time()
        folder.mkdir(parents=True, exist_ok=True)
        for file, make in missing.items():
            save_fields(folder / f"{file}.npz", make(workers=workers))
        print(f"{name.capitalize()} data written in {time.time() - start:.0f} s.")
    return folder / "train.npz", folder / "test.npz"


def ensure_default_data():
    """The default split's train and test paths, made once."""
    return ensure_split(DEFAULT_DATA, DEFAULT_SPLIT)
