"""The mocks' 3D matter power spectrum at z = 0 against CAMB's linear and nonlinear (HMcode-2020)
P(k), for the 2lpt and pm methods, with the seconds each simulation takes.

    python benchmarks/mock_validation.py [--n_sims 4] [--pm_steps 10 20]

The simulations are the default split's first ones (same seeds, 128^3 particles in 250 Mpc/h), their
CIC density on the 128^3 mesh with the CIC window divided out; bins of width k_F. Reports, per
method, the ratio to CAMB's nonlinear P(k) per bin and the largest k up to which every bin is within
5% (the target; or within twice its sample variance where that is larger), and writes benchmarks/results/mock_validation.json and images/mock_validation.png.
"""
import json
import time
from functools import partial
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cosmodiff.cli import ArgumentParser, COUNT
from cosmodiff.mock import DEFAULT_SEED, DEFAULTS, lpt_density, particle_mesh_density, wavenumbers
from cosmodiff.parameters import QUIJOTE_FIDUCIAL
from cosmodiff.plots import plt, save

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 0.05


def power_spectrum_3d(density, box_size):
    """Spherically averaged P(k) ((Mpc/h)^3) of a periodic density cube (mean 1), CIC window divided
    out, in bins of the fundamental k_F from k_F; returns k (h/Mpc, mean of each bin's modes), P, modes."""
    grid = density.shape[0]
    modes = np.fft.rfftn(density / density.mean() - 1)
    kx, ky, kz = wavenumbers(grid, box_size)
    k = np.sqrt(kx ** 2 + ky ** 2 + kz ** 2)
    window = 1.0
    for component in (kx, ky, kz):
        window = window * np.sinc(component * box_size / grid / (2 * np.pi)) ** 2
    power = np.abs(modes / window) ** 2 * box_size ** 3 / grid ** 6
    weight = np.ones_like(k)
    weight[..., 1:-1] = 2  # rfftn holds one of each +-k pair except on the kz = 0 and Nyquist planes
    k_fundamental = 2 * np.pi / box_size
    bins = np.rint(k / k_fundamental).astype(int)
    keep = (bins >= 1) & (bins <= grid // 2)
    count = np.bincount(bins[keep], weight[keep], minlength=grid // 2 + 1)[1:]
    k_mean = np.bincount(bins[keep], (weight * k)[keep], minlength=grid // 2 + 1)[1:] / count
    p_mean = np.bincount(bins[keep], (weight * power)[keep], minlength=grid // 2 + 1)[1:] / count
    return k_mean, p_mean, count


def camb_spectra(params, k):
    """CAMB's linear and HMcode-2020 nonlinear P(k) at z = 0 (h/Mpc, (Mpc/h)^3), sigma_8 as given."""
    import camb

    h = params["h"]

    def results(amplitude):
        settings = camb.set_params(H0=100 * h, ombh2=params["Omega_b"] * h ** 2,
                                   omch2=(params["Omega_m"] - params["Omega_b"]) * h ** 2, mnu=0, omk=0,
                                   ns=params["n_s"], As=amplitude, WantTransfer=True, kmax=20,
                                   NonLinear=camb.model.NonLinear_both, halofit_version="mead2020")
        settings.set_matter_power(redshifts=[0.0], kmax=20)
        return camb.get_results(settings)
    first = results(2e-9)
    final = results(2e-9 * (params["sigma_8"] / first.get_sigma8_0()) ** 2)
    spectra = {}
    for name, nonlinear in (("linear", False), ("nonlinear", True)):
        interpolator = final.get_matter_power_interpolator(nonlinear=nonlinear, hubble_units=True, k_hunit=True)
        spectra[name] = interpolator.P(0.0, k)
    return spectra


def within_to(k, ratio, sample_variance, tolerance=TOLERANCE):
    """The largest k up to which every bin is within the tolerance, or within twice its sample
    variance where that is larger (the box's few large-scale modes); 0 if the first bin is not."""
    outside = np.abs(ratio - 1) > np.maximum(tolerance, 2 * sample_variance)
    if not outside.any():
        return float(k[-1])
    first = int(np.argmax(outside))
    return float(k[first - 1]) if first else 0.0


def main(args):
    grid, box_size = DEFAULTS["grid"], DEFAULTS["box_size"]
    methods = {"2lpt": lpt_density, **{f"pm-{steps}": partial(particle_mesh_density, pm_steps=steps)
                                       for steps in args.pm_steps}}
    measured = {}
    for name, simulate in methods.items():
        spectra, seconds = [], []
        for sim in tqdm(range(args.n_sims), desc=name, unit="sim"):
            rng = np.random.default_rng(np.random.SeedSequence(DEFAULT_SEED, spawn_key=(sim,)))
            started = time.process_time()
            density = simulate(QUIJOTE_FIDUCIAL, grid, box_size, rng)
            seconds.append(time.process_time() - started)
            k, power, modes = power_spectrum_3d(density, box_size)
            spectra.append(power)
        measured[name] = dict(power=np.mean(spectra, axis=0), cpu_seconds_per_sim=float(np.mean(seconds)))
    theory = camb_spectra(QUIJOTE_FIDUCIAL, k)
    sample_variance = np.sqrt(2 / (modes * args.n_sims))
    rows = dict(settings=dict(n_sims=args.n_sims, pm_steps=args.pm_steps, grid=grid, box_size=box_size,
                              tolerance=TOLERANCE, camb="HMcode-2020"),
                k=k.tolist(), n_modes=modes.tolist(), sample_variance=sample_variance.tolist(),
                camb_linear=theory["linear"].tolist(), camb_nonlinear=theory["nonlinear"].tolist(), methods={})
    figure, ax = plt.subplots(figsize=(7, 4.5))
    ax.fill_between(k, 1 - sample_variance, 1 + sample_variance, color="0.85", label="sample variance (1 sigma)")
    ax.semilogx(k, theory["linear"] / theory["nonlinear"], "k:", label="CAMB linear")
    for name, result in measured.items():
        ratio = result["power"] / theory["nonlinear"]
        rows["methods"][name] = dict(power=result["power"].tolist(), ratio_to_nonlinear=ratio.tolist(),
                                     within_5_percent_to_k=within_to(k, ratio, sample_variance),
                                     cpu_seconds_per_sim=result["cpu_seconds_per_sim"],
                                     ratio_at={f"{value:g}": float(np.interp(value, k, ratio)) for value in (0.1, 0.3, 0.5)})
        ax.semilogx(k, ratio, label=f"{name}: within 5% to k = {rows['methods'][name]['within_5_percent_to_k']:.2f} h/Mpc")
        print(f"{name}: P / CAMB nonlinear at k = 0.1, 0.3, 0.5 h/Mpc: "
              + ", ".join(f"{value:.3f}" for value in rows["methods"][name]["ratio_at"].values())
              + f"; every bin within 5% up to k = {rows['methods'][name]['within_5_percent_to_k']:.3f} h/Mpc; "
              f"{result['cpu_seconds_per_sim']:.1f} CPU-s per simulation")
    for bound in (1 - TOLERANCE, 1 + TOLERANCE):
        ax.axhline(bound, color="gray", lw=0.6, ls="--")
    ax.set(xlabel="k [h/Mpc]", ylabel="P(k) / CAMB nonlinear (HMcode-2020)", ylim=(0.2, 1.4),
           title=f"z = 0, {grid}^3 particles in {box_size:g} Mpc/h, mean of {args.n_sims} simulations")
    ax.legend(fontsize=8)
    save(figure, ROOT / "images" / "mock_validation.png")
    results = ROOT / "benchmarks" / "results" / "mock_validation.json"
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(rows, indent=1))
    print(f"Written: {results}, images/mock_validation.png")


if __name__ == "__main__":
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--n_sims", type=COUNT, default=4)
    parser.add_argument("--pm_steps", type=COUNT, nargs="+", default=[10], help="one pm method per step count")
    main(parser.parse_args())
