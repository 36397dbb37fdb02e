"""Calibrated parameter inference: every method's posteriors on the held-out fields of an inference
split (simulations at cosmologies drawn from the prior), judged by coverage, SBC ranks and TARP, the
offset of their means and their figure of merit, before and after corrections fitted on the split's
calibration fields only.

    python benchmarks/inference.py [--split inference] [--run benchmarks/out/conditional/results/run] \
        [--methods elbo,power_spectrum,npe,npe_power_spectrum] [--test_fields all] [--calibration_fields all] \
        [--elbo_fields N] [--grid 41] [--elbo_grid 13] [--n_levels 4] [--n_draws 1] [--batch_size 64] \
        [--device cuda] [--out benchmarks/out/SPLIT] \
        [--results benchmarks/results/inference.json] [--figures images]

--split inference holds 2LPT simulations (train_data/inference, its NPEs trained on the conditional
split, results/inference.json); inference-nonlinear particle-mesh ones (train_data/inference-nonlinear,
its NPEs trained on the npe-nonlinear split's 480 simulations, results/inference_nonlinear.json).
For each method and each file of the split (calibration.npz, test.npz; made on first use) it runs
evaluate/infer.py on the first --test_fields and --calibration_fields fields (--elbo_fields for the
ELBO, whose cost is network evaluations per grid point; finished files are reused where their grid,
ELBO settings and model weights are the ones asked), on --grid points per parameter (--elbo_grid for
the ELBO; its --n_levels, --n_draws, network batch and device as infer.py's). The NPEs (on the field and on its
P(k)) are trained first if --out holds none (evaluate/train_npe.py on the split's NPE training data,
made on first use, which also fits the P(k) baseline). Fields whose truth lies outside the prior box
(the training set's hull, which the split's ranges exceed by a little) are left out and counted. Per
method and parameter on the test fields: coverage of the 68% and 95% equal-tailed intervals, the KS
p-value of the SBC ranks, TARP's ATC and KS p-value (sbi, on 500 draws per posterior), the mean
signed offset (posterior mean - truth) / sigma, the figure of merit 1 / sqrt(det Cov) over the P(k) baseline's on the same fields
(geometric mean over fields), the 68% width, and seconds per field. The same for "METHOD, tempered":
each test posterior shifted by the mean offset and tempered by one temperature fitted on the
calibration fields (coverage.Correction); "METHOD, affine": each posterior mapped by the affine
correction fitted there (coverage.AffineCorrection), which widens a field by what it lacks; "METHOD,
quantile": each parameter's quantiles recalibrated by the calibration fields' SBC ranks
(coverage.QuantileCorrection), which corrects an offset that depends on the parameter; and for
the ELBO, "sigma >= S": its sum over noise levels cut at the lowest level S that scores the
calibration fields' truths best. Writes --out/inference.json and .md, the rows to --results,
inference_coverage.png (expected coverage with 68% bootstrap bands per parameter, and TARP) and
inference_example.png (every method's posterior for the first test fields), copied to --figures with
the split's name. --report prints the table of --results. Without power_spectrum among --methods,
--reference_results names a results file of the same split whose P(k) rows the widths are compared with.
"""
import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np

from cosmodiff.benchmark import run
from cosmodiff.checkpoint import weights_digest
from cosmodiff.cli import ArgumentParser, COUNT, INDEX, Number, device_name
from cosmodiff.inference.coverage import (AffineCorrection, Correction, QuantileCorrection, expected_coverage,
                                         log_density_at, sbc, tarp)
from cosmodiff.inference.likelihoods import (CUBIC_POINTS, cubic_interpolation, figure_of_merit, grid_draws, grid_posterior,
                                 parameter_grid, summaries)
from cosmodiff.mock import SPLIT_FOLDERS, ensure_split
from cosmodiff.inference.npe import is_npe_run
from cosmodiff.inference.methods import METHODS, NPE_SUMMARIES, plot
from cosmodiff.plots import save, subplots
from cosmodiff.repository import ROOT

FILES = ("calibration", "test")
DRAWS = 500  # posterior draws per field for SBC and TARP
LEVELS = np.linspace(0.02, 0.98, 49)
GRID_POINTS = Number(int, 3)  # a grid posterior needs a point between the prior's edges


class InferenceSplit(NamedTuple):
    """What an inference split's benchmark trains and writes."""
    npe_split: str  # the split its NPEs (and the P(k) baseline) train on
    results: str  # its results file under benchmarks/results
    figure_suffix: str
    npe_patience: int  # NPE epochs without a better validation loss before stopping


# the field NPE on the npe-nonlinear simulations still improves after 10 epochs without a better
# validation loss, so that split's NPEs wait longer (docs/results.md, parameter inference)
SPLITS = {"inference": InferenceSplit("conditional", "inference.json", "", 10),
          "inference-nonlinear": InferenceSplit("npe-nonlinear", "inference_nonlinear.json", "_nonlinear", 30)}
CORRECTIONS = {"tempered": Correction, "affine": AffineCorrection, "quantile": QuantileCorrection}  # variant -> the correction fitted


def npe_folder(args, method):
    """Where the NPE a method needs (a key of NPE_SUMMARIES) is trained and read, under --out."""
    return Path(args.out) / method.replace("_", "-")


def posteriors(args, method, file, count):
    """The posterior.json of one method on the first count fields of one file of the split, made once
    and made again when the settings or the model's weights differ."""
    out = Path(args.out) / f"{method}-{file}"
    settings = dict(grid=args.elbo_grid, n_levels=args.n_levels, n_draws=args.n_draws) if method == "elbo" else dict(
        grid=args.grid)
    # the P(k) baseline needs no model: the NPE folder fixes its prior and training data, as NPE's
    needs = METHODS[method].needs or "npe"
    folder = args.run if needs == "checkpoint" else npe_folder(args, needs)
    if (out / "posterior.json").exists():
        record = json.loads((out / "posterior.json").read_text())
        made_with = record["settings"].get("weights", {}).get(needs)
        if len(record["results"]) == count and made_with == weights_digest(folder) and all(
                record["settings"].get(key) == value for key, value in settings.items()):
            return record
    runs = [f"--{needs}", folder]
    devices = ["--device", args.device] if args.device else []
    run([sys.executable, ROOT / "evaluate" / "infer.py", SPLIT_FOLDERS[args.split] / f"{file}.npz", *runs,
         "--method", method, "--indices", ",".join(map(str, range(count))), "--n_levels", args.n_levels,
         "--n_draws", args.n_draws, "--batch_size", args.batch_size, *devices, "--out", out,
         *(item for key, value in settings.items() for item in (f"--{key}", value))])
    return json.loads((out / "posterior.json").read_text())


def field_counts(args, method):
    """How many of each file's first fields a method is judged on."""
    counts = {}
    for file, asked in (("calibration", args.calibration_fields), ("test", args.test_fields)):
        with np.load(SPLIT_FOLDERS[args.split] / f"{file}.npz") as data:
            available = len(data["fields"])
        asked = min(asked or available, available)
        counts[file] = min(asked, args.elbo_fields) if method == "elbo" and args.elbo_fields else asked
    return counts


def judged(method, record, grids, axes, names, seconds, reference_foms):
    """A row per parameter of one method's test posteriors (grids on axes: one per field of record;
    reference_foms: field index -> the P(k) baseline's figure of merit)."""
    truths = np.array([result["truth"] for result in record["results"]])
    samples = np.stack([grid_draws(grid, axes, DRAWS, seed=i) for i, grid in enumerate(grids)], axis=1)
    ranks, ks_p = sbc(samples, truths)
    coverage, low, high = expected_coverage(ranks, DRAWS, LEVELS)
    at = {level: int(np.argmin(np.abs(LEVELS - level))) for level in (0.68, 0.95)}
    ecp, alpha, atc, tarp_p = tarp(samples, truths)
    fields = [summaries(grid, axes, names) for grid in grids]
    foms = [figure_of_merit(grid, axes) for grid in grids]
    indices = [result["indices"][0] for result in record["results"]]
    fom_ratio = (float(np.exp(np.mean([np.log(fom / reference_foms[index]) for fom, index in zip(foms, indices)])))
                 if reference_foms else None)
    rows = []
    for dim, name in enumerate(names):
        means = np.array([field[name]["mean"] for field in fields])
        stds = np.array([field[name]["std"] for field in fields])
        width_68 = np.mean([field[name]["interval_68"][1] - field[name]["interval_68"][0] for field in fields])
        rows.append(dict(method=method, parameter=name, fields=len(truths), coverage_68=float(coverage[dim, at[0.68]]),
                         coverage_95=float(coverage[dim, at[0.95]]), sbc_ks_p=float(ks_p[dim]),
                         tarp_atc=atc, tarp_ks_p=tarp_p, bias=float(np.mean(means - truths[:, dim])),
                         offset_over_sigma=float(np.mean((means - truths[:, dim]) / stds)),
                         abs_bias_over_sigma=float(np.mean(np.abs(means - truths[:, dim]) / stds)),
                         fom_vs_power_spectrum=fom_ratio, width_68=float(width_68), seconds_per_field=seconds,
                         curve=dict(coverage=coverage[dim].tolist(), low=low[dim].tolist(), high=high[dim].tolist()),
                         tarp=dict(ecp=ecp.tolist(), alpha=alpha.tolist())))
    return rows


def inside_prior(record):
    """Positions of the fields whose truth lies inside the prior box the grids span (the training set's
    hull): no posterior on that box can cover a truth outside it."""
    box = np.array(list(record["settings"]["prior"].values()))
    return [i for i, result in enumerate(record["results"])
            if np.all((box[:, 0] <= result["truth"]) & (np.asarray(result["truth"]) <= box[:, 1]))]


def elbo_levels(args, file, record, shape):
    """The ELBO's grid log-likelihoods per noise level (highest first) of the fields of a record (those
    inside the prior) of one file, (N, L, *shape), and the levels."""
    levels = np.load(Path(args.out) / f"elbo-{file}" / "elbo_levels.npz")
    position = {index: i for i, index in enumerate(levels["indices"].tolist())}
    per_level = levels["log_likelihood"][[position[result["indices"][0]] for result in record["results"]]]
    return per_level.reshape(*per_level.shape[:2], *shape), levels["sigmas"]


def chosen_levels(per_level, axes, truths, read):
    """How many of the ELBO's noise levels (highest first) score the calibration fields' truths best:
    dropping the lowest levels drops the smallest scales, where a model's response to the parameters
    may be least right. read: a grid log-likelihood -> the one on axes. Returns it and every count's score."""
    scores = {kept: sum(log_density_at(read(log_like[:kept].sum(axis=0)), axes, truth)
                        for log_like, truth in zip(per_level, truths))
              for kept in range(1, per_level.shape[1] + 1)}
    return max(scores, key=scores.get), scores


def markdown_table(rows):
    """The rows as a table; a column a row lacks (rows of an earlier benchmark's file) shows "-"."""
    def number(row, key, form):
        return "-" if row.get(key) is None else format(row[key], form)
    lines = ["| method | parameter | fields | 68% coverage | 95% coverage | SBC KS p | TARP ATC | TARP KS p | "
             "offset / sigma | FoM vs P(k) | 68% width vs P(k) | s / field |", "|" + " --- |" * 12]
    for row in rows:
        lines.append(f"| {row['method']} | {row['parameter']} | {row['fields']} | {100 * row['coverage_68']:.0f}% | "
                     f"{100 * row['coverage_95']:.0f}% | {row['sbc_ks_p']:.2g} | {row['tarp_atc']:+.3f} | "
                     f"{row['tarp_ks_p']:.2g} | {number(row, 'offset_over_sigma', '+.2f')} | "
                     f"{number(row, 'fom_vs_power_spectrum', '.2f')} | {number(row, 'width_68_vs_power_spectrum', '.2f')} | "
                     f"{row['seconds_per_field']:.2f} |")
    return "\n".join(lines)


def plot_coverage(rows, path):
    """A coverage panel per parameter and TARP's joint curve: a colour per method, a line style per variant."""
    parameters = list(dict.fromkeys(row["parameter"] for row in rows))
    figure, panels = subplots(1, len(parameters) + 1, figsize=(4.6 * (len(parameters) + 1), 4.4))
    colours = {method.label: method.colour for method in METHODS.values()}
    for ax in panels:
        ax.plot([0, 1], [0, 1], color="k", lw=0.8)
    for row in rows:
        base, _, variant = row["method"].partition(", ")
        style = {"": "-", "tempered": "--", "affine": "-.", "quantile": (0, (3, 1, 1, 1, 1, 1))}.get(variant, ":")
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


def trained_npes(args, methods):
    """Each NPE the methods (or the P(k) baseline, which reads its prior and training data) need, trained
    on the split's NPE training data unless --out holds it."""
    needed = {METHODS[m].needs or "npe" for m in methods} & set(NPE_SUMMARIES)
    split = SPLITS[args.split]
    for method in sorted(needed):
        if not is_npe_run(npe_folder(args, method)):
            ensure_split(SPLIT_FOLDERS[split.npe_split], split.npe_split)
            run([sys.executable, ROOT / "evaluate" / "train_npe.py", "--data_path", SPLIT_FOLDERS[split.npe_split],
                 "--patience", split.npe_patience,
                 "--summary", NPE_SUMMARIES[method], "--out", npe_folder(args, method)])


def npe_training(folder):
    """The data an NPE folder was trained on, its field count, epochs and patience (None where there is
    no NPE; no patience for a folder written before it was recorded)."""
    if not is_npe_run(folder):
        return None
    config = json.loads((Path(folder) / "config.json").read_text())
    return dict(data_path=config["data_path"], fields=config["fields"], epochs=config["epochs"],
                patience=config.get("patience"))


def judged_method(args, method, test, calibration, names, reference_foms):
    """The rows of one method's test posteriors, raw and corrected by what its calibration fields fit,
    and the corrections' settings. The ELBO's grids are read by cubic interpolation on --elbo_fine
    points per parameter (inference.cubic_interpolation), so a posterior narrower than its cells is resolved."""
    coarse_axes = [np.asarray(axis) for axis in test["results"][0]["axes"]]
    shape = tuple(len(axis) for axis in coarse_axes)
    fine = method == "elbo" and args.elbo_fine
    axes = parameter_grid([axis[0] for axis in coarse_axes], [axis[-1] for axis in coarse_axes],
                          args.elbo_fine)[0] if fine else coarse_axes

    def read(log_like):
        if fine:
            return cubic_interpolation(log_like, coarse_axes, args.elbo_fine)[1].reshape([len(axis) for axis in axes])
        return np.asarray(log_like, np.float64).reshape(shape)
    log_likes = [read(result[method]["log_likelihood"]) for result in test["results"]]
    calibration_log_likes = [read(result[method]["log_likelihood"]) for result in calibration["results"]]
    seconds = test["results"][0][method]["seconds_per_field"]
    label = METHODS[method].label
    rows = judged(label, test, [grid_posterior(log_like, axes) for log_like in log_likes], axes, names, seconds,
                  reference_foms)
    calibration_truths = [result["truth"] for result in calibration["results"]]
    fitted = {}
    for variant, correction_type in CORRECTIONS.items():
        correction = correction_type.fit(calibration_log_likes, axes, calibration_truths)
        fitted[variant] = correction.to_dict()
        rows += judged(f"{label}, {variant}", test, [correction(log_like, axes) for log_like in log_likes], axes, names,
                       seconds, reference_foms)
    if method == "elbo":
        calibration_levels, sigmas = elbo_levels(args, "calibration", calibration, shape)
        kept, scores = chosen_levels(calibration_levels, axes, calibration_truths, read)
        fitted["levels"] = dict(kept=kept, min_sigma=float(sigmas[kept - 1]), calibration_log_score=scores)
        test_levels, _ = elbo_levels(args, "test", test, shape)
        rows += judged(f"{label}, sigma >= {sigmas[kept - 1]:.3g}", test,
                       [grid_posterior(read(field[:kept].sum(axis=0)), axes) for field in test_levels], axes, names,
                       seconds, reference_foms)
    return rows, fitted


def reference_rows(args, rows):
    """The rows the 68% widths are compared with: these, or --reference_results' where P(k) is not
    among the methods (its test fields must be these)."""
    if "power_spectrum" in args.methods.split(",") or not args.reference_results:
        return rows
    record = json.loads(Path(args.reference_results).read_text())
    if record["settings"]["split"] != args.split:
        raise SystemExit(f"--reference_results {args.reference_results}: judged the {record['settings']['split']} "
                         f"split, not {args.split}")
    return record["rows"]


def main(args):
    if args.elbo_fine and args.elbo_grid < CUBIC_POINTS:
        raise SystemExit(f"--elbo_fine reads the ELBO's grid by cubic interpolation, which needs --elbo_grid "
                         f"{CUBIC_POINTS} or more (got {args.elbo_grid})")
    if args.report:
        print(markdown_table(json.loads(Path(args.results).read_text())["rows"]))
        return
    methods = [method for method in args.methods.split(",") if method]
    ensure_split(SPLIT_FOLDERS[args.split], args.split)
    trained_npes(args, methods)
    records, outside = {}, {}
    for method in methods:
        for file, count in field_counts(args, method).items():
            record = posteriors(args, method, file, count)
            inside = inside_prior(record)
            outside[f"{method}-{file}"] = len(record["results"]) - len(inside)
            records[method, file] = dict(record, results=[record["results"][i] for i in inside])
    names = records[methods[0], "test"]["settings"]["names"]
    reference_foms = {}
    if "power_spectrum" in methods:
        axes = [np.asarray(axis) for axis in records["power_spectrum", "test"]["results"][0]["axes"]]
        reference_foms = {result["indices"][0]: figure_of_merit(np.asarray(result["power_spectrum"]["posterior"]), axes)
                          for result in records["power_spectrum", "test"]["results"]}
    rows, corrections = [], {}
    for method in methods:
        method_rows, corrections[method] = judged_method(args, method, records[method, "test"],
                                                         records[method, "calibration"], names, reference_foms)
        rows += method_rows
    reference = {row["parameter"]: row["width_68"] for row in reference_rows(args, rows)
                 if row["method"] == METHODS["power_spectrum"].label}
    for row in rows:
        row["width_68_vs_power_spectrum"] = row["width_68"] / reference[row["parameter"]] if reference else None

    table = markdown_table(rows)
    settings = dict(split=args.split, run=str(args.run), npe=str(npe_folder(args, "npe")),
                    reference_results=args.reference_results,
                    npe_training=npe_training(npe_folder(args, "npe")), grid=args.grid,
                    elbo_grid=args.elbo_grid, n_levels=args.n_levels, n_draws=args.n_draws, draws=DRAWS,
                    fields={key: len(record["results"]) for key, record in
                            ((f"{method}-{file}", record) for (method, file), record in records.items())},
                    outside_prior=outside, corrections=corrections)
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
        suffix = SPLITS[args.split].figure_suffix
        for name in ("inference_coverage", "inference_example"):
            shutil.copy(out / f"{name}.png", Path(args.figures) / f"{name}{suffix}.png")


def build_parser():
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", choices=list(SPLITS), default="inference", help="the inference split judged on")
    parser.add_argument("--run", default=str(ROOT / "benchmarks" / "out" / "conditional" / "results" / "run"),
                        help="the conditional diffusion run (for elbo)")
    parser.add_argument("--methods", default="elbo,power_spectrum,npe")
    parser.add_argument("--test_fields", type=COUNT, default=None, help="the first test fields judged (default: all)")
    parser.add_argument("--calibration_fields", type=COUNT, default=None,
                        help="the first calibration fields fitted on (default: all)")
    parser.add_argument("--elbo_fields", type=COUNT, default=None,
                        help="at most this many of each file's first fields for the ELBO (default: as the others)")
    parser.add_argument("--grid", type=GRID_POINTS, default=41, help="grid points per parameter (P(k), NPE)")
    parser.add_argument("--elbo_grid", type=GRID_POINTS, default=13, help="grid points per parameter for the ELBO")
    parser.add_argument("--elbo_fine", type=INDEX, default=81,
                        help="points per parameter of the cubic interpolation the ELBO's grid is read by (0: the grid)")
    parser.add_argument("--n_levels", type=COUNT, default=4, help="the ELBO's noise levels")
    parser.add_argument("--n_draws", type=COUNT, default=1, help="the ELBO's noise draws per level")
    parser.add_argument("--batch_size", type=COUNT, default=64, help="the ELBO's network batch")
    parser.add_argument("--device", type=device_name, default=None, help="the ELBO's device (default: the GPU where "
                        "there is one)")
    parser.add_argument("--out", default=None, help="default: benchmarks/out/SPLIT")
    parser.add_argument("--results", default=None, help="default: benchmarks/results/ the split's file")
    parser.add_argument("--reference_results", default=None,
                        help="a results file of the same split whose P(k) rows the 68%% widths are compared with, "
                             "where --methods has no power_spectrum")
    parser.add_argument("--figures", default=None, help="copy the figures here, e.g. images")
    parser.add_argument("--report", action="store_true", help="print the table of --results (the README's)")
    return parser


if __name__ == "__main__":
    arguments = build_parser().parse_args()
    arguments.out = arguments.out or str(ROOT / "benchmarks" / "out" / arguments.split)
    arguments.results = arguments.results or str(ROOT / "benchmarks" / "results" / SPLITS[arguments.split].results)
    main(arguments)
