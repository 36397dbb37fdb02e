"""The mocks against theory and against Quijote, for the 2lpt and pm methods: the 3D matter power
spectrum at z = 0 against CAMB's linear and nonlinear (HMcode-2020) P(k), with the seconds each
simulation takes; and 2D slabs with Quijote's windows against the Quijote PNG slices (2D P(k), PDF).

    python benchmarks/mock_validation.py [--n_sims 4] [--pm_steps 10 20] [--quijote ../shared/quijote-png-sample]

The simulations are the default split's first ones (same seeds, 128^3 particles in 250 Mpc/h), their
CIC density on the 128^3 mesh with the CIC window divided out; bins of width k_F. Reports, per
method, the ratio to CAMB's nonlinear P(k) per bin and the largest k up to which every bin is within
5% (the target; or within twice its sample variance where that is larger).

Quijote's slices (512^2 pixels of a 1000 Mpc/h box, each the mean of 5 of its 512 CIC grid slices)
have the windows of the mocks' own: the same cell (1000/512 = 250/128 Mpc/h), CIC mass assignment
and particle spacing; so the mocks are cut into slabs of 5 cells, kept at 128^2 pixels, and rendered
as the PNGs were (a linear scale, clipped at 1, through the gnuplot colormap's 256 entries, read
back). The PNGs do not record their scale: each mock's is the one at which its rendered mean equals
the PNGs' mean value. Reported: the 2D P(k) ratio mock/Quijote (rendered, and before rendering) and
the pixel PDF over the 256 levels (quantiles in units of the mean, the fraction clipped, the total
variation distance). Writes benchmarks/results/mock_validation.json and images/mock_validation.png.
"""
import json
import time
from functools import partial

import numpy as np
from tqdm import tqdm

from cosmodiff.cli import ArgumentParser, COUNT
from cosmodiff.fields import colormap_lut, cube_to_slabs, invert_colormap, load_fields, render_colormap
from cosmodiff.mock import DEFAULT_SEED, DEFAULTS, lpt_density, particle_mesh_density, wavenumbers
from cosmodiff.parameters import QUIJOTE_FIDUCIAL
from cosmodiff.plots import save, subplots
from cosmodiff.stats import power_spectrum
from cosmodiff.repository import ROOT

TOLERANCE = 0.05
QUIJOTE_SLAB_CELLS = 5  # the PNG slices average 5 grid slices, each one of the mock's cells thick
PNG_COLORMAP = "gnuplot"
QUANTILES = (0.01, 0.1, 0.5, 0.9, 0.99, 0.999)


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


def rendered_as_png(fields, scale):
    """Fields as the Quijote PNGs were made and are read: scale * field clipped to [0, 1], through
    the colormap's entries (matplotlib's cmap(x, bytes=True)), then back to entry / (entries - 1)."""
    return invert_colormap(render_colormap(scale * fields, PNG_COLORMAP)[..., :3], colormap_lut(PNG_COLORMAP))


def png_scale(fields, target_mean, iterations=25):
    """The scale at which the rendered fields' mean is target_mean (bisection: the mean grows with it)."""
    low, high = 0.0, 1.0
    for _ in range(iterations):
        middle = (low + high) / 2
        low, high = (middle, high) if rendered_as_png(fields, middle).mean() < target_mean else (low, middle)
    return (low + high) / 2


def level_statistics(values):
    """The pixel PDF of rendered fields: the fraction of pixels at each of the 256 levels, quantiles
    of value / mean value, and the fraction at the top level (clipped)."""
    levels = np.rint(np.asarray(values) * 255).astype(np.int64).ravel()
    scaled = np.asarray(values, np.float64).ravel() / np.mean(values, dtype=np.float64)
    return dict(level_fraction=(np.bincount(levels, minlength=256) / levels.size).tolist(),
                level_density=(np.arange(256) / 255 / np.mean(values, dtype=np.float64)).tolist(),
                quantiles={f"{q:g}": float(np.quantile(scaled, q)) for q in QUANTILES},
                clipped_fraction=float((levels == 255).mean()))


def total_variation(levels, reference):
    """Half the L1 distance between two level PDFs: the fraction of pixels in the wrong level."""
    return float(0.5 * np.abs(np.subtract(levels["level_fraction"], reference["level_fraction"])).sum())


def slab_spectrum(fields, box_size, k_max):
    """Mean 2D P(k) of fields to k_max (h/Mpc): k, P."""
    k, power, _ = power_spectrum(fields, box_size)
    keep = (k > 0) & (k <= k_max)
    return k[keep], power.mean(axis=0)[keep]


def quijote_comparison(slabs, quijote, grid, box_size, n_sims):
    """Per method, its slabs (Quijote's windows, n_sims simulations in order) rendered as the PNGs
    against the PNGs: the 2D P(k) ratio (rendered and before rendering) and the pixel PDF."""
    nyquist = np.pi * quijote.image_size / quijote.box_size
    k_quijote, power_quijote = slab_spectrum(quijote.fields, quijote.box_size, nyquist)
    target_mean = float(np.mean(quijote.fields, dtype=np.float64))
    quijote_levels = level_statistics(quijote.fields)
    half = len(quijote.fields) // 2
    quijote_levels["halves_total_variation"] = total_variation(level_statistics(quijote.fields[:half]),
                                                               level_statistics(quijote.fields[half:]))
    rows = dict(settings=dict(slab_cells=QUIJOTE_SLAB_CELLS, slab_thickness=QUIJOTE_SLAB_CELLS * box_size / grid,
                              n_quijote=len(quijote.fields), quijote_box_size=quijote.box_size, colormap=PNG_COLORMAP,
                              quijote_mean_value=target_mean),
                quijote=quijote_levels, methods={})
    for name, fields in slabs.items():
        per_sim = len(fields) // n_sims
        scale = png_scale(fields[:per_sim], target_mean)
        rendered = rendered_as_png(fields, scale)
        spectra = [slab_spectrum(rendered[i * per_sim:(i + 1) * per_sim], box_size, nyquist) for i in range(n_sims)]
        k = spectra[0][0]
        per_sim_power = np.stack([power for _, power in spectra])
        power = per_sim_power.mean(axis=0)  # every simulation has as many slabs: the mean over all of them
        quijote_at_k = np.exp(np.interp(np.log(k), np.log(k_quijote), np.log(power_quijote)))
        ratio = power / quijote_at_k
        result = rows["methods"][name] = dict(
            scale=scale, ratio_to_quijote=ratio.tolist(),
            ratio_before_rendering=(slab_spectrum(fields, box_size, nyquist)[1] / quijote_at_k).tolist(),
            ratio_error=(per_sim_power.std(axis=0, ddof=1) / np.sqrt(n_sims) / quijote_at_k).tolist(),
            ratio_at={f"{value:g}": float(np.interp(value, k, ratio)) for value in (0.1, 0.3, 0.5, 1.0)},
            largest_deviation_0p1_to_1=float(np.abs(ratio - 1)[(k >= 0.1) & (k <= 1)].max()),
            **level_statistics(rendered))
        result["total_variation"] = total_variation(result, quijote_levels)
        print(f"{name} slabs vs Quijote: 2D P ratio at k = 0.1, 0.3, 0.5, 1.0 h/Mpc: "
              + ", ".join(f"{value:.3f}" for value in result["ratio_at"].values())
              + f" (at most {result['largest_deviation_0p1_to_1']:.3f} off over 0.1-1 h/Mpc); "
              f"PDF total variation {result['total_variation']:.3f} (Quijote's halves "
              f"{quijote_levels['halves_total_variation']:.3f}); 99.9% quantile {result['quantiles']['0.999']:.2f} "
              f"(Quijote {quijote_levels['quantiles']['0.999']:.2f}) x the mean; clipped {result['clipped_fraction']:.4f} "
              f"(Quijote {quijote_levels['clipped_fraction']:.4f})")
    rows["k"] = k.tolist()
    return rows


def draw_quijote_comparison(ax_slab, ax_pdf, rows):
    """The slab P(k) ratio to Quijote and the pixel PDF of each method beside Quijote's."""
    k = np.asarray(rows["k"])

    def occupied(levels):  # the levels some pixel has (entries 142 and 143 share a colour: 143 never reads back)
        fraction = np.asarray(levels["level_fraction"])
        return np.asarray(levels["level_density"])[fraction > 0], fraction[fraction > 0]
    ax_pdf.loglog(*occupied(rows["quijote"]), "k.-", ms=3, lw=0.8,
                  label=f"Quijote ({rows['settings']['n_quijote']} PNG slices)")
    for name, result in rows["methods"].items():
        ratio, error = np.asarray(result["ratio_to_quijote"]), np.asarray(result["ratio_error"])
        line, = ax_slab.semilogx(k, ratio, label=f"{name}, rendered as the PNGs")
        ax_slab.fill_between(k, ratio - error, ratio + error, color=line.get_color(), alpha=0.25, lw=0)
        ax_slab.semilogx(k, result["ratio_before_rendering"], ":", color=line.get_color(),
                         label=f"{name}, before rendering")
        ax_pdf.loglog(*occupied(result), ".-", ms=3, lw=0.8, color=line.get_color(),
                      label=f"{name} (total variation {result['total_variation']:.3f})")
    ax_slab.axhline(1, color="gray", lw=0.6, ls="--")
    ax_slab.set(xlabel="k [h/Mpc]", ylabel="2D P(k) / Quijote slices", ylim=(0, 2),
                title=f"slabs of {rows['settings']['slab_thickness']:.2f} Mpc/h, Quijote's windows")
    ax_slab.legend(fontsize=7)
    ax_pdf.set(xlabel="density / mean (the PNGs' 256 levels)", ylabel="fraction of pixels",
               title="pixel PDF, rendered as the PNGs")
    ax_pdf.legend(fontsize=7)


def main(args):
    grid, box_size = DEFAULTS["grid"], DEFAULTS["box_size"]
    methods = {"2lpt": lpt_density, **{f"pm-{steps}": partial(particle_mesh_density, pm_steps=steps)
                                       for steps in args.pm_steps}}
    quijote = load_fields(args.quijote, colormap=PNG_COLORMAP)
    measured, slabs = {}, {}
    for name, simulate in methods.items():
        spectra, seconds, stacks = [], [], []
        for sim in tqdm(range(args.n_sims), desc=name, unit="sim"):
            rng = np.random.default_rng(np.random.SeedSequence(DEFAULT_SEED, spawn_key=(sim,)))
            started = time.process_time()
            density = simulate(QUIJOTE_FIDUCIAL, grid, box_size, rng)
            seconds.append(time.process_time() - started)
            k, power, modes = power_spectrum_3d(density, box_size)
            spectra.append(power)
            cut = cube_to_slabs(density, QUIJOTE_SLAB_CELLS)
            stacks.append(cut / cut.mean(axis=(1, 2), keepdims=True))
        slabs[name] = np.concatenate(stacks)
        measured[name] = dict(power=np.mean(spectra, axis=0), cpu_seconds_per_sim=float(np.mean(seconds)))
    theory = camb_spectra(QUIJOTE_FIDUCIAL, k)
    sample_variance = np.sqrt(2 / (modes * args.n_sims))
    rows = dict(settings=dict(n_sims=args.n_sims, pm_steps=args.pm_steps, grid=grid, box_size=box_size,
                              tolerance=TOLERANCE, camb="HMcode-2020"),
                k=k.tolist(), n_modes=modes.tolist(), sample_variance=sample_variance.tolist(),
                camb_linear=theory["linear"].tolist(), camb_nonlinear=theory["nonlinear"].tolist(), methods={})
    figure, (ax, ax_slab, ax_pdf) = subplots(1, 3, figsize=(17, 4.8))
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
    rows["quijote_slabs"] = quijote_comparison(slabs, quijote, grid, box_size, args.n_sims)
    draw_quijote_comparison(ax_slab, ax_pdf, rows["quijote_slabs"])
    save(figure, ROOT / "images" / "mock_validation.png")
    results = ROOT / "benchmarks" / "results" / "mock_validation.json"
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(rows, indent=1))
    print(f"Written: {results}, images/mock_validation.png")


if __name__ == "__main__":
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--n_sims", type=COUNT, default=4)
    parser.add_argument("--pm_steps", type=COUNT, nargs="+", default=[10], help="one pm method per step count")
    parser.add_argument("--quijote", default=str(ROOT.parent / "shared" / "quijote-png-sample"),
                        help="the Quijote PNG slices (gnuplot colormap, 1000 Mpc/h, 512^2, 5 grid slices each)")
    main(parser.parse_args())
