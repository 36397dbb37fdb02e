"""Training throughput: our accelerate loop (train.py) against lucidrains' Trainer on the same
network, image size and batch, in one run, as images/s and their ratio; and our loop with speed
options (--variant) against itself.

    python benchmarks/train_throughput.py [--model unet] [--image_size 64] [--batch_size 16] [--steps 40]
    COSMODIFF_THREADS=1 python benchmarks/train_throughput.py --no_reference --variant=--compile \
        --variant="--precision auto" --variant="--batch_size 32" --results benchmarks/results/train_throughput.json

The Trainer needs a folder of 100+ image files; this script writes the default training fields
there as 16-bit grayscale PNGs. Both runs skip their first --warmup steps. --no_reference times
only our loop (e.g. for the DiT presets, which the Trainer's sample grids do not support). Each
variant is train.py with those flags added, timed past the same warm-up, as a ratio to the plain loop;
its warm-up seconds (torch.compile's compilation falls there) are reported beside it.
"""
import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from cosmodiff.checkpoint import log_images_per_s, read_log
from cosmodiff.cli import ArgumentParser, COUNT, writable_file
from cosmodiff.launch import cpu_has_bf16_units
from cosmodiff.fields import load_fields
from cosmodiff.mock import ensure_default_data
from cosmodiff.models import build_model, model_kwargs
from cosmodiff.transforms import LogTransform
from cosmodiff.repository import ROOT, commit


def ours(args, work, name="ours", flags=()):
    """images/s of train.py (with extra flags) from its log.csv past the warm-up window, and the
    warm-up window's seconds."""
    command = [sys.executable, str(ROOT / "train.py"), "--model", args.model, "--image_size", str(args.image_size),
               "--batch_size", str(args.batch_size), "--train_steps", str(args.steps), "--log_every", str(args.warmup),
               "--save_every", str(10 * args.steps), "--results_dir", str(work / "results"), "--run_name", name,
               "--sampling_timesteps", "1", "--val_samples", "0", *flags]
    subprocess.run(command, cwd=work, check=True, capture_output=True)
    run = work / "results" / name
    warmup_s = next(row["elapsed_s"] for row in read_log(run) if row["step"] >= args.warmup)
    return log_images_per_s(run, args.warmup), warmup_s


def variant_rows(args, work, plain_rate, plain_warmup_s):
    """One row per --variant: its images/s over the plain loop's, and its warm-up seconds."""
    rows = []
    for index, variant in enumerate(args.variants):
        rate, warmup_s = ours(args, work, f"variant-{index}", shlex.split(variant))
        print(f"ours {variant}: {rate:.2f} images/s = {rate / plain_rate:.2f}x the plain loop; "
              f"first {args.warmup} steps {warmup_s:.0f} s (plain: {plain_warmup_s:.0f} s)")
        rows.append(dict(flags=variant, images_per_s=round(rate, 3), ratio=round(rate / plain_rate, 3),
                         warmup_s=round(warmup_s, 1)))
    return rows


def write_pngs(fields, folder):
    """Model-space fields mapped from the clamp range to [0, 1], as 16-bit PNGs: the Trainer's input."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    transform = LogTransform.fit(fields)
    low, high = transform.x0_range
    scaled = (transform.forward(fields) - low) / (high - low)
    for i, field in enumerate(scaled):
        Image.fromarray(np.round(field * 65535).astype(np.uint16)).save(folder / f"{i}.png")


def reference(args, work):
    """images/s of denoising-diffusion-pytorch's Trainer on the same network."""
    from denoising_diffusion_pytorch import GaussianDiffusion, Trainer

    network = build_model(args.model, model_kwargs(args.model, args.image_size))
    diffusion = GaussianDiffusion(network, image_size=args.image_size, timesteps=1000, objective="pred_v",
                                  beta_schedule="sigmoid")
    timings = {}
    for steps in (args.warmup, args.steps):
        trainer = Trainer(diffusion, str(work / "pngs"), train_batch_size=args.batch_size, train_num_steps=steps,
                          save_and_sample_every=10 * args.steps, results_folder=str(work / "trainer"),
                          calculate_fid=False, amp=False, convert_image_to="L", num_samples=1)
        started = time.time()
        trainer.train()
        timings[steps] = time.time() - started
    return (args.steps - args.warmup) * args.batch_size / (timings[args.steps] - timings[args.warmup])


def main(args):
    if args.results:
        writable_file(args.results, "--results")
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        ours_rate, ours_warmup_s = ours(args, work)
        print(f"ours (train.py, {args.model}, {args.image_size}px, batch {args.batch_size}): {ours_rate:.2f} images/s")
        row = dict(model=args.model, image_size=args.image_size, batch_size=args.batch_size, steps=args.steps,
                   warmup=args.warmup, threads=os.environ.get("COSMODIFF_THREADS", "default"),
                   processor=platform.processor() or platform.machine(), cpu_bf16_units=cpu_has_bf16_units(),
                   commit=commit(short=True), images_per_s=round(ours_rate, 3), warmup_s=round(ours_warmup_s, 1),
                   variants=variant_rows(args, work, ours_rate, ours_warmup_s))
        if not args.no_reference:
            train_path, _ = ensure_default_data()
            fields = load_fields(train_path).fields[:256]
            write_pngs(fields, work / "pngs")
            reference_rate = reference(args, work)
            print(f"lucidrains Trainer, same network:        {reference_rate:.2f} images/s")
            print(f"ratio ours / Trainer: {ours_rate / reference_rate:.2f}x")
            row["trainer_images_per_s"] = round(reference_rate, 3)
    if args.results:
        path = Path(args.results)
        rows = json.loads(path.read_text()) if path.exists() else []
        path.write_text(json.dumps(rows + [row], indent=1) + "\n")


if __name__ == "__main__":
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="unet")
    parser.add_argument("--image_size", type=COUNT, default=64)
    parser.add_argument("--batch_size", type=COUNT, default=16)
    parser.add_argument("--steps", type=COUNT, default=40)
    parser.add_argument("--warmup", type=COUNT, default=10)
    parser.add_argument("--no_reference", action="store_true")
    parser.add_argument("--variant", action="append", default=[], dest="variants", help='train.py flags to time '
                        'against the plain loop, once per variant, e.g. --variant=--compile --variant="--precision auto"')
    parser.add_argument("--results", default=None, help="append the row to this JSON file")
    main(parser.parse_args())
