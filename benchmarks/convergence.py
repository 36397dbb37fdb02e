"""Fidelity against training compute: one run of a recipe trained through a list of step budgets,
the run folder copied at each (config.json, model.safetensors, log.csv), then each copy's error
budget (benchmarks/error_budget.py) as a row of benchmarks/results/fidelity.json.

    python benchmarks/convergence.py --name large-constant --budgets "200 600 1200 2400 4800" \
        --train_args "--data_path train_data/large --lr 1e-3 --lr_schedule constant --ema_decay 0.999"
    python benchmarks/convergence.py --name large-constant --evaluate --sampler dpm++3m:20:log
    python benchmarks/convergence.py --name large-constant --report [--compare large-wsd]  # table, rates, figure

A budget's copy is what a run of that length gives only when the learning rate does not depend on
the run's length (--lr_schedule constant: the EMA does the annealing); a schedule that ends with the
run (wsd, cosine) takes --separate_runs, a run from scratch per budget. Resumable at every stage.

    python benchmarks/convergence.py --name large-wsd --separate_runs --budgets "1000 2000 4000" \
        --train_args "--data_path train_data/large --lr 1e-3 --lr_schedule wsd --ema_decay 0.999"
"""
import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from cosmodiff.checkpoint import read_config
from cosmodiff.cli import ArgumentParser, folder_name
from cosmodiff.error_budget import measure
from cosmodiff.plots import save, subplots
from cosmodiff.repository import ROOT
from results_tables import convergence_fits, convergence_study, fitted_rate, model_errors, study_rows

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


def report(args):
    """The studies' table (markdown), fitted rates and images/fidelity_convergence.png from
    benchmarks/results/fidelity.json: --name, and the recipes of --compare drawn beside it."""
    all_rows = json.loads(Path(args.results).read_text())
    recipes = [args.name, *args.compare.split()]
    solves = [("reference", args.reference), *(("sampler", sampler) for sampler in args.sampler.split())]
    print("\n".join(convergence_study(all_rows, recipes, solves)))
    figure, ax = subplots(figsize=(6.5, 4.5))
    for recipe, marker in zip(recipes, itertools.cycle("osD^v")):
        for (solve, setting), line in zip(solves, ["-", *["--"] * (len(solves) - 1)]):
            chosen = study_rows(all_rows, recipe, solve, setting)
            if not chosen:
                continue
            minutes = [row["cpu_minutes"] for row in chosen]
            ratios = [row["mafd_over_floor"] for row in chosen]
            label = f"{recipe}: {chosen[0]['sampler']} {chosen[0]['steps']} ({chosen[0]['grid']}), NFE {chosen[0]['nfe']}"
            ax.loglog(minutes, ratios, marker + line, label=label)
            if len(chosen) >= 2:
                a, b = fitted_rate(minutes, ratios)
                grid = np.geomspace(min(minutes), max(minutes), 50)
                ax.loglog(grid, a * grid ** -b, ":", color=ax.lines[-1].get_color(), label=f"fit: {a:.1f} t^({-b:+.2f})")
    ax.axhline(1, color="gray", lw=0.8)
    ax.set(xlabel="training CPU-minutes (one core)", ylabel="MAFD / sample-variance floor",
           title="fidelity against training compute")
    ax.legend(fontsize=7)
    Path(args.figure).parent.mkdir(parents=True, exist_ok=True)
    save(figure, args.figure)
    if args.levers:
        levers = [args.name, *args.levers.split()]
        print("\n".join(model_errors(all_rows, levers)))
        if args.band_figure:
            plot_levers([row for row in all_rows if row["solve"] == "reference" and row["recipe"] in levers],
                        args.band_figure)
    print("\n".join(convergence_fits(all_rows, recipes, solves)))
    print(f"Written: {args.figure}")


def plot_levers(rows, path):
    """Each recipe's model error over the floor per k band (its last budget), one line a recipe."""
    figure, ax = subplots(figsize=(6.5, 4.5))
    last = {row["recipe"]: row for row in sorted(rows, key=lambda row: row["cpu_minutes"])}
    for (recipe, row), marker in zip(sorted(last.items()), itertools.cycle("osD^v")):
        bands = list(row["band_mafd_over_floor"])
        ax.plot(bands, list(row["band_mafd_over_floor"].values()), marker + "-",
                label=f"{recipe} ({row['step']} steps, {row['cpu_minutes']:.0f} CPU-min)")
    ax.axhline(1, color="gray", lw=0.8)
    ax.set(xlabel="k band (h/Mpc)", ylabel="model error / sample-variance floor", yscale="log",
           title="the network's error per scale")
    ax.legend(fontsize=7)
    save(figure, path)


def main(args):
    if args.report:
        report(args)
        return
    out = Path(args.out) / args.name
    for budget in [int(b) for b in args.budgets.split()]:
        folder = out / "checkpoints" / f"step-{budget:07d}"
        if args.evaluate:
            if folder.exists():
                measure(folder, args.sampler, args.reference, results=args.results, recipe=args.name)
            continue
        if not folder.exists():
            run_dir = out / (f"run-{budget:07d}" if args.separate_runs else "run")
            train_through(run_dir, budget, args.train_args)
            snapshot(run_dir, folder)
        print(f"checkpoint {folder}", flush=True)


if __name__ == "__main__":
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", type=folder_name, required=True, help="the study's folder under --out")
    parser.add_argument("--budgets", default="200 600 1200 2400 4800", help="training steps at which to copy the run")
    parser.add_argument("--train_args", default="", help="train.py flags of the recipe")
    parser.add_argument("--separate_runs", action="store_true", help="train each budget from scratch (a schedule "
                        "that ends with the run: wsd, cosine)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out"))
    parser.add_argument("--evaluate", action="store_true", help="the error budget of every checkpoint there is")
    parser.add_argument("--sampler", default="dpm++3m:20:log", help="error_budget.py's --sampler (--report: "
                        "one or more, space-separated)")
    parser.add_argument("--reference", default="dpm++3m:40:log", help="error_budget.py's --reference")
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "fidelity.json"))
    parser.add_argument("--report", action="store_true", help="print the study's table and fit, and plot --figure")
    parser.add_argument("--figure", default=str(ROOT / "images" / "fidelity_convergence.png"))
    parser.add_argument("--compare", default="", help="with --report: recipes drawn and fitted beside --name")
    parser.add_argument("--band_figure", default=None, help="with --levers: also draw their error per k band here")
    parser.add_argument("--levers", default="", help="with --report: recipes whose model error is tabled beside the study's")
    main(parser.parse_args())
