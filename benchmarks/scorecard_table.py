"""The README's and docs/results.md's fidelity tables, from benchmarks/results/fidelity.json: the
scorecard rows (every statistic over its floor by simulation, the worst first), then the rows measured
over the old floors beside their ratios over the floors by simulation (benchmarks/refloor.py).

    python benchmarks/scorecard_table.py [--results benchmarks/results/fidelity.json]
"""
import argparse
import json
from pathlib import Path

from cosmodiff.repository import ROOT
from cosmodiff.stats import STATISTICS


def scorecard_table(rows):
    """One line per scorecard row (the sampler's solve where there is one, else the reference)."""
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
    return "\n".join(lines)


def refloored_table(rows):
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
    return "\n".join(lines)


def main(args):
    rows = json.loads(Path(args.results).read_text())
    print(scorecard_table(rows))
    print()
    print(refloored_table(rows))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "fidelity.json"))
    main(parser.parse_args())
