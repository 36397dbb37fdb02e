"""Matplotlib figures of field sets and evaluation reports, written as PNG files.

Figures are matplotlib `Figure` objects, not pyplot's: the library never switches the backend a
notebook or script chose, and a figure it draws is freed with its last reference."""
import numpy as np
from matplotlib.figure import Figure

from cosmodiff.stats import log_density


def subplots(nrows=1, ncols=1, figsize=None, **kwargs):
    """A figure and its axes, as pyplot.subplots gives them, outside pyplot."""
    figure = Figure(figsize=figsize)
    return figure, figure.subplots(nrows, ncols, **kwargs)


def save(figure, path):
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def field_grid(fields, path, columns=8, cmap="gnuplot", title=None):
    """A grid of fields as log density, on one colour scale."""
    logs = log_density(fields)
    low, high = np.percentile(logs, [1, 99.5])
    rows = int(np.ceil(len(fields) / columns))
    figure, axes = subplots(rows, columns, figsize=(1.6 * columns, 1.6 * rows + (0.4 if title else 0)), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, field in zip(axes.ravel(), logs):
        ax.imshow(field, cmap=cmap, vmin=low, vmax=high, interpolation="nearest")
    if title:
        figure.suptitle(title)
    save(figure, path)


def side_by_side(sets, path, per_set=4, cmap="gnuplot"):
    """Rows of fields from several named sets (name -> fields), each row on its own colour scale."""
    figure, axes = subplots(len(sets), per_set, figsize=(2.2 * per_set, 2.4 * len(sets)), squeeze=False)
    for row, (name, fields) in zip(axes, sets.items()):
        logs = log_density(fields[:per_set])
        low, high = np.percentile(logs, [1, 99.5])
        for ax, field in zip(row, logs):
            ax.imshow(field, cmap=cmap, vmin=low, vmax=high, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(name)
    save(figure, path)


def nyquist(report):
    """k_Nyquist = pi N / L of the compared fields, h/Mpc."""
    return np.pi * report["settings"]["image_size"] / report["settings"]["box_size"]


def real_band_and_generated(ax, x, statistic):
    """The real set's mean with its 1-sigma band and the generated set's mean, of one report entry."""
    mean, std = np.asarray(statistic["real_mean"]), np.asarray(statistic["real_std"])
    ax.fill_between(x, mean - std, mean + std, color="C0", alpha=0.25)
    ax.plot(x, mean, color="C0", label="real")
    ax.plot(x, statistic["generated_mean"], color="C3", label="generated")


def power_spectra(report, path, labels=("real", "generated")):
    """Mean P(k) of both sets with 1-sigma bands, log-log."""
    ps = report["power_spectrum"]
    k = np.asarray(ps["k"])
    figure, ax = subplots(figsize=(6, 4.5))
    for key, label, colour in (("real", labels[0], "C0"), ("generated", labels[1], "C3")):
        mean, std = np.asarray(ps[f"{key}_mean"]), np.asarray(ps[f"{key}_std"])
        ax.loglog(k, mean, color=colour, label=label)
        ax.fill_between(k, np.maximum(mean - std, mean * 1e-3), mean + std, color=colour, alpha=0.25)
    ax.axvline(nyquist(report), color="gray", ls=":", label="Nyquist")
    ax.set_xlabel("k [h/Mpc]")
    ax.set_ylabel("P(k) [(Mpc/h)$^2$]")
    ax.set_title(f"MAFD {100 * report['mafd']:.2f}%  (floor {100 * report['floor']['median']:.2f}%)")
    ax.legend()
    save(figure, path)


def power_ratio(report, path):
    """<P_gen>/<P_real> per k with the sample-variance floor's 5-95% band."""
    ps = report["power_spectrum"]
    k = np.asarray(ps["k"])
    figure, ax = subplots(figsize=(6, 4))
    ax.fill_between(k, ps["floor_ratio_low"], ps["floor_ratio_high"], color="gray", alpha=0.3,
                    label="real vs real, 5-95%")
    ax.semilogx(k, ps["ratio"], color="C3", label="generated / real")
    ax.axhline(1, color="k", lw=0.8)
    ax.axvline(nyquist(report), color="gray", ls=":")
    ax.set_xlabel("k [h/Mpc]")
    ax.set_ylabel("P ratio")
    ax.legend()
    save(figure, path)


def periodic_tiling(field, path, cmap="gnuplot"):
    """One field tiled 3x3 with its seams marked: a non-periodic field shows lines."""
    logs = log_density(field[None])[0]
    side = logs.shape[-1]
    figure, ax = subplots(figsize=(6, 6))
    ax.imshow(np.tile(logs, (3, 3)), cmap=cmap, interpolation="nearest",
              vmin=np.percentile(logs, 1), vmax=np.percentile(logs, 99.5))
    for position in (side - 0.5, 2 * side - 0.5):
        ax.axhline(position, color="w", lw=0.6, ls="--")
        ax.axvline(position, color="w", lw=0.6, ls="--")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title("periodic tiling (seams dashed)")
    save(figure, path)


def pixel_pdf(report, path):
    pdf = report["pixel_pdf"]
    edges = np.asarray(pdf["edges"])
    centres = 0.5 * (edges[1:] + edges[:-1])
    figure, ax = subplots(figsize=(6, 4))
    real_band_and_generated(ax, centres, pdf)
    ax.set(xlabel="ln(1 + delta)", ylabel="pixel PDF", title=f"KS distance {pdf['distance']:.3f}")
    ax.legend()
    save(figure, path)


def minkowski(report, path):
    """V0, V1, V2 against threshold, real with 1-sigma bands."""
    mink = report["minkowski"]
    thresholds = np.asarray(mink["thresholds"])
    figure, axes = subplots(1, 3, figsize=(13, 3.8))
    units = {"v0": "area fraction", "v1": "boundary length per area [h/Mpc]", "v2": "Euler characteristic per area [(h/Mpc)$^2$]"}
    for ax, name in zip(axes, ("v0", "v1", "v2")):
        real_band_and_generated(ax, thresholds, mink[name])
        ax.set_xlabel("threshold ln(1 + delta)")
        ax.set_ylabel(units[name])
    axes[0].legend()
    save(figure, path)


def peaks(report, path):
    """Peak counts per unit area against height, real with its 1-sigma band."""
    section = report["peaks"]
    edges = np.asarray(section["edges"])
    figure, ax = subplots(figsize=(6, 4))
    real_band_and_generated(ax, 0.5 * (edges[1:] + edges[:-1]), section)
    ax.set(xlabel="peak height ln(1 + delta)", ylabel="peaks per area [(h/Mpc)$^2$]", yscale="symlog",
           title=f"peak counts: {100 * section['fraction_within_1sigma']:.0f}% of bins within real 1-sigma")
    ax.legend()
    save(figure, path)


def bispectrum(report, path):
    """The reduced bispectrum Q of both sets per triangle configuration (k1, k2, k3 in units of the fundamental)."""
    section = report["bispectrum"]
    names = [f"{name} {k1:g},{k2:g},{k3:g}" for name, k1, k2, k3 in section["triangles"]]
    positions = np.arange(len(names))
    figure, ax = subplots(figsize=(max(6, 0.5 * len(names)), 4.4))
    ax.plot(positions, section["q_real"], "o", color="C0", label="real")
    ax.plot(positions, section["q_generated"], "x", color="C3", label="generated")
    ax.set_xticks(positions, names, rotation=60, ha="right", fontsize=7)
    ax.set(ylabel="reduced bispectrum Q", title="bispectrum per triangle configuration")
    ax.legend()
    save(figure, path)


def power_correlation(report, path):
    """Both sets' P(k) correlation matrices over the MAFD's bins, and their difference."""
    ps = report["power_spectrum"]
    real, generated = np.asarray(ps["real_correlation"]), np.asarray(ps["generated_correlation"])
    figure, axes = subplots(1, 3, figsize=(13, 4))
    for ax, matrix, title in zip(axes, (real, generated, generated - real), ("real", "generated", "generated - real")):
        image = ax.imshow(matrix, cmap="RdBu_r", vmin=-1, vmax=1, origin="lower")
        ax.set(xlabel="k bin", ylabel="k bin", title=f"P(k) correlation: {title}")
    figure.colorbar(image, ax=axes[-1])
    save(figure, path)


# The evaluation report's figures, by file name: each draws sections of stats.compare's report.
FIGURES = {"power_spectra_comparison.png": power_spectra, "power_spectrum_ratio.png": power_ratio,
           "power_spectrum_correlation.png": power_correlation, "pixel_pdf.png": pixel_pdf,
           "minkowski.png": minkowski, "peaks.png": peaks, "bispectrum.png": bispectrum}


def validation(rows, path):
    """The in-training fidelity check: MAFD over its floor against step, from log rows that carry it."""
    checked = [row for row in rows if np.isfinite(row.get("val_mafd", np.nan))]
    steps = [row["step"] for row in checked]
    figure, ax = subplots(figsize=(5, 3.4))
    ax.plot(steps, [row["val_mafd"] / row["val_floor"] for row in checked], "o-", color="C3")
    ax.axhline(1, color="k", lw=0.8, ls="--", label="floor (real vs real)")
    ax.set(xlabel="training step", ylabel="MAFD / floor", yscale="log",
           title=f"P(k) fidelity while training ({'%.0f' % (100 * checked[-1]['val_mafd'])}% at step {steps[-1]})")
    ax.legend(fontsize=8)
    save(figure, path)


def error_budget(k, mask, real, power, fields, real_fields, path):
    """The error budget's figure: P(k) ratios of each solve to the real set and of the sampler to the
    reference, in delta and in log space, and the upper tail of the delta PDF."""
    figure, axes = subplots(1, 3, figsize=(15, 4))
    for ax, space in zip(axes[:2], ("delta", "log")):
        real_mean = real[space].mean(axis=0)
        for name, spectra in power.items():
            ax.semilogx(k[mask], (spectra[space].mean(axis=0) / real_mean)[mask], label=f"{name} / real")
        ax.semilogx(k[mask], (power["sampler"][space].mean(axis=0) / power["reference"][space].mean(axis=0))[mask],
                    "k--", label="sampler / reference")
        ax.axhline(1, color="gray", lw=0.8)
        ax.set(xlabel="k [h/Mpc]", ylabel="P ratio", title=f"P(k) of {'delta' if space == 'delta' else 'ln(1 + delta)'}")
        ax.legend(fontsize=8)
    edges = np.linspace(0, max(float(np.quantile(real_fields / real_fields.mean(axis=(1, 2), keepdims=True), 0.9999)), 2), 60)
    for name, values in {"real": real_fields, **fields}.items():
        density = values / values.mean(axis=(1, 2), keepdims=True)
        survival = [(density > edge).mean() for edge in edges]
        axes[2].semilogy(edges, survival, label=name)
    axes[2].set(xlabel="1 + delta", ylabel="fraction of pixels above", title="upper tail of the density PDF")
    axes[2].legend(fontsize=8)
    save(figure, path)
