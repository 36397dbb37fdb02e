"""Fidelity benchmark: train a model on a mock split's train fields (the default 2LPT data; --data
nonlinear: particle-mesh; large, large-nonlinear: four times the training simulations), sample as
many fields as the test split holds with one or more samplers, and evaluate them against the test
split (MAFD next to its floor and in k bands, pixel PDF, Minkowski functionals, seams, memorisation
against the train split).

    python benchmarks/fidelity.py [--model unet] [--formulation vp] [--train_minutes 15 | --train_steps 1500]
                                  [--samplers "dpm++:20 heun:10"] [--data nonlinear]

Resumable: a finished training stage (or a partial one, resumed) and finished samples are reused.
Prints one table against the targets per sampler and writes fidelity.json next to its evaluation figures.
"""
import argparse
import json
import os
import sys
from pathlib import Path

from cosmodiff.checkpoint import read_config, read_log
from cosmodiff.benchmark import run, trained
from cosmodiff.cli import ArgumentParser, COUNT, INDEX, POSITIVE, folder_name
from cosmodiff.diffusion import SAMPLERS, network_evaluations, parse_setting
from cosmodiff.error_budget import K_BANDS, record_rows
from cosmodiff.fields import load_fields
from cosmodiff.mock import DEFAULT_SPLIT, SPLIT_FOLDERS, SPLITS, ensure_split
from cosmodiff.sampling import samples_match
from cosmodiff.repository import ROOT
from results_tables import fidelity_summaries



def sample_stage(args, run_dir, n_samples, out, train_steps, sampler, steps, grid):
    if samples_match(out, dict(num_samples=n_samples, sampler=sampler, steps=steps, step=train_steps,
                               grid=grid or SAMPLERS[sampler].grid)):
        return
    run([sys.executable, ROOT / "UNet-DDPM" / "generate_images.py", "--checkpoint", run_dir, "--num_samples", n_samples,
         "--sampler", sampler, "--steps", steps, *(["--grid", grid] if grid else []), "--seed", args.seed,
         "--batch_size", args.batch_size, "--out", out])


def band_mafds(report):
    """MAFD within each k band of K_BANDS (bins the overall MAFD uses)."""
    spectrum = report["power_spectrum"]
    bands = {}
    for name, (low, high) in K_BANDS.items():
        chosen = [abs(ratio - 1) for k, ratio, used in zip(spectrum["k"], spectrum["ratio"], spectrum["in_mafd"])
                  if used and low <= k < high]
        bands[name] = sum(chosen) / len(chosen) if chosen else None
    return bands


def verdicts(report):
    """Each target of the benchmark: (name, measured, target, met)."""
    seam = report["seam"]
    minkowski = min(report["minkowski"][name]["fraction_within_1sigma"] for name in ("v0", "v1", "v2"))
    rows = [
        ("MAFD / floor median", f"{report['mafd_over_floor']:.2f}", "<= 1.5", report["mafd_over_floor"] <= 1.5),
        ("pixel PDF bins within real 1-sigma", f"{100 * report['pixel_pdf']['fraction_within_1sigma']:.0f}%", "100%",
         report["pixel_pdf"]["fraction_within_1sigma"] == 1.0),
        ("Minkowski bins within real 1-sigma (worst of V0-V2)", f"{100 * minkowski:.0f}%", "100%", minkowski == 1.0),
        ("seam score median", f"{seam['generated']['median']:.3f}",
         f"in real [{seam['real']['low']:.3f}, {seam['real']['high']:.3f}]",
         seam["real"]["low"] <= seam["generated"]["median"] <= seam["real"]["high"]),
    ]
    if "memorisation" in report:
        memo = report["memorisation"]
        rows.append(("nearest / median train distance (generated vs real)",
                     f"{memo['generated_relative']['median']:.3f} vs {memo['real_relative']['median']:.3f}",
                     "generated >= real", memo["generated_relative"]["median"] >= memo["real_relative"]["median"]))
    return rows


def report(path):
    """A markdown table of the summaries in a results file (--results), one row each."""
    print("\n".join(fidelity_summaries(json.loads(Path(path).read_text()))))


def main(args):
    if args.report:
        report(args.report)
        return
    folder = SPLIT_FOLDERS[args.data]
    train_path, test_path = ensure_split(folder, args.data)
    n_samples = args.num_samples or max(256, len(load_fields(test_path)))
    length = f"{args.train_minutes:g}min" if args.train_minutes else str(args.train_steps)
    out = Path(args.out) / (args.name or f"{args.model.replace('/', '')}-{args.formulation}-{length}")
    run_dir = out / "results" / "run"
    budget = ["--train_minutes", args.train_minutes] if args.train_minutes else ["--train_steps", args.train_steps]
    train_steps = trained(run_dir, ["--data_path", folder, "--model", args.model, "--formulation", args.formulation, *budget,
                                    "--save_every", args.save_every, "--seed", args.seed, *args.train_args.split()])
    for setting in args.samplers.split():
        evaluate(args, run_dir, out, n_samples, train_steps, *parse_setting(setting), train_path, test_path)


def evaluate(args, run_dir, out, n_samples, train_steps, sampler, steps, grid, train_path, test_path):
    samples = out / f"samples-{sampler}-{steps}{'-' + grid if grid else ''}"
    sample_stage(args, run_dir, n_samples, samples, train_steps, sampler, steps, grid)
    evaluation = samples / "evaluation"
    memorisation = [] if args.no_memorisation else ["--train", train_path]
    run([sys.executable, ROOT / "evaluate" / "power_spectrum.py", test_path, samples / "samples.npy", *memorisation,
         "--out", evaluation])
    report = json.loads((evaluation / "report.json").read_text())
    timing = json.loads((samples / "samples.json").read_text())
    last = read_log(run_dir)[-1]
    train_seconds, train_cpu_seconds = last["elapsed_s"], last["cpu_s"]
    rows = verdicts(report)
    config = read_config(run_dir)
    summary = dict(name=out.name, data=args.data, model=args.model, formulation=config["diffusion"].get("formulation", "vp"),
                   train_steps=train_steps, train_minutes=train_seconds / 60,
                   train_cpu_minutes=train_cpu_seconds / 60,
                   threads=int(os.environ.get("COSMODIFF_THREADS", 0)) or os.cpu_count(),
                   train_args=config["train_args"], sampler=sampler, steps=steps, grid=timing.get("grid", SAMPLERS[sampler].grid),
                   network_evaluations=network_evaluations(sampler, steps),
                   seconds_per_sample=timing["seconds_per_sample"], n_generated=n_samples,
                   n_real=report["sizes"]["real"], mafd=report["mafd"], floor=report["floor"],
                   mafd_over_floor=report["mafd_over_floor"], band_mafd=band_mafds(report),
                   pixel_pdf_ks=report["pixel_pdf"]["distance"],
                   log_density_std=dict(real=report["pixel_pdf"]["log_density_std_real"],
                                        generated=report["pixel_pdf"]["log_density_std_generated"]),
                   minkowski_within_1sigma={name: report["minkowski"][name]["fraction_within_1sigma"]
                                            for name in ("v0", "v1", "v2")},
                   seam_median=report["seam"]["generated"]["median"],
                   targets=[dict(name=n, measured=m, target=t, met=bool(ok)) for n, m, t, ok in rows])
    (samples / "fidelity.json").write_text(json.dumps(summary, indent=1))
    if args.results:
        record_rows(Path(args.results), [summary], key=("name", "sampler", "steps", "grid"))
    print(f"\n{args.model} ({summary['formulation']}), {train_steps} steps ({train_seconds / 60:.1f} min), "
          f"{sampler} {steps} steps ({summary['grid']} grid), {n_samples} generated vs {report['sizes']['real']} test fields")
    print(f"MAFD {100 * report['mafd']:.2f}%  floor {100 * report['floor']['median']:.2f}% "
          f"[{100 * report['floor']['low']:.2f}, {100 * report['floor']['high']:.2f}]")
    width = max(len(name) for name, *_ in rows)
    for name, measured, target, met in rows:
        print(f"{name:<{width}}  {measured:>18}  target {target:<22} {'met' if met else 'NOT met'}")
    print(f"Written: {samples / 'fidelity.json'} and figures in {evaluation}")
    if args.figures:
        publish_figures(args, evaluation, samples, test_path)


def publish_figures(args, evaluation, samples, test_path):
    """Copy the evaluation figures to --figures (the README's images/) with a real-vs-generated panel."""
    import shutil

    import numpy as np

    from cosmodiff import plots

    folder = Path(args.figures)
    folder.mkdir(parents=True, exist_ok=True)
    prefix = f"fidelity_{args.model.replace('/', '')}"
    for figure in ("power_spectra_comparison", "power_spectrum_ratio", "periodic", "pixel_pdf", "minkowski"):
        shutil.copy(evaluation / f"{figure}.png", folder / f"{prefix}_{figure}.png")
    real = load_fields(test_path).fields
    generated = np.load(samples / "samples.npy")
    plots.side_by_side({"real (test split)": real[::97][:4], f"generated ({args.model})": generated[:4]},
                       folder / f"{prefix}_fields.png")
    print(f"Figures copied to {folder}/{prefix}_*.png")


if __name__ == "__main__":
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=DEFAULT_SPLIT,
                        choices=[name for name, files in SPLITS.items() if set(files) == {"train", "test"}],
                        help="the mock split trained on and compared with (train_data/<name>)")
    parser.add_argument("--model", default="unet")
    parser.add_argument("--formulation", default="vp", help="vp, edm or flow")
    parser.add_argument("--train_steps", type=COUNT, default=1500)
    parser.add_argument("--train_minutes", type=POSITIVE, default=None, help="a training-time budget instead of --train_steps")
    parser.add_argument("--save_every", type=COUNT, default=500)
    parser.add_argument("--train_args", default="", help="more train.py flags, e.g. '--lr 5e-4 --batch_size 32'")
    parser.add_argument("--num_samples", type=COUNT, default=None, help="default: the test split's size (>= 256)")
    parser.add_argument("--samplers", default="dpm++:20", help="sampler:steps[:grid] settings, each sampled and evaluated")
    parser.add_argument("--batch_size", type=COUNT, default=64)
    parser.add_argument("--seed", type=INDEX, default=0)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out"))
    parser.add_argument("--name", type=folder_name, default=None, help="the experiment's folder under --out (default: <model>-<length>)")
    parser.add_argument("--no_memorisation", action="store_true",
                        help="skip the nearest-training-field search (2 minutes per evaluation on 2 cores)")
    parser.add_argument("--results", default=None, help="also add the summary to this file, e.g. "
                        "benchmarks/results/fidelity_by_data.json")
    parser.add_argument("--report", default=None, help="print the table of a --results file instead of running")
    parser.add_argument("--figures", default=None, help="also copy the figures here, e.g. images")
    main(parser.parse_args())
