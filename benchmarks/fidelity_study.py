"""Fidelity per CPU-minute: formulation x training length x sampler on the default data, 384 generated
vs 384 test fields each, as one table and two figures.

    python benchmarks/fidelity_study.py --runs "vp:200 vp:500 edm:200 edm:500 flow:200 flow:500" \
        --samplers "dpm++:20 dpm++:20:log heun:10" --parallel 2

Each run is `benchmarks/fidelity.py --formulation F --train_steps N --samplers ...` with one thread
(COSMODIFF_THREADS=1), --parallel of them at a time: on 2 cores, two trainings side by side. Runs
and samples already made are reused, so the study can be grown a run or a sampler at a time.
Writes images/fidelity_vs_compute.png (MAFD/floor against training CPU-minutes, one line per formulation,
with --compute_sampler), images/fidelity_vs_nfe.png (against network evaluations per field, one line
per formulation x sampler, each formulation's run sampled in most settings) and the table as markdown and JSON.
"""
import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cosmodiff.cli import ArgumentParser, COUNT
from cosmodiff.diffusion import SAMPLERS, parse_setting
from cosmodiff.repository import ROOT

OUT = ROOT / "benchmarks" / "out"


def run_name(formulation, steps, tag):
    return f"unet-{formulation}-{steps}{tag}"


def fidelity_run(args, formulation, steps):
    command = [sys.executable, str(ROOT / "benchmarks" / "fidelity.py"), "--formulation", formulation,
               "--train_steps", steps, "--save_every", steps, "--samplers", args.samplers,
               "--name", run_name(formulation, steps, args.tag), "--train_args", args.train_args, "--no_memorisation"]
    log = OUT / f"{run_name(formulation, steps, args.tag)}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as file:
        result = subprocess.run(command, cwd=ROOT, stdout=file, stderr=subprocess.STDOUT,
                                env=dict(os.environ, COSMODIFF_THREADS="1"))
    print(f"{formulation} {steps} steps: {'done' if result.returncode == 0 else f'FAILED, see {log}'}", flush=True)


def collect(args):
    """Every evaluated setting of the runs; rows written before grids were named get their sampler's."""
    rows = []
    for setting in args.runs.split():
        formulation, steps = setting.split(":")
        for path in sorted((OUT / run_name(formulation, steps, args.tag)).glob("samples-*/fidelity.json")):
            row = json.loads(path.read_text())
            rows.append(dict(row, grid=row.get("grid", SAMPLERS[row["sampler"]][0])))
    return rows


def sampler_label(row):
    return f"{row['sampler']} ({row['grid']})"


def markdown(rows):
    header = ("| formulation | steps | train CPU-min | sampler | NFE | MAFD | MAFD / floor | MAFD k<0.1 / "
              "0.1-0.4 / 0.4-Nyq | std ln(1+delta) gen / real | PDF KS | Minkowski V0/V1/V2 in 1-sigma | seam |")
    lines = [header, "|" + " --- |" * (header.count("|") - 1)]
    for row in sorted(rows, key=lambda row: (row["formulation"], row["train_steps"], row["network_evaluations"])):
        bands = " / ".join(f"{100 * value:.1f}%" for value in row["band_mafd"].values())
        minkowski = " / ".join(f"{100 * value:.0f}%" for value in row["minkowski_within_1sigma"].values())
        lines.append(f"| {row['formulation']} | {row['train_steps']} | {row['train_cpu_minutes']:.1f} | "
                     f"{row['sampler']} {row['steps']} ({row['grid']}) | {row['network_evaluations']} | {100 * row['mafd']:.1f}% | "
                     f"{row['mafd_over_floor']:.1f} | {bands} | {row['log_density_std']['generated']:.3f} / "
                     f"{row['log_density_std']['real']:.3f} | {row['pixel_pdf_ks']:.3f} | {minkowski} | "
                     f"{row['seam_median']:.3f} |")
    return "\n".join(lines)


def plot(rows, args):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = Path(args.figures)
    figures.mkdir(parents=True, exist_ok=True)
    formulations = sorted({row["formulation"] for row in rows})
    figure, ax = plt.subplots(figsize=(6, 4))
    sampler, steps, grid = parse_setting(args.compute_sampler)
    grid = grid or SAMPLERS[sampler].grid
    for formulation in formulations:
        points = sorted((row["train_cpu_minutes"], row["mafd_over_floor"]) for row in rows if row["formulation"] == formulation
                        and (row["sampler"], row["steps"], row["grid"]) == (sampler, int(steps), grid))
        if points:
            ax.plot(*zip(*points), marker="o", label=formulation)
    ax.axhline(2, color="k", ls=":", label="target 2x floor")
    ax.set(xscale="log", yscale="log", xlabel="training CPU-minutes (core-minutes)", ylabel="MAFD / floor",
           title=f"UNet, {sampler} {steps} steps ({grid} grid), 384 vs 384 fields")
    ax.legend()
    figure.tight_layout()
    figure.savefig(figures / "fidelity_vs_compute.png", dpi=120)

    figure, ax = plt.subplots(figsize=(6, 4))
    for formulation in formulations:
        own = [row for row in rows if row["formulation"] == formulation]
        longest = max({row["train_steps"] for row in own},  # the run sampled most ways, then the longest
                      key=lambda steps: (sum(row["train_steps"] == steps for row in own), steps))
        chosen = [row for row in own if row["train_steps"] == longest]
        for name in sorted({sampler_label(row) for row in chosen}):
            points = sorted((row["network_evaluations"], row["mafd_over_floor"]) for row in chosen
                            if sampler_label(row) == name)
            ax.plot(*zip(*points), marker="o", label=f"{formulation} {longest} steps, {name}")
    ax.axhline(2, color="k", ls=":", label="target 2x floor")
    ax.set(xscale="log", yscale="log", xlabel="network evaluations per field", ylabel="MAFD / floor",
           title="UNet, 384 vs 384 fields")
    ax.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(figures / "fidelity_vs_nfe.png", dpi=120)


def main(args):
    runs = [setting.split(":") for setting in args.runs.split()]
    with ThreadPoolExecutor(args.parallel) as pool:
        list(pool.map(lambda run: fidelity_run(args, *run), runs))
    rows = collect(args)
    table = markdown(rows)
    print(table)
    (OUT / f"fidelity_study{args.tag}.md").write_text(table + "\n")
    (OUT / f"fidelity_study{args.tag}.json").write_text(json.dumps(rows, indent=1))
    if rows:
        plot(rows, args)
        print(f"Figures: {args.figures}/fidelity_vs_compute.png, {args.figures}/fidelity_vs_nfe.png")


if __name__ == "__main__":
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="vp:200 vp:500 edm:200 edm:500 flow:200 flow:500",
                        help="formulation:train_steps, one trained run each")
    parser.add_argument("--samplers", default="dpm++:20 heun:10", help="sampler:steps[:grid] settings sampled on every run")
    parser.add_argument("--compute_sampler", default="dpm++:20", help="the setting fidelity_vs_compute.png plots")
    parser.add_argument("--train_args", default="", help="more train.py flags for every run")
    parser.add_argument("--tag", default="", help="suffix of the run folders, for an ablation")
    parser.add_argument("--parallel", type=COUNT, default=2)
    parser.add_argument("--figures", default=str(ROOT / "images"))
    main(parser.parse_args())
