"""DiT designs against the UNet at equal training CPU-minutes: the table of DiT/README.md and the figure
of each design's P(k) ratio to the real fields.

    python benchmarks/dit_designs.py [--runs "unet=unet-vp-500 dit-xs/4=dit-xs4-conv16-1800 ..."] \
        [--sampler dpm++-20] [--figure images/dit_designs_pk_ratio.png]

Each run is a benchmarks/fidelity.py experiment folder under benchmarks/out (train it with the
command in DiT/README.md first); its samples-<sampler>/ holds fidelity.json and the evaluation
report. Reports MAFD, MAFD/floor, its ratio to the first run's, the seam score (real 0.98), the
P(k) ratio at the patch grid's frequency next to the first run's there (a patch
artefact is a step up at that k), training CPU-minutes, parameters and images/s.
"""
import argparse
import json

import numpy as np

from cosmodiff.checkpoint import log_images_per_s, read_config
from cosmodiff.cli import ArgumentParser
from cosmodiff.repository import ROOT

OUT = ROOT / "benchmarks" / "out"
DEFAULT_RUNS = "unet=unet-vp-500 dit-xs/4=dit-xs4-conv16-1800 dit-xs/2=dit-xs2-conv16-370"


def patch_frequency(config):
    """k (h/Mpc) of the patch grid, 2 pi / (patch side in Mpc/h); None for a model without patches."""
    patch_size = config["model"]["kwargs"].get("patch_size")
    return 2 * np.pi * config["image_size"] / (patch_size * config["box_size"]) if patch_size else None


def row(label, folder, sampler):
    run = folder / "results" / "run"
    config, fidelity = read_config(run), json.loads((folder / f"samples-{sampler}" / "fidelity.json").read_text())
    report = json.loads((folder / f"samples-{sampler}" / "evaluation" / "report.json").read_text())
    return dict(label=label, folder=folder.name, mafd=fidelity["mafd"], floor=fidelity["floor"]["median"], mafd_over_floor=fidelity["mafd_over_floor"],
                seam=fidelity["seam_median"], k_patch=patch_frequency(config),
                cpu_minutes=fidelity["train_cpu_minutes"], steps=config["step"], parameters=config["n_parameters"],
                images_per_s=log_images_per_s(run),
                k=report["power_spectrum"]["k"], ratio=report["power_spectrum"]["ratio"])


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(6, 3.8))
    ax.axhline(1, color="k", lw=0.8)
    for entry in rows:
        ax.plot(entry["k"], entry["ratio"],
                label=f"{entry['label']}: {entry['cpu_minutes']:.1f} CPU-min, MAFD {100 * entry['mafd']:.1f}%")
    ax.set(xscale="log", xlabel="k [h/Mpc]", ylabel="P generated / P real", title="P(k) ratio to the 384 test fields")
    ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(args):
    rows = [row(label, OUT / folder, args.sampler) for label, folder in (item.split("=") for item in args.runs.split())]
    reference = rows[0]["mafd"]
    lines = ["| model | steps | CPU-min | parameters | images/s (1 thread, shared) | MAFD | MAFD / floor | vs first | "
             "seam (real 0.98) | P ratio at the patch frequency k_p (first run's at k_p) |", "|" + " --- |" * 10]

    def at_patch(entry):
        if entry["k_patch"] is None:
            return "no patches"
        ratio, reference_ratio = (np.interp(entry["k_patch"], r["k"], r["ratio"]) for r in (entry, rows[0]))
        return f"{ratio:.2f} at {entry['k_patch']:.2f} h/Mpc ({reference_ratio:.2f})"
    lines += [f"| {r['label']} | {r['steps']} | {r['cpu_minutes']:.1f} | {r['parameters'] / 1e6:.2f} M | "
              f"{r['images_per_s']:.1f} | {100 * r['mafd']:.1f}% | {r['mafd_over_floor']:.1f} | "
              f"{r['mafd'] / reference:.2f}x | {r['seam']:.3f} | {at_patch(r)} |" for r in rows]
    table = "\n".join(lines)
    (OUT / "dit_designs.md").write_text(table + "\n")
    plot(rows, args.figure)
    print(table)


if __name__ == "__main__":
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default=DEFAULT_RUNS, help="label=folder pairs; the first is the reference")
    parser.add_argument("--sampler", default="dpm++-20", help="the samples-<sampler> folder to compare")
    parser.add_argument("--figure", default=str(ROOT / "images" / "dit_designs_pk_ratio.png"))
    main(parser.parse_args())
