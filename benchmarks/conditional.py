"""Conditional fidelity: train the default conditional run, then evaluate it at every test cosmology
for several classifier-free guidance weights.

    python benchmarks/conditional.py [--train_steps 1200] [--guidance 1,1.5,2,3] [--num_samples 64] \
        [--sampler dpm++:20:log] [--figures images]

Trains `train.py --data_path train_data/conditional --condition Omega_m,sigma_8` (the split is made on
first use; an interrupted training resumes), runs evaluate/cosmology.py for each W into
benchmarks/out/conditional/guidance-W (finished samples are reused), prints MAFD/floor (median and
worst over the test points) and the derivative errors per W, writes conditional.json/.md and copies
the best W's figures to --figures.
"""
import argparse
import json
import shutil
import sys
from pathlib import Path

from cosmodiff.benchmark import run, trained
from cosmodiff.checkpoint import read_log
from cosmodiff.cli import ArgumentParser, COUNT
from cosmodiff.diffusion import parse_setting
from cosmodiff.repository import ROOT

OUT = ROOT / "benchmarks" / "out" / "conditional"


def main(args):
    run_dir = OUT / "results" / "run"
    trained(run_dir, ["--data_path", ROOT / "train_data" / "conditional", "--condition", "Omega_m,sigma_8",
                      "--formulation", args.formulation, "--train_steps", args.train_steps, "--save_every", 200,
                      *args.train_args.split()])
    last = read_log(run_dir)[-1]
    sampler, steps, grid = parse_setting(args.sampler)
    results = []
    for weight in [float(value) for value in args.guidance.split(",")]:
        out = OUT / f"guidance-{weight:g}"
        run([sys.executable, ROOT / "evaluate" / "cosmology.py", run_dir, "--num_samples", args.num_samples,
             "--sampler", sampler, "--steps", steps, *(["--grid", grid] if grid else []), "--guidance", weight,
             "--out", out])
        summary = json.loads((out / "cosmology.json").read_text())
        results.append(dict(guidance=weight, out=str(out), median=summary["median_mafd_over_floor"],
                            worst=summary["max_mafd_over_floor"],
                            derivatives={name: value["median_relative_error"]
                                         for name, value in summary["derivatives"].items()}))
    best = min(results, key=lambda result: result["median"])
    lines = ["| guidance W | MAFD/floor median | MAFD/floor worst | d ln P / d Omega_m error | d ln P / d sigma_8 error |",
             "| --- | --- | --- | --- | --- |"]
    for result in results:
        errors = " | ".join(f"{100 * result['derivatives'].get(name, float('nan')):.0f}%" for name in ("Omega_m", "sigma_8"))
        lines.append(f"| {result['guidance']:g} | {result['median']:.2f} | {result['worst']:.2f} | {errors} |")
    table = "\n".join(lines)
    record = dict(train_steps=last["step"], train_cpu_minutes=last["cpu_s"] / 60, train_minutes=last["elapsed_s"] / 60,
                  sampler=args.sampler, num_samples=args.num_samples, results=results, best_guidance=best["guidance"])
    (OUT / "conditional.json").write_text(json.dumps(record, indent=1))
    (OUT / "conditional.md").write_text(table + "\n")
    print(f"\nConditional UNet, {last['step']} steps ({last['cpu_s'] / 60:.1f} CPU-min), {args.sampler}, "
          f"{args.num_samples} generated fields per point; median of the derivative errors over k in [2 k_F, k_Nyq / 2]")
    print(table)
    print(f"Best W = {best['guidance']:g}; its per-point table: {best['out']}/cosmology.md")
    if args.figures:
        Path(args.figures).mkdir(parents=True, exist_ok=True)
        for name in ("conditional_response.png", "conditional_derivatives.png"):
            shutil.copy(Path(best["out"]) / name, Path(args.figures) / name)


if __name__ == "__main__":
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train_steps", type=COUNT, default=1200)
    parser.add_argument("--formulation", default="vp")
    parser.add_argument("--train_args", default="", help="more train.py flags")
    parser.add_argument("--guidance", default="1,1.5,2,3", help="classifier-free guidance weights to compare")
    parser.add_argument("--num_samples", type=COUNT, default=64, help="generated fields per test point")
    parser.add_argument("--sampler", default="dpm++:20:log", help="sampler:steps[:grid]")
    parser.add_argument("--figures", default=None, help="copy the best W's figures here, e.g. images")
    main(parser.parse_args())
