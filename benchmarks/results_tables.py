"""The tables of docs/results.md made from benchmarks/results/*.json: each table sits between
`<!-- table: NAME -->` and `<!-- end table -->`, and TABLES says which results file and which rows
make it. Run after a benchmark writes its results; --check exits 1 (and writes nothing) where a table
differs from its results.

    python benchmarks/results_tables.py [--check] [--doc docs/results.md] [--results benchmarks/results]
"""
import argparse
import json
import re
import sys
from pathlib import Path

from cosmodiff.cli import ArgumentParser
from cosmodiff.repository import ROOT
from cosmodiff.stats import STATISTICS

SCORECARD_LABELS = {"pk_mafd": "P(k)", "log_pk_mafd": "ln(1+delta) P(k)", "bispectrum": "bispectrum",
                    "bispectrum_equilateral": "equilateral", "bispectrum_squeezed": "squeezed", "peaks": "peaks",
                    "pixel_pdf": "pixel PDF", "minkowski": "Minkowski", "pk_correlation": "P(k) correlation"}


def fidelity_scorecard(rows):
    """The scorecard: one line per row of fidelity.json (the sampler's solve where there is one, else the reference)."""
    chosen = {}
    for row in rows:
        if row.get("floor_by") and row.get("scorecard"):
            key = (row["recipe"], row["step"])
            if key not in chosen or row["solve"] == "sampler":
                chosen[key] = row
    lines = ["| recipe | steps | CPU-min | test | NFE | worst / floor | " + " | ".join(STATISTICS) + " |",
             "| --- | --- | --- | --- | --- | --- |" + " --- |" * len(STATISTICS)]
    for row in sorted(chosen.values(), key=lambda row: row["worst_over_floor"]):
        cells = [f"{row['scorecard'][name]:.2f}" if name in row["scorecard"] else "-" for name in STATISTICS]
        lines.append(f"| `{row['recipe']}` | {row['step']} | {row['cpu_minutes']:.1f} | {row.get('test', '-')} | "
                     f"{row['nfe']} | **{row['worst_over_floor']:.2f}** ({row['worst_statistic']}) | " + " | ".join(cells) + " |")
    return lines


def fidelity_refloored(rows):
    """The reference solves measured over the old floors: MAFD and bispectrum over the old floor and over the floor by simulation."""
    lines = ["| recipe | steps | CPU-min | MAFD / old floor | MAFD / floor by simulation | log space (old, by simulation) | "
             "bispectrum (old, by simulation) |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        if "honest" not in row or row["solve"] != "reference":
            continue
        honest = row["honest"]
        bispectrum = "-"
        if "beyond_over_floor" in honest:
            bispectrum = f"{row['beyond_over_floor']['bispectrum']:.1f}, {honest['beyond_over_floor']['bispectrum']:.1f}"
        lines.append(f"| `{row['recipe']}` | {row['step']} | {row['cpu_minutes']:.1f} | {row['mafd_over_floor']:.2f} | "
                     f"{honest['mafd_over_floor']:.2f} | {row['log_mafd_over_floor']:.2f}, {honest['log_mafd_over_floor']:.2f} | "
                     f"{bispectrum} |")
    return lines


def conditional_scorecard(records):
    """The conditional emulator's scorecard on held-out cosmologies: median and worst point."""
    scorecard = records[0]["holdout"]["scorecard"]
    lines = ["| statistic over its floor | median over the 20 points | worst point |", "| --- | --- | --- |"]
    lines += [f"| {SCORECARD_LABELS[name]} | {row['median']:.2f} | {row['worst']:.2f} |"
              for name, row in scorecard.items()]
    return lines


def conditional_fisher(records):
    """The emulator's Fisher errors and derivatives against the simulations', per guidance weight."""
    lines = ["| guidance W | sigma(Omega_m) emulated / simulated | sigma(sigma_8) emulated / simulated | "
             "d ln P / d Omega_m, median error | d ln P / d sigma_8, median error |", "| --- | --- | --- | --- | --- |"]
    for row in records[0]["fisher"]:
        label = {2.0: "2 (the default)", 1.0: "1 (the conditional model alone)"}.get(row["guidance"], f"{row['guidance']:g}")
        errors = row["derivative_median_relative_error"]
        lines.append(f"| {label} | {row['sigma_ratio']['Omega_m']:.2f} | {row['sigma_ratio']['sigma_8']:.2f} | "
                     f"{100 * errors['Omega_m']:.0f}% | {100 * errors['sigma_8']:.0f}% |")
    return lines


def train_throughput(records):
    """Images per second of train.py's loop, plain and with each option."""
    record = records[-1]
    lines = ["| train.py flags | images/s | over the plain loop | first 10 steps (s) |", "| --- | --- | --- | --- |",
             f"| (plain) | {record['images_per_s']:.2f} | 1 | {record['warmup_s']:.0f} |"]
    for variant in record["variants"]:
        flags = f"`{variant['flags']}`"
        if variant["flags"] == "--precision auto" and not record["cpu_bf16_units"]:
            flags += " (fp32 here: no bf16 units)"
        ratio = f"**{variant['ratio']:.2f}**" if variant["ratio"] == max(v["ratio"] for v in record["variants"]) \
            else f"{variant['ratio']:.2f}"
        lines.append(f"| {flags} | {variant['images_per_s']:.2f} | {ratio} | {variant['warmup_s']:.0f} |")
    return lines


def emulated_inference(record):
    """The NPEs trained on simulations and on emulated fields, judged on real test fields (corrections
    fitted on the calibration fields), one row per training set, correction and parameter."""
    lines = ["| training set | fields (cosmologies) | CPU-s / field | correction | parameter | 68% | 95% | SBC KS p | "
             "offset / sigma | FoM vs P(k) | FoM vs simulations |", "|" + " --- |" * 11]
    for row in record["rows"]:
        _, _, correction = row["method"].partition(", ")
        versus = "-" if row["fom_vs_simulations"] is None else f"{row['fom_vs_simulations']:.2f}"
        lines.append(f"| {row['training_set']} | {row['training_fields']} ({row['training_cosmologies']}) | "
                     f"{row['cpu_seconds_per_training_field']:.2f} | {correction or 'none'} | {row['parameter']} | "
                     f"{100 * row['coverage_68']:.0f}% | {100 * row['coverage_95']:.0f}% | {row['sbc_ks_p']:.2g} | "
                     f"{row['offset_over_sigma']:+.2f} | {row['fom_vs_power_spectrum']:.2f} | {versus} |")
    return lines


def elbo_cpu(record):
    """The CPU emulator's ELBO posteriors on the inference split's test fields, raw and corrected on its
    calibration fields, with their widths against the P(k) likelihood's on the same fields."""
    lines = ["| variant | parameter | fields | 68% | 95% | SBC KS p | offset / sigma | 68% width vs P(k) | s / field |",
             "|" + " --- |" * 9]
    for row in record["rows"]:
        _, _, variant = row["method"].partition(", ")
        lines.append(f"| {variant or 'raw'} | {row['parameter']} | {row['fields']} | {100 * row['coverage_68']:.0f}% | "
                     f"{100 * row['coverage_95']:.0f}% | {row['sbc_ks_p']:.2g} | {row['offset_over_sigma']:+.2f} | "
                     f"{row['width_68_vs_power_spectrum']:.2f} | {row['seconds_per_field']:.1f} |")
    return lines


def cuda_check(record):
    """Training and sampling speed of the default UNet on one GPU, fp32 against bf16."""
    train, sample = record["train_images_per_s"], record["sample_seconds_per_field"]
    return ["| | fp32 | bf16 |", "| --- | --- | --- |",
            f"| training, default UNet, 64x64, batch 16 (images/s) | {train['no']:.1f} | {train['bf16']:.1f} |",
            f"| sampling, UniPC 20 steps, batch 128 (ms per field) | {1000 * sample['no']:.1f} | "
            f"{1000 * sample['bf16']:.1f} |"]


def elbo_spread(record):
    """The ELBO posterior's spread over noise seeds per levels:draws setting: the standard deviation of the
    posterior mean over seeds over the mean posterior sigma, median (largest) over the fields, the
    smallest median in bold."""
    rows = sorted(record["rows"], key=lambda row: row["evaluations_per_field"])
    names = list(rows[0]["spread_over_sigma"])
    best = {name: min(row["spread_over_sigma"][name]["median"] for row in rows) for name in names}
    lines = ["| levels:draws | network evaluations / field | " + " | ".join(f"{name} spread / sigma" for name in names)
             + " |", "|" + " --- |" * (2 + len(names))]
    for row in rows:
        cells = []
        for name in names:
            spread = row["spread_over_sigma"][name]
            median = f"{spread['median']:.2f}"
            cells.append(f"{f'**{median}**' if spread['median'] == best[name] else median} (max {spread['max']:.2f})")
        lines.append(f"| {row['setting']} | {row['evaluations_per_field']} | " + " | ".join(cells) + " |")
    return lines


def settings_reach(records):
    """How far train.py's settings travel: the package modules that receive or read them, the climbs back
    up, and whether loading a run folder imports the flag parser or the simulation code."""
    record = records[-1]
    loads = "; ".join(f"`{name}`: {'imports' if found['flag_parser'] else 'no'} flag parser, "
                      f"{'imports' if found['mock'] else 'no'} mock code"
                      for name, found in record["loading_imports"].items())
    modules = ", ".join(f"`{module}` ({reads})" for module, reads in record["by_module"].items())
    return ["| package modules | receive or read the settings | climbs back up | reads | loading a run folder |",
            "| --- | --- | --- | --- | --- |",
            f"| {record['modules_in_package']} | {record['modules_visited']}: {modules} | {record['climbs']} | "
            f"{record['reads']} | {loads} |"]


# table name -> (results file, rows maker)
TABLES = {
    "fidelity-scorecard": ("fidelity.json", fidelity_scorecard),
    "fidelity-refloored": ("fidelity.json", fidelity_refloored),
    "conditional-scorecard": ("conditional_nonlinear.json", conditional_scorecard),
    "conditional-fisher": ("conditional_nonlinear.json", conditional_fisher),
    "emulated-inference": ("npe_emulated.json", emulated_inference),
    "elbo-cpu": ("inference_nonlinear_elbo_cpu.json", elbo_cpu),
    "train-throughput": ("train_throughput.json", train_throughput),
    "settings-reach": ("settings_trace.json", settings_reach),
    "cuda-check": ("cuda_check.json", cuda_check),
    "elbo-spread": ("elbo_variance.json", elbo_spread),
    "elbo-spread-draws": ("elbo_variance_draws.json", elbo_spread),
}
MARKED = re.compile(r"(<!-- table: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- end table -->)", re.S)


def regenerated(text, results):
    """The document with every marked table made afresh from the results folder."""
    def table(match):
        name = match["name"]
        if name not in TABLES:
            raise ValueError(f"table '{name}' is not one of {', '.join(TABLES)}")
        file, make = TABLES[name]
        rows = make(json.loads((Path(results) / file).read_text()))
        return match[1] + "\n".join(rows) + "\n" + match[4]
    return MARKED.sub(table, text)


def main(args):
    doc = Path(args.doc)
    text = doc.read_text()
    made = regenerated(text, args.results)
    names = [match["name"] for match in MARKED.finditer(text)]
    if args.check:
        if made != text:
            print(f"{doc}: tables differ from {args.results} (python benchmarks/results_tables.py)", file=sys.stderr)
            return 1
        print(f"{doc}: {len(names)} tables match their results ({', '.join(names)})")
        return 0
    doc.write_text(made)
    print(f"{doc}: {len(names)} tables written ({', '.join(names)})")
    return 0


def build_parser():
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 where a table differs from its results")
    parser.add_argument("--doc", default=str(ROOT / "docs" / "results.md"))
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    return parser


if __name__ == "__main__":
    sys.exit(main(build_parser().parse_args()))
