"""A conditional run against the real fields at each test cosmology: fidelity per point, the P(k)
response to the parameters and its derivatives at the fiducial point.

    python evaluate/cosmology.py RUN [--test train_data/conditional/test.npz] [--num_samples 96]
                                     [--sampler unipc --steps 20 --grid log] [--guidance 1] [--out RUN/cosmology]

Each test point is the set of test fields that share the run's parameter values. At every point the
run samples --num_samples fields (cosmodiff.sampling, as generate_images.py), all points with the same seed, so
they share their noise (common random numbers) and differences between points are the model's
response, not noise. Per point: the scorecard (every statistic over that point's floor, drawn by
simulation when the test set carries sim_index) and its worst, MAFD next to its floor, the pixel-PDF
KS distance, Minkowski functionals and seams (cosmodiff.stats.compare). The response P(k; theta) / P(k; fiducial)
is compared at every point, generated against real; d ln P / d theta at the fiducial point by central
differences, on the paired derivative simulations of --derivatives (default: derivatives.npz next to
--test) and on samples at the same parameters, and from them the Fisher forecast of one field's ln P(k)
(marginal sigma of each parameter, k from 2 k_F to k_Nyq / 2), each side with its own covariance of
ln P(k) pooled over the derivative points. Writes cosmology.json, cosmology.md,
conditional_response.png and conditional_derivatives.png to --out (and --figures).
"""
import argparse
import shutil
from pathlib import Path

import numpy as np

from cosmodiff import stats
from cosmodiff.checkpoint import CheckpointError, read_config
from cosmodiff.cli import ArgumentParser, COUNT, GUIDANCE, INDEX, exit_on, finite_json, writable_folder
from cosmodiff.condition import DEFAULT_GUIDANCE, fields_by_point
from cosmodiff.diffusion import DEFAULT_SAMPLER, GRIDS, SAMPLERS
from cosmodiff.fields import FieldError, load_fields
from cosmodiff.inference.likelihoods import fisher_forecast, pooled_covariance
from cosmodiff.launch import accelerated
from cosmodiff.parameters import QUIJOTE_FIDUCIAL
from cosmodiff.sampling import sample_fields, samples_match
from cosmodiff.repository import ROOT


def label(names, point):
    return ",".join(f"{name}={value:g}" for name, value in zip(names, point))


def generated_at(args, accelerator, run_dir, names, point, out):
    """--num_samples fields sampled at one parameter point (reused when already there)."""
    folder = out / "samples" / label(names, point).replace(",", "_")
    wanted = dict(num_samples=args.num_samples, sampler=args.sampler, steps=args.steps, guidance=args.guidance,
                  grid=args.grid or SAMPLERS[args.sampler].grid, seed=args.seed, step=read_config(run_dir)["step"])
    if not samples_match(folder, wanted):
        sample_fields(run_dir, folder, accelerator, num_samples=args.num_samples, params=label(names, point),
                      guidance=args.guidance, seed=args.seed, sampler=args.sampler, steps=args.steps, grid=args.grid,
                      batch_size=args.batch_size)
    return np.load(folder / "samples.npy")


def fidelity_rows(args, accelerator, run_dir, names, test, out):
    """Per test point: the comparison report's headline numbers and both mean spectra."""
    rows = []
    for point, indices in fields_by_point(test, names, args.test).items():
        real = test.fields[indices]
        generated = generated_at(args, accelerator, run_dir, names, point, out)
        report = stats.compare(real, generated, test.box_size, progress=False,
                               real_sims=None if test.sim_index is None else test.sim_index[indices])
        row = dict(point=dict(zip(names, point)), n_real=len(real), n_generated=len(generated),
                   mafd=report["mafd"], floor=report["floor"]["median"], mafd_over_floor=report["mafd_over_floor"],
                   pixel_pdf_ks=report["pixel_pdf"]["distance"],
                   minkowski_within_1sigma={name: report["minkowski"][name]["fraction_within_1sigma"]
                                            for name in ("v0", "v1", "v2")},
                   seam_median=report["seam"]["generated"]["median"],
                   over_floor={name: row["over_floor"] for name, row in report["scorecard"]["statistics"].items()},
                   worst=report["scorecard"]["worst"], k=report["power_spectrum"]["k"],
                   pk_real=report["power_spectrum"]["real_mean"],
                   pk_generated=report["power_spectrum"]["generated_mean"])
        rows.append(row)
        print(f"{label(names, point)}: MAFD {100 * row['mafd']:.2f}%, floor {100 * row['floor']:.2f}%, "
              f"x{row['mafd_over_floor']:.2f}; worst {row['worst']['statistic']} x{row['worst']['over_floor']:.2f}",
              flush=True)
    return rows


def log_spectra(fields, box_size):
    k, pk, _ = stats.power_spectrum(fields, box_size)
    return k, np.log(pk)


def derivatives(args, accelerator, run_dir, names, out):
    """d ln P / d theta at the fiducial point, real (paired derivative simulations) and generated (samples at
    the same parameters with common noise), per parameter the derivative set varies; and the Fisher
    forecast of one field's ln P(k) over the same k band from each (fisher_of; None unless every
    parameter has its pair)."""
    path = Path(args.derivatives) if args.derivatives else Path(args.test).with_name("derivatives.npz")
    if not path.exists():
        print(f"No derivative simulations at {path}: derivatives skipped.")
        return {}, None
    fields = load_fields(path)
    points = fields_by_point(fields, names, path)
    fiducial = {name: QUIJOTE_FIDUCIAL.get(name) for name in names}
    k_fundamental = 2 * np.pi / fields.box_size
    nyquist = np.pi * fields.fields.shape[-1] / fields.box_size
    result, spectra = {}, {"real": [], "generated": []}
    for varied in names:
        pair = sorted((point for point in points if all(np.isclose(value, fiducial[name])
                                                       for name, value in zip(names, point) if name != varied)),
                      key=lambda point: point[names.index(varied)])
        if len(pair) != 2:
            continue
        step = pair[1][names.index(varied)] - pair[0][names.index(varied)]
        k, low_real = log_spectra(fields.fields[points[pair[0]]], fields.box_size)
        _, high_real = log_spectra(fields.fields[points[pair[1]]], fields.box_size)
        _, low_generated = log_spectra(generated_at(args, accelerator, run_dir, names, pair[0], out), fields.box_size)
        _, high_generated = log_spectra(generated_at(args, accelerator, run_dir, names, pair[1], out), fields.box_size)
        spectra["real"] += [low_real, high_real]
        spectra["generated"] += [low_generated, high_generated]
        # ln of the mean spectrum, as the simulations' derivative is defined
        real = (np.log(np.exp(high_real).mean(axis=0)) - np.log(np.exp(low_real).mean(axis=0))) / step
        generated = (np.log(np.exp(high_generated).mean(axis=0)) - np.log(np.exp(low_generated).mean(axis=0))) / step
        band = (k >= 2 * k_fundamental) & (k <= nyquist / 2)
        relative = np.abs(generated[band] / real[band] - 1)
        result[varied] = dict(k=k.tolist(), real=real.tolist(), generated=generated.tolist(), step=step,
                              band=[2 * k_fundamental, nyquist / 2], median_relative_error=float(np.median(relative)),
                              max_relative_error=float(relative.max()))
        print(f"d ln P / d {varied}: generated within {100 * np.median(relative):.1f}% (median), "
              f"{100 * relative.max():.1f}% (max) of the simulations' for k in [2 k_F, k_Nyq / 2]", flush=True)
    return result, (fisher_of(result, names, spectra, band) if len(result) == len(names) else None)


def fisher_of(result, names, spectra, band):
    """The Fisher forecast of one field's ln P(k) over the derivatives' k band, real against generated:
    each side's derivatives with its own covariance of ln P(k), pooled over the derivative points (the
    fewest fields at a point count as its realisations); None where a side has too few fields."""
    forecast = {}
    for side in ("real", "generated"):
        derivative = np.array([np.asarray(result[name][side])[band] for name in names])
        groups = [spectrum[:, band] for spectrum in spectra[side]]
        realisations = min(len(group) for group in groups)
        if realisations < band.sum() + 3:
            print(f"Fisher forecast skipped: {realisations} {side} fields at a derivative point estimate no "
                  f"covariance of {band.sum()} k bins", flush=True)
            return None
        fisher, sigmas = fisher_forecast(derivative, pooled_covariance(groups), realisations)
        forecast[side] = dict(fisher=fisher.tolist(), sigma=dict(zip(names, sigmas.tolist())))
    forecast["sigma_ratio"] = {name: forecast["generated"]["sigma"][name] / forecast["real"]["sigma"][name]
                               for name in names}
    forecast["k_band"] = result[names[0]]["band"]
    print("Fisher sigma from one field's ln P(k), generated / simulations: " + ", ".join(
        f"{name} {ratio:.2f}" for name, ratio in forecast["sigma_ratio"].items()), flush=True)
    return forecast


def plot_response(rows, names, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fiducial = min(rows, key=lambda row: sum((row["point"][name] - QUIJOTE_FIDUCIAL.get(name, 0)) ** 2 for name in names))
    columns = 4
    figure, axes = plt.subplots(int(np.ceil(len(rows) / columns)), columns, figsize=(3.2 * columns, 2.6 * np.ceil(len(rows) / columns)),
                                squeeze=False, sharex=True)
    for ax in axes.ravel()[len(rows):]:
        ax.axis("off")
    for ax, row in zip(axes.ravel(), rows):
        ax.plot(row["k"], np.divide(row["pk_real"], fiducial["pk_real"]), color="C0", label="real")
        ax.plot(row["k"], np.divide(row["pk_generated"], fiducial["pk_generated"]), color="C3", ls="--", label="generated")
        ax.set(xscale="log", yscale="log", title=label(names, row["point"].values()).replace(",", ", "))
        ax.title.set_fontsize(8)
    axes[0, 0].legend(fontsize=7)
    for ax in axes[:, 0]:
        ax.set_ylabel("P(k) / P(k; fiducial)")
    for ax in axes[-1]:
        ax.set_xlabel("k [h/Mpc]")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_derivatives(result, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(result), figsize=(4.5 * len(result), 3.4), squeeze=False)
    for ax, (name, values) in zip(axes[0], result.items()):
        ax.plot(values["k"], values["real"], color="C0", label="simulations (paired)")
        ax.plot(values["k"], values["generated"], color="C3", ls="--", label="generated")
        ax.axvspan(*values["band"], color="0.9", zorder=0, label="target band")
        ax.set(xscale="log", xlabel="k [h/Mpc]", ylabel=f"d ln P / d {name}",
               title=f"{name}: median error {100 * values['median_relative_error']:.0f}%")
        ax.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def scorecard_summary(rows):
    """Per statistic of the scorecard: its distance over floor's median and worst over the test points."""
    return {name: dict(median=float(np.median([row["over_floor"][name] for row in rows])),
                       worst=float(np.max([row["over_floor"][name] for row in rows])))
            for name in rows[0]["over_floor"]}


def markdown(rows, names):
    header = (f"| {' | '.join(names)} | real / generated | MAFD | floor | MAFD / floor | bispectrum / floor | "
              "PDF / floor | peaks / floor | worst / floor | PDF KS | Minkowski V0/V1/V2 in 1-sigma | seam |")
    lines = [header, "|" + " --- |" * (header.count("|") - 1)]
    for row in rows:
        minkowski = " / ".join(f"{100 * value:.0f}%" for value in row["minkowski_within_1sigma"].values())
        values = " | ".join(f"{row['point'][name]:g}" for name in names)
        lines.append(f"| {values} | {row['n_real']} / "
                     f"{row['n_generated']} | {100 * row['mafd']:.2f}% | {100 * row['floor']:.2f}% | "
                     f"{row['mafd_over_floor']:.2f} | {row['over_floor']['bispectrum']:.2f} | "
                     f"{row['over_floor']['pixel_pdf']:.2f} | {row['over_floor']['peaks']:.2f} | "
                     f"{row['worst']['over_floor']:.2f} ({row['worst']['statistic']}) | {row['pixel_pdf_ks']:.3f} | "
                     f"{minkowski} | {row['seam_median']:.3f} |")
    return "\n".join(lines)


def main(args):
    run_dir = Path(args.run)
    config = read_config(run_dir)
    if config.get("condition") is None:
        raise CheckpointError(f"{run_dir}: an unconditional run; evaluate/cosmology.py needs one trained with --condition")
    names = config["condition"]["names"]
    test = load_fields(args.test)
    out = Path(args.out) if args.out else run_dir / "cosmology"
    writable_folder(out, "--out")
    out.mkdir(parents=True, exist_ok=True)
    with accelerated() as accelerator:
        rows = fidelity_rows(args, accelerator, run_dir, names, test, out)
        derivative, fisher = derivatives(args, accelerator, run_dir, names, out)
    ratios = [row["mafd_over_floor"] for row in rows]
    summary = dict(run=str(run_dir), step=config["step"], sampler=args.sampler, steps=args.steps, grid=args.grid,
                   guidance=args.guidance, num_samples=args.num_samples, points=rows, derivatives=derivative, fisher=fisher,
                   median_mafd_over_floor=float(np.median(ratios)), max_mafd_over_floor=float(np.max(ratios)),
                   scorecard=scorecard_summary(rows))
    (out / "cosmology.json").write_text(finite_json(summary, f"the evaluation of {run_dir}"))
    table = markdown(rows, names)
    (out / "cosmology.md").write_text(table + "\n")
    plot_response(rows, names, out / "conditional_response.png")
    figures = [out / "conditional_response.png"]
    if derivative:
        plot_derivatives(derivative, out / "conditional_derivatives.png")
        figures.append(out / "conditional_derivatives.png")
    if args.figures:
        Path(args.figures).mkdir(parents=True, exist_ok=True)
        for figure in figures:
            shutil.copy(figure, Path(args.figures) / figure.name)
    print(table)
    print(f"MAFD / floor over {len(rows)} points: median {np.median(ratios):.2f}, max {np.max(ratios):.2f}; "
          f"bispectrum / floor: median {summary['scorecard']['bispectrum']['median']:.2f}, "
          f"max {summary['scorecard']['bispectrum']['worst']:.2f}")
    print(f"Written: {out / 'cosmology.json'}, cosmology.md and figures")


def build_parser():
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a conditional run folder")
    parser.add_argument("--test", default=str(ROOT / "train_data" / "conditional" / "test.npz"),
                        help="real fields carrying the run's parameters")
    parser.add_argument("--derivatives", default=None, help="paired simulations at fiducial -/+ a step per parameter")
    parser.add_argument("--num_samples", type=COUNT, default=96, help="generated fields per point")
    parser.add_argument("--sampler", default=DEFAULT_SAMPLER)
    parser.add_argument("--steps", type=COUNT, default=SAMPLERS[DEFAULT_SAMPLER].default_steps,
                        help="sampler steps (default: the default sampler's)")
    parser.add_argument("--grid", default=None, choices=GRIDS[:-1], help="the sampler's noise-level grid (default: its own)")
    parser.add_argument("--guidance", type=GUIDANCE, default=DEFAULT_GUIDANCE, help="classifier-free guidance weight W")
    parser.add_argument("--seed", type=INDEX, default=0)
    parser.add_argument("--batch_size", type=COUNT, default=32)
    parser.add_argument("--out", default=None, help="default: RUN/cosmology")
    parser.add_argument("--figures", default=None, help="also copy the figures here, e.g. images")
    return parser


if __name__ == "__main__":
    exit_on((CheckpointError, FieldError, ValueError), main, build_parser().parse_args())
