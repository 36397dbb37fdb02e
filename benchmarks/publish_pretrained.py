"""Put a run folder into pretrained/NAME with its manifest (`cosmodiff.pretrained.publish`): the command
that trained it, its data, the commit, and its scorecard: for an unconditional run its error budget's
(benchmarks/error_budget.py, the sampler's solve), for a conditional run its evaluation over test
cosmologies (evaluate/cosmology.py: each statistic's median and worst over the points, the headline the
worst median). A model already there is replaced only when that headline improves.

    python benchmarks/error_budget.py RUN --sampler unipc:20:log --reference unipc:20:log
    python benchmarks/publish_pretrained.py RUN --name NAME --command "accelerate launch train.py ..."
    python evaluate/cosmology.py RUN --test HOLDOUT.npz --out RUN/cosmology
    python benchmarks/publish_pretrained.py RUN --name NAME --command "..." --cosmology RUN/cosmology/cosmology.json
"""
import argparse
import json
import sys
from pathlib import Path

from cosmodiff.checkpoint import read_config
from cosmodiff.pretrained import PRETRAINED, publish


def scorecard_of(report):
    """The manifest's scorecard: the sampler solve's statistics over their floors, the worst, and how they were measured."""
    card = report["scorecard"]["sampler"]
    return dict(sampler=report["sampler"], n_generated=report["n_generated"], n_real=report["n_real"],
                test=f"{Path(report['test']).parent.name}/{Path(report['test']).name}", floor_by=report["floor_by"],
                over_floor={name: round(row["over_floor"], 3) for name, row in card["statistics"].items()},
                worst=card["worst"])


def cosmology_scorecard_of(summary, test):
    """The manifest's scorecard of a conditional run: each statistic's median and worst over floor across
    the test cosmologies, and the statistic whose median is worst."""
    over_floor = {name: {key: round(value, 3) for key, value in row.items()} for name, row in summary["scorecard"].items()}
    worst = max(over_floor, key=lambda name: over_floor[name]["median"])
    return dict(sampler=f"{summary['sampler']}:{summary['steps']}", guidance=summary["guidance"],
                n_generated_per_point=summary["num_samples"], points=len(summary["points"]), test=test,
                floor_by="simulation", over_floor=over_floor,
                worst=dict(statistic=worst, over_floor=over_floor[worst]["median"], over="median of the points"))


def main(args):
    run_dir = Path(args.run)
    if args.cosmology:
        scorecard = cosmology_scorecard_of(json.loads(Path(args.cosmology).read_text()), args.test)
    else:
        report = json.loads(Path(args.error_budget or run_dir / "error_budget" / "error_budget.json").read_text())
        scorecard = scorecard_of(report)
    folder = PRETRAINED / args.name
    if (folder / "manifest.json").is_file():
        shipped = json.loads((folder / "manifest.json").read_text())["scorecard"]["worst"]["over_floor"]
        if scorecard["worst"]["over_floor"] >= shipped:
            print(f"error: {folder} is kept: its worst statistic is {shipped:.2f}x its floor, this run's "
                  f"{scorecard['worst']['over_floor']:.2f}x", file=sys.stderr)
            return 2
    config = read_config(run_dir)
    data = dict(path=config["data"]["path"], n_fields=config["data"]["n_fields"])
    manifest = publish(run_dir, folder, args.command, data, scorecard)
    print(json.dumps(manifest, indent=1))
    return 0


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="the run folder")
    parser.add_argument("--name", required=True, help="the folder under pretrained/")
    parser.add_argument("--command", required=True, help="the command that trained the run")
    parser.add_argument("--error_budget", default=None, help="its error_budget.json (default RUN/error_budget/)")
    parser.add_argument("--cosmology", default=None, help="a conditional run: its evaluate/cosmology.py summary "
                        "(cosmology.json) in place of an error budget")
    parser.add_argument("--test", default="conditional-nonlinear-holdout/test.npz",
                        help="with --cosmology: the test fields it was measured on, as the manifest names them")
    return parser


if __name__ == "__main__":
    sys.exit(main(build_parser().parse_args()))
