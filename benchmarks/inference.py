"""Field-level inference against the power spectrum alone: bias, interval widths, coverage and cost on
held-out test fields of the conditional split.

    python benchmarks/inference.py [--run benchmarks/out/conditional/results/run] [--per_point 3] \
        [--grid 21] [--n_levels 8] [--n_draws 1] [--out benchmarks/out/inference] [--figures images]

Takes --per_point fields at each test cosmology of train_data/conditional/test.npz, each from a
different simulation (10 points: 30 fields), runs evaluate/infer.py on them, and reports per method
and parameter: the mean bias and mean |bias| in posterior sigmas, the mean 68% and 95% interval
widths, the coverage of both intervals (the fraction of fields whose true value falls inside) and
seconds per field. Writes --out/inference.json and .md,
inference_coverage.png (expected against empirical coverage of equal-tailed intervals) and
inference_example.png (the first fields' contours), copied to --figures.
"""
import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from cosmodiff.checkpoint import read_config
from cosmodiff.cli import ArgumentParser, COUNT
from cosmodiff.condition import fields_by_point
from cosmodiff.fields import load_fields

ROOT = Path(__file__).resolve().parents[1]
METHODS = {"elbo": "diffusion ELBO", "power_spectrum": "P(k) Gaussian likelihood"}


def held_out_fields(test, names, per_point):
    """Indices of per_point fields at every test point, each from its own simulation (the first slab)."""
    chosen = []
    for indices in fields_by_point(test, names, "the conditional test split").values():
        first_slabs = {}
        for index in indices:
            first_slabs.setdefault(test.sim_index[index], index)
        chosen += list(first_slabs.values())[:per_point]
    return chosen


def method_rows(results, names):
    rows = []
    for method in METHODS:
        for name in names:
            values = [result[method][name] for result in results]
            truth = np.array([v["truth"] for v in values])
            mean, std = np.array([v["mean"] for v in values]), np.array([v["std"] for v in values])
            widths = {level: np.array([v[f"interval_{level}"][1] - v[f"interval_{level}"][0] for v in values])
                      for level in (68, 95)}
            inside = {level: np.mean([v[f"interval_{level}"][0] <= v["truth"] <= v[f"interval_{level}"][1]
                                      for v in values]) for level in (68, 95)}
            rows.append(dict(method=method, parameter=name, bias=float(np.mean(mean - truth)),
                             relative_bias=float(np.mean(np.abs(mean - truth) / truth)),
                             bias_in_sigma=float(np.mean(np.abs(mean - truth) / std)),
                             width_68=float(widths[68].mean()), width_95=float(widths[95].mean()),
                             coverage_68=float(inside[68]), coverage_95=float(inside[95]),
                             seconds_per_field=float(results[0][method]["seconds_per_field"]),
                             ranks=[v["truth_rank"] for v in values]))
    return rows


def plot_coverage(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = np.linspace(0.02, 0.98, 49)
    figure, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.plot([0, 1], [0, 1], color="k", lw=0.8)
    for row, style in zip(rows, ("-", "--", "-", "--")):
        ranks = np.asarray(row["ranks"])
        empirical = [np.mean(np.abs(ranks - 0.5) <= level / 2) for level in levels]
        ax.plot(levels, empirical, ls=style, color="C3" if row["method"] == "elbo" else "C0",
                label=f"{METHODS[row['method']]}, {row['parameter']}")
    ax.set(xlabel="credible level (equal-tailed)", ylabel="fraction of fields whose truth is inside",
           title=f"coverage, {len(rows[0]['ranks'])} held-out fields")
    ax.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(args):
    test_path = ROOT / "train_data" / "conditional" / "test.npz"
    test = load_fields(test_path)
    chosen = held_out_fields(test, read_config(args.run)["condition"]["names"], args.per_point)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, ROOT / "evaluate" / "infer.py", test_path, "--checkpoint", args.run, "--indices",
               ",".join(map(str, chosen)), "--grid", args.grid, "--n_levels", args.n_levels, "--n_draws", args.n_draws,
               "--out", out]
    print("$", " ".join(map(str, command)), flush=True)
    subprocess.run(list(map(str, command)), cwd=ROOT, check=True)
    record = json.loads((out / "posterior.json").read_text())
    names = record["settings"]["names"]
    rows = method_rows(record["results"], names)
    lines = ["| method | parameter | mean bias | mean abs bias / truth | abs bias / sigma | 68% width | 95% width | "
             "68% coverage | 95% coverage | s / field |", "|" + " --- |" * 10]
    for row in rows:
        lines.append(f"| {METHODS[row['method']]} | {row['parameter']} | {row['bias']:+.4f} | "
                     f"{100 * row['relative_bias']:.1f}% | {row['bias_in_sigma']:.2f} | {row['width_68']:.4f} | "
                     f"{row['width_95']:.4f} | {100 * row['coverage_68']:.0f}% | {100 * row['coverage_95']:.0f}% | "
                     f"{row['seconds_per_field']:.1f} |")
    for name in names:
        by_method = {row["method"]: row for row in rows if row["parameter"] == name}
        lines.append(f"\n{name}: ELBO 68% interval {by_method['elbo']['width_68'] / by_method['power_spectrum']['width_68']:.2f}x "
                     "the power spectrum's width")
    table = "\n".join(lines)
    (out / "inference.md").write_text(table + "\n")
    (out / "inference.json").write_text(json.dumps(dict(settings=record["settings"], indices=chosen, rows=rows), indent=1))
    plot_coverage(rows, out / "inference_coverage.png")
    shutil.copy(out / "posterior.png", out / "inference_example.png")
    print(table)
    if args.figures:
        Path(args.figures).mkdir(parents=True, exist_ok=True)
        for name in ("inference_coverage.png", "inference_example.png"):
            shutil.copy(out / name, Path(args.figures) / name)


if __name__ == "__main__":
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default=str(ROOT / "benchmarks" / "out" / "conditional" / "results" / "run"))
    parser.add_argument("--per_point", type=COUNT, default=3)
    parser.add_argument("--grid", type=COUNT, default=21)
    parser.add_argument("--n_levels", type=COUNT, default=8)
    parser.add_argument("--n_draws", type=COUNT, default=1)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "inference"))
    parser.add_argument("--figures", default=None, help="copy the figures here, e.g. images")
    main(parser.parse_args())
