"""Put a run folder into pretrained/NAME with its manifest (`cosmodiff.pretrained.publish`): the command
that trained it, its data, the commit, and the scorecard of its error budget (benchmarks/error_budget.py,
the sampler's solve). A model already there is replaced only when the worst statistic over its floor
improves.

    python benchmarks/error_budget.py RUN --sampler unipc:20:log --reference unipc:20:log
    python benchmarks/publish_pretrained.py RUN --name NAME --command "accelerate launch train.py ..."
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


def main(args):
    run_dir = Path(args.run)
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
    return parser


if __name__ == "__main__":
    sys.exit(main(build_parser().parse_args()))
