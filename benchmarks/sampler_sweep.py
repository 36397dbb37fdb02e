"""Sampler sweep: MAFD (next to its floor) and seconds per sample of every sampler and step count
on one trained run, same seeds, same number of samples; a table and images/sampler_sweep.png.

    python benchmarks/sampler_sweep.py --checkpoint RUN [--num_samples 384] [--configs "ddpm:1000 ddim:50 dpm++:20"]

The reference is DDPM with every training step; the result is the fewest network evaluations whose
MAFD is within 10% of it, per sampler.
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from cosmodiff import stats
from cosmodiff.checkpoint import read_config
from cosmodiff.cli import ArgumentParser, COUNT, INDEX
from cosmodiff.fields import load_fields
from cosmodiff.mock import SPLIT_FOLDERS, ensure_split
from cosmodiff.sampling import samples_match
from cosmodiff.repository import ROOT

DEFAULT_CONFIGS = "ddpm:1000 ddim:250 ddim:100 ddim:50 ddim:20 ddim:10 dpm++:50 dpm++:20 dpm++:10 dpm++:5"


def samples_for(args, wanted, sampler, steps):
    """samples.npy and its record for one sampler setting, made once per `wanted` checkpoint, step,
    seed and sample count."""
    out = Path(args.out) / f"{sampler}-{steps}"
    if not samples_match(out, wanted):
        subprocess.run([sys.executable, str(ROOT / "UNet-DDPM" / "generate_images.py"), "--checkpoint", wanted["checkpoint"],
                        "--num_samples", str(args.num_samples), "--sampler", sampler, "--steps", str(steps),
                        "--seed", str(args.seed), "--batch_size", str(args.batch_size), "--out", str(out)], check=True)
    return np.load(out / "samples.npy"), json.loads((out / "samples.json").read_text())


def plot(rows, reference, floor, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(6, 4))
    ax.axhspan(100 * floor["low"], 100 * floor["high"], color="gray", alpha=0.3, label="floor (real vs real), 5-95%")
    for sampler, marker in (("ddim", "o"), ("dpm++", "s"), ("ddpm", "*")):
        chosen = sorted((row["steps"], 100 * row["mafd"]) for row in rows if row["sampler"] == sampler)
        if chosen:
            ax.plot(*zip(*chosen), marker=marker, label=sampler)
    if reference is not None:
        ax.axhline(110 * reference, color="k", ls=":", label="DDPM 1000 + 10%")
    ax.set_xscale("log")
    ax.set_xlabel("network evaluations per sample")
    ax.set_ylabel("power spectrum MAFD [%]")
    ax.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main(args):
    _, test_path = ensure_split(SPLIT_FOLDERS["2lpt"], "2lpt")
    real = load_fields(test_path)
    k, pk_real, _ = stats.power_spectrum(real.fields, real.box_size)
    mask = stats.nyquist_mask(k, real.box_size, real.image_size)
    floor = stats.summarise(stats.mafd_floor(pk_real, args.num_samples, mask, real_sims=stats.simulations_for_floor(real.sim_index))[0])
    wanted = dict(checkpoint=str(Path(args.checkpoint).resolve()), seed=args.seed, num_samples=args.num_samples,
                  step=read_config(args.checkpoint)["step"])
    rows = []
    for config in args.configs.split():
        sampler, steps = config.split(":")
        fields, record = samples_for(args, wanted, sampler, int(steps))
        _, pk, _ = stats.power_spectrum(fields, real.box_size)
        rows.append(dict(sampler=sampler, steps=int(steps), mafd=stats.mafd(pk, pk_real, mask),
                         seconds_per_sample=record["seconds_per_sample"]))
    reference = next((row["mafd"] for row in rows if row["sampler"] == "ddpm"), None)
    print(f"{args.num_samples} samples vs {len(real)} test fields; floor {100 * floor['median']:.2f}% "
          f"[{100 * floor['low']:.2f}, {100 * floor['high']:.2f}]")
    print(f"{'sampler':<8} {'steps':>5} {'MAFD':>8} {'s/sample':>9}")
    for row in rows:
        print(f"{row['sampler']:<8} {row['steps']:>5} {100 * row['mafd']:>7.2f}% {row['seconds_per_sample']:>9.3f}")
    fewest = {}
    if reference is not None:
        for row in sorted(rows, key=lambda row: row["steps"]):
            if row["sampler"] != "ddpm" and row["mafd"] <= 1.1 * reference:
                fewest.setdefault(row["sampler"], row["steps"])
        print("fewest steps within 10% of DDPM-1000's MAFD:", fewest or "none")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "sampler_sweep.json").write_text(json.dumps(
        dict(rows=rows, floor=floor, reference_mafd=reference, fewest_within_10_percent=fewest,
             checkpoint=str(args.checkpoint), num_samples=args.num_samples), indent=1))
    plot(rows, reference, floor, args.figure)
    print(f"Wrote {args.figure} and {Path(args.out) / 'sampler_sweep.json'}")


if __name__ == "__main__":
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a run folder")
    parser.add_argument("--num_samples", type=COUNT, default=384)
    parser.add_argument("--configs", default=DEFAULT_CONFIGS, help="sampler:steps list")
    parser.add_argument("--seed", type=INDEX, default=0)
    parser.add_argument("--batch_size", type=COUNT, default=64)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "sampler_sweep"))
    parser.add_argument("--figure", default=str(ROOT / "images" / "sampler_sweep.png"))
    main(parser.parse_args())
