"""Fidelity against training compute: one run of a recipe trained through a list of step budgets,
the run folder copied at each (config.json, model.safetensors, log.csv), then each copy's error
budget (benchmarks/error_budget.py) as a row of benchmarks/results/fidelity.json.

    python benchmarks/convergence.py --name large-constant --budgets "200 600 1200 2400 4800" \
        --train_args "--data_path train_data/large --lr_schedule constant --ema_decay 0.999"
    python benchmarks/convergence.py --name large-constant --evaluate --sampler dpm++:20:log

A budget's copy is what a run of that length gives only when the learning rate does not depend on
the run's length: use --lr_schedule constant (the EMA does the annealing). Resumable at every stage.
"""
import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import error_budget
from cosmodiff.checkpoint import read_config
from cosmodiff.cli import ArgumentParser

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOT_FILES = ("config.json", "model.safetensors", "log.csv")


def train_through(run_dir, budget, train_args):
    """Train run_dir to `budget` steps: a new run, or the existing one resumed."""
    if (run_dir / "config.json").exists():
        if read_config(run_dir)["step"] >= budget:
            return
        command = ["--resume", run_dir, "--train_steps", budget]
    else:
        command = ["--train_steps", budget, "--results_dir", run_dir.parent, "--run_name", run_dir.name,
                   "--val_samples", 0, *train_args.split()]
    command = [sys.executable, ROOT / "train.py", *command]
    print("$", " ".join(map(str, command)), flush=True)
    subprocess.run(list(map(str, command)), cwd=ROOT, check=True)


def snapshot(run_dir, folder):
    """Copy the run's sampling files to folder (through a temporary folder, so a copy is whole)."""
    if folder.exists():
        return
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for name in SNAPSHOT_FILES:
        shutil.copy2(run_dir / name, partial / name)
    os.replace(partial, folder)


def main(args):
    out = Path(args.out) / args.name
    for budget in [int(b) for b in args.budgets.split()]:
        folder = out / "checkpoints" / f"step-{budget:07d}"
        if args.evaluate:
            if folder.exists():
                error_budget.main(error_budget.parse_args([str(folder), "--sampler", args.sampler, "--reference",
                                                           args.reference, "--results", args.results,
                                                           "--recipe", args.name]))
            continue
        if not folder.exists():
            train_through(out / "run", budget, args.train_args)
            snapshot(out / "run", folder)
        print(f"checkpoint {folder}", flush=True)


if __name__ == "__main__":
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True, help="the study's folder under --out")
    parser.add_argument("--budgets", default="200 600 1200 2400 4800", help="training steps at which to copy the run")
    parser.add_argument("--train_args", default="", help="train.py flags of the recipe")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out"))
    parser.add_argument("--evaluate", action="store_true", help="the error budget of every checkpoint there is")
    parser.add_argument("--sampler", default="dpm++:20:log", help="error_budget.py's --sampler")
    parser.add_argument("--reference", default="dpm++3m:40:log", help="error_budget.py's --reference")
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "fidelity.json"))
    main(parser.parse_args())
