"""DiT designs against the UNet at equal training CPU-minutes: the table of DiT/README.md and the figure
of each design's P(k) ratio to the real fields.

    python benchmarks/dit_designs.py [--runs "unet=unet-vp-500 dit-xs/4=dit-xs4-conv16-1800 ..."] \
        [--sampler dpm++-20] [--figure images/dit_designs_pk_ratio.png]

Each run is a benchmarks/fidelity.py experiment folder under benchmarks/out (train it with the
command in DiT/README.md first); its samples-<sampler>/ holds fidelity.json and the evaluation
report. Reports MAFD, MAFD/floor, its ratio to the first run's, the seam score (real 0.98), the
largest power error near the patch grid's frequency and harmonics, training CPU-minutes, parameters and images/s.
"""
import argparse
import json
from pathlib import Path

import numpy as np

from cosmodiff.checkpoint import read_config, read_log

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"
DEFAULT_RUNS = "unet=unet-vp-500 dit-xs/4=dit-xs4-conv16-1800 dit-xs/2=dit-xs2-conv16-370"


def patch_band(report, patch_size):
    """The largest |P ratio - 1| within 10% of the patch grid's fundamental k = 2 pi / (patch size in Mpc/h)
    and its harmonics below Nyquist (0 for a model without patches)."""
    if not patch_size:
        return 0.0
    spectrum, settings = report["power_spectrum"], report["settings"]
    k, ratio = np.asarray(spectrum["k"]), np.asarray(spectrum["ratio"])
    k_patch = 2 * np.pi * settings["image_size"] / (patch_size * settings["box_size"])
    near = np.zeros(len(k), bool)
    for harmonic in np.arange(k_patch, k.max() + 1e-9, k_patch):
        near |= np.abs(k - harmonic) <= 0.1 * harmonic
    return float(np.abs(ratio[near] - 1).max()) if near.any() else 0.0


def row(label, folder, sampler):
    run = folder / "results" / "run"
    config, fidelity = read_config(run), json.loads((folder / f"samples-{sampler}" / "fidelity.json").read_text())
    report = json.loads((folder / f"samples-{sampler}" / "evaluation" / "report.json").read_text())
    rates = [entry["images_per_s"] for entry in read_log(run)]
    return dict(label=label, folder=folder.name, mafd=fidelity["mafd"], floor=fidelity["floor"]["median"], mafd_over_floor=fidelity["mafd_over_floor"],
                seam=fidelity["seam_median"], patch_excess=patch_band(report, config["model"]["kwargs"].get("patch_size")),
                cpu_minutes=fidelity["train_cpu_minutes"], steps=config["step"], parameters=config["n_parameters"],
                images_per_s=len(rates) / sum(1 / rate for rate in rates),
                k=report["power_spectrum"]["k"], ratio=report["power_spectrum"]["ratio"])


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(6, 3.8))
    ax.axhline(1, color="k", lw=0.8)
    for entry in rows:
        ax.plot(entry["k"], entry["ratio"], label=f"{entry['label']} ({100 * entry['mafd']:.1f}%)")
    ax.set(xscale="log", xlabel="k [h/Mpc]", ylabel="P generated / P real",
           title=f"equal training CPU-minutes (~{rows[0]['cpu_minutes']:.0f}), DPM-Solver++ 20")
    ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(args):
    rows = [row(label, OUT / folder, args.sampler) for label, folder in (item.split("=") for item in args.runs.split())]
    reference = rows[0]["mafd"]
    lines = ["| model | steps | CPU-min | parameters | images/s (1 thread, shared) | MAFD | MAFD / floor | vs first | "
             "seam (real 0.98) | max abs(P ratio - 1) at patch harmonics |", "|" + " --- |" * 10]
    lines += [f"| {r['label']} | {r['steps']} | {r['cpu_minutes']:.1f} | {r['parameters'] / 1e6:.2f} M | "
              f"{r['images_per_s']:.1f} | {100 * r['mafd']:.1f}% | {r['mafd_over_floor']:.1f} | "
              f"{r['mafd'] / reference:.2f}x | {r['seam']:.3f} | {100 * r['patch_excess']:.0f}% |" for r in rows]
    table = "\n".join(lines)
    (OUT / "dit_designs.md").write_text(table + "\n")
    plot(rows, args.figure)
    print(table)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default=DEFAULT_RUNS, help="label=folder pairs; the first is the reference")
    parser.add_argument("--sampler", default="dpm++-20", help="the samples-<sampler> folder to compare")
    parser.add_argument("--figure", default=str(ROOT / "images" / "dit_designs_pk_ratio.png"))
    main(parser.parse_args())
