"""Calibrated parameter inference: every method's posteriors on the held-out fields of the inference
split (simulations at cosmologies drawn from the prior), judged by coverage, SBC ranks and TARP, before
and after a correction fitted on the calibration split only.

    python benchmarks/inference.py [--run benchmarks/out/conditional/results/run] [--npe benchmarks/out/npe] \
        [--methods elbo,power_spectrum,npe] [--test_fields 128] [--calibration_fields 128] [--grid 41] \
        [--elbo_grid 13] [--n_levels 4] \
        [--out benchmarks/out/inference] [--results benchmarks/results/inference.json] [--figures images]

For each method and each file of train_data/inference (calibration.npz, test.npz; made on first use)
it runs evaluate/infer.py on the first --test_fields and --calibration_fields fields (finished files
are reused), on --grid points per parameter (--elbo_grid for the ELBO, whose cost is network
evaluations per grid point). NPE is trained first if --npe holds none (evaluate/train_npe.py on the
run's training data). Fields whose truth lies outside the prior box (the training set's hull, which
the split's ranges exceed by a little) are left out and counted. Per method and parameter on the
test fields: coverage of the 68% and 95% equal-tailed intervals, the KS p-value of the SBC ranks,
TARP's ATC and KS p-value (sbi, on 500 draws per posterior), mean |bias| / sigma, the 68% width
against the P(k) baseline's, and seconds per field. The same for "METHOD, corrected": each test
posterior shifted by the mean offset and tempered by the temperature fitted on the calibration fields
(cosmodiff/coverage.py); and for the ELBO, "sigma >= S": its sum over noise levels cut at the lowest
level S that scores the calibration fields' truths best. Writes --out/inference.json and .md, the
rows to --results, inference_coverage.png (expected coverage with 68% bootstrap bands per parameter,
and TARP) and inference_example.png (every method's posterior for the first test fields), copied to
--figures. --report prints the table of --results.
"""
import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

from cosmodiff.benchmark import run
from cosmodiff.cli import ArgumentParser, COUNT, Number
from cosmodiff.coverage import Correction, expected_coverage, log_density_at, sbc, tarp
from cosmodiff.inference import grid_draws, grid_posterior, summaries
from cosmodiff.mock import SPLIT_FOLDERS, ensure_split
from cosmodiff.npe import is_npe_run
from cosmodiff.infer import METHODS, plot
from cosmodiff.plots import plt, save
from cosmodiff.repository import ROOT

FILES = ("calibration", "test")
DRAWS = 500  # posterior draws per field for SBC and TARP
LEVELS = np.linspace(0.02, 0.98, 49)
GRID_POINTS = Number(int, 3)  # a grid posterior needs a point between the prior's edges


def posteriors(args, method, file, count):
    """The posterior.json of one method on one file of the inference split (made once)."""
    out = Path(args.out) / f"{method}-{file}"
    if (out / "posterior.json").exists():
        record = json.loads((out / "posterior.json").read_text())
        if len(record["results"]) == count:
            return record
    # the P(k) baseline needs no model: the NPE folder fixes its prior and training data, as NPE's
    runs = ["--checkpoint", args.run] if METHODS[method].needs == "checkpoint" else ["--npe", args.npe]
    grid = args.elbo_grid if method == "elbo" else args.grid
    run([sys.executable, ROOT / "evaluate" / "infer.py", SPLIT_FOLDERS["inference"] / f"{file}.npz", *runs,
         "--method", method, "--indices", ",".join(map(str, range(count))), "--grid", grid,
         "--n_levels", args.n_levels, "--out", out])
    return json.loads((out / "posterior.json").read_text())


def judged(method, record, grids, names, seconds):
    """A row per parameter of one method's test posteriors (grids: one array per field)."""
    axes = [np.asarray(axis) for axis in record["results"][0]["axes"]]
    truths = np.array([result["truth"] for result in record["results"]])
    samples = np.stack([grid_draws(grid, axes, DRAWS, seed=i) for i, grid in enumerate(grids)], axis=1)
    ranks, ks_p = sbc(samples, truths)
    coverage, low, high = expected_coverage(ranks, DRAWS, LEVELS)
    at = {level: int(np.argmin(np.abs(LEVELS - level))) for level in (0.68, 0.95)}
    ecp, alpha, atc, tarp_p = tarp(samples, truths)
    fields = [summaries(grid, axes, names) for grid in grids]
    rows = []
    for dim, name in enumerate(names):
        means = np.array([field[name]["mean"] for field in fields])
        stds = np.array([field[name]["std"] for field in fields])
        width_68 = np.mean([field[name]["interval_68"][1] - field[name]["interval_68"][0] for field in fields])
        rows.append(dict(method=method, parameter=name, fields=len(truths), coverage_68=float(coverage[dim, at[0.68]]),
                         coverage_95=float(coverage[dim, at[0.95]]), sbc_ks_p=float(ks_p[dim]),
                         tarp_atc=atc, tarp_ks_p=tarp_p, bias=float(np.mean(means - truths[:, dim])),
                         abs_bias_over_sigma=float(np.mean(np.abs(means - truths[:, dim]) / stds)),
                         width_68=float(width_68), seconds_per_field=seconds,
                         curve=dict(coverage=coverage[dim].tolist(), low=low[dim].tolist(), high=high[dim].tolist()),
                         tarp=dict(ecp=ecp.tolist(), alpha=alpha.tolist())))
    return rows


def inside_prior(record):
    """Positions of the fields whose truth lies inside the prior box the grids span (the training set's
    hull): no posterior on that box can cover a truth outside it."""
    box = np.array(list(record["settings"]["prior"].values()))
    return [i for i, result in enumerate(record["results"])
            if np.all((box[:, 0] <= result["truth"]) & (np.asarray(result["truth"]) <= box[:, 1]))]


def elbo_levels(args, file, positions, shape):
    """The ELBO's grid log-likelihoods per noise level (highest first) of the fields at positions of one
    file, (N, L, *shape), and the levels."""
    record = np.load(Path(args.out) / f"elbo-{file}" / "elbo_levels.npz")
    per_level = record["log_likelihood"][positions]
    return per_level.reshape(*per_level.shape[:2], *shape), record["sigmas"]


def chosen_levels(per_level, axes, truths):
    """How many of the ELBO's noise levels (highest first) score the calibration fields' truths best:
    dropping the lowest levels drops the smallest scales, where a model's response to the parameters
    may be least right. Returns it and every count's score."""
    scores = {kept: sum(log_density_at(log_like[:kept].sum(axis=0), axes, truth)
                        for log_like, truth in zip(per_level, truths))
              for kept in range(1, per_level.shape[1] + 1)}
    return max(scores, key=scores.get), scores


def markdown_table(rows):
    lines = ["| method | parameter | 68% coverage | 95% coverage | SBC KS p | TARP ATC | TARP KS p | abs bias / sigma | "
             "68% width | vs P(k) | s / field |", "|" + " --- |" * 11]
    for row in rows:
        versus = f"{row['width_68_vs_power_spectrum']:.2f}x" if row["width_68_vs_power_spectrum"] else "-"
        lines.append(f"| {row['method']} | {row['parameter']} | {100 * row['coverage_68']:.0f}% | "
                     f"{100 * row['coverage_95']:.0f}% | {row['sbc_ks_p']:.2g} | {row['tarp_atc']:+.3f} | "
                     f"{row['tarp_ks_p']:.2g} | {row['abs_bias_over_sigma']:.2f} | {row['width_68']:.4f} | {versus} | "
                     f"{row['seconds_per_field']:.2f} |")
    return "\n".join(lines)


def plot_coverage(rows, path):
    """A coverage panel per parameter and TARP's joint curve: a colour per method, a line style per variant."""
    parameters = list(dict.fromkeys(row["parameter"] for row in rows))
    figure, panels = plt.subplots(1, len(parameters) + 1, figsize=(4.6 * (len(parameters) + 1), 4.4))
    colours = {method.label: method.colour for method in METHODS.values()}
    for ax in panels:
        ax.plot([0, 1], [0, 1], color="k", lw=0.8)
    for row in rows:
        base, _, variant = row["method"].partition(", ")
        style = {"": "-", "corrected": "--"}.get(variant, ":")
        ax = panels[parameters.index(row["parameter"])]
        ax.plot(LEVELS, row["curve"]["coverage"], ls=style, color=colours[base], label=row["method"])
        ax.fill_between(LEVELS, row["curve"]["low"], row["curve"]["high"], color=colours[base], alpha=0.1)
        if row["parameter"] == parameters[0]:
            panels[-1].plot(row["tarp"]["alpha"], row["tarp"]["ecp"], ls=style, color=colours[base],
                            label=f"{row['method']} (ATC {row['tarp_atc']:+.3f}, KS p {row['tarp_ks_p']:.2g})")
    for ax, name in zip(panels, parameters):
        ax.set(xlabel="credible level (equal-tailed)", ylabel="fraction of test fields whose truth is inside",
               title=f"{name}: coverage, {rows[0]['fields']} test fields")
    panels[-1].set(xlabel="credibility level alpha", ylabel="expected coverage", title="TARP (joint)")
    for ax in panels:
        ax.legend(fontsize=6)
    save(figure, path)


def plot_examples(records, methods, path):
    """infer.py's figure for the first test fields, every method on its own grid."""
    merged = []
    for position in range(4):
        result = dict(records[methods[0]]["results"][position])
        for method in methods:
            other = records[method]["results"][position]
            result[method] = dict(other[method], axes=other["axes"])
        merged.append(result)
    plot(merged, records[methods[0]]["settings"]["names"], methods, path)


def main(args):
    if args.report:
        print(markdown_table(json.loads(Path(args.results).read_text())["rows"]))
        return
    methods = [method for method in args.methods.split(",") if method]
    ensure_split(SPLIT_FOLDERS["inference"], "inference")
    if "npe" in methods and not is_npe_run(args.npe):
        run([sys.executable, ROOT / "evaluate" / "train_npe.py", "--out", args.npe])
    counts = dict(calibration=args.calibration_fields, test=args.test_fields)
    records = {(method, file): posteriors(args, method, file, counts[file]) for method in methods for file in FILES}
    inside = {file: inside_prior(records[methods[0], file]) for file in FILES}
    for (method, file), record in records.items():
        record["results"] = [record["results"][i] for i in inside[file]]
    names = records[methods[0], "test"]["settings"]["names"]
    rows, corrections = [], {}
    for method in methods:
        test, calibration = records[method, "test"], records[method, "calibration"]
        log_likes = [np.asarray(result[method]["log_likelihood"]) for result in test["results"]]
        axes = [np.asarray(axis) for axis in test["results"][0]["axes"]]
        seconds = test["results"][0][method]["seconds_per_field"]
        rows += judged(METHODS[method].label, test, [grid_posterior(log_like, axes) for log_like in log_likes], names, seconds)
        correction = Correction.fit([result[method]["log_likelihood"] for result in calibration["results"]],
                                    axes, [result["truth"] for result in calibration["results"]])
        corrections[method] = correction.to_dict()
        rows += judged(f"{METHODS[method].label}, corrected", test, [correction(log_like, axes) for log_like in log_likes],
                       names, seconds)
        if method == "elbo":
            shape = log_likes[0].shape
            calibration_levels, sigmas = elbo_levels(args, "calibration", inside["calibration"], shape)
            kept, scores = chosen_levels(calibration_levels, axes, [result["truth"] for result in calibration["results"]])
            corrections["elbo_levels"] = dict(kept=kept, min_sigma=float(sigmas[kept - 1]), calibration_log_score=scores)
            test_levels, _ = elbo_levels(args, "test", inside["test"], shape)
            rows += judged(f"{METHODS[method].label}, sigma >= {sigmas[kept - 1]:.3g}", test,
                           [grid_posterior(log_like[:kept].sum(axis=0), axes) for log_like in test_levels], names, seconds)
    reference = {row["parameter"]: row["width_68"] for row in rows if row["method"] == METHODS["power_spectrum"].label}
    for row in rows:
        row["width_68_vs_power_spectrum"] = row["width_68"] / reference[row["parameter"]] if reference else None

    table = markdown_table(rows)
    settings = dict(run=str(args.run), npe=str(args.npe), grid=args.grid, elbo_grid=args.elbo_grid,
                    n_levels=args.n_levels, draws=DRAWS, fields={file: len(inside[file]) for file in FILES},
                    outside_prior={file: counts[file] - len(inside[file]) for file in FILES},
                    corrections=corrections)
    summary = [{key: value for key, value in row.items() if key not in ("curve", "tarp")} for row in rows]
    out = Path(args.out)
    (out / "inference.md").write_text(table + "\n")
    (out / "inference.json").write_text(json.dumps(dict(settings=settings, rows=rows), indent=1))
    Path(args.results).write_text(json.dumps(dict(settings=settings, rows=summary), indent=1) + "\n")
    plot_coverage(rows, out / "inference_coverage.png")
    plot_examples({method: records[method, "test"] for method in methods}, methods, out / "inference_example.png")
    print(table)
    print(f"Corrections fitted on the calibration fields: {json.dumps(corrections)}")
    if args.figures:
        Path(args.figures).mkdir(parents=True, exist_ok=True)
        for name in ("inference_coverage.png", "inference_example.png"):
            shutil.copy(out / name, Path(args.figures) / name)


if __name__ == "__main__":
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default=str(ROOT / "benchmarks" / "out" / "conditional" / "results" / "run"))
    parser.add_argument("--npe", default=str(ROOT / "benchmarks" / "out" / "npe"))
    parser.add_argument("--methods", default="elbo,power_spectrum,npe")
    parser.add_argument("--test_fields", type=COUNT, default=128, help="the first test fields judged")
    parser.add_argument("--calibration_fields", type=COUNT, default=128, help="the first calibration fields fitted on")
    parser.add_argument("--grid", type=GRID_POINTS, default=41, help="grid points per parameter (P(k), NPE)")
    parser.add_argument("--elbo_grid", type=GRID_POINTS, default=13, help="grid points per parameter for the ELBO")
    parser.add_argument("--n_levels", type=COUNT, default=4)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "inference"))
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "inference.json"))
    parser.add_argument("--figures", default=None, help="copy the figures here, e.g. images")
    parser.add_argument("--report", action="store_true", help="print the table of --results (the README's)")
    main(parser.parse_args())
