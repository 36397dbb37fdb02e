"""Training throughput: our accelerate loop (train.py) against lucidrains' Trainer on the same
network, image size and batch, in one run, as images/s and their ratio.

    python benchmarks/train_throughput.py [--model unet] [--image_size 64] [--batch_size 16] [--steps 40]

The Trainer needs a folder of 100+ image files; this script writes the default training fields
there as 16-bit grayscale PNGs. Both runs skip their first --warmup steps. --no_reference times
only our loop (e.g. for the DiT presets, which the Trainer's sample grids do not support).
"""
import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from cosmodiff.checkpoint import log_images_per_s
from cosmodiff.cli import ArgumentParser, COUNT
from cosmodiff.fields import load_fields
from cosmodiff.mock import ensure_default_data
from cosmodiff.models import build_model, model_kwargs
from cosmodiff.transforms import LogTransform
from cosmodiff.repository import ROOT


def ours(args, work):
    """images/s of train.py from its log.csv, past the warm-up window."""
    command = [sys.executable, str(ROOT / "train.py"), "--model", args.model, "--image_size", str(args.image_size),
               "--batch_size", str(args.batch_size), "--train_steps", str(args.steps), "--log_every", str(args.warmup),
               "--save_every", str(10 * args.steps), "--results_dir", str(work / "results"), "--run_name", "ours",
               "--sampling_timesteps", "1"]
    subprocess.run(command, cwd=work, check=True, capture_output=True)
    return log_images_per_s(work / "results" / "ours", args.warmup)


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
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        ours_rate = ours(args, work)
        print(f"ours (train.py, {args.model}, {args.image_size}px, batch {args.batch_size}): {ours_rate:.2f} images/s")
        if args.no_reference:
            return
        train_path, _ = ensure_default_data()
        fields = load_fields(train_path).fields[:256]
        write_pngs(fields, work / "pngs")
        reference_rate = reference(args, work)
        print(f"lucidrains Trainer, same network:        {reference_rate:.2f} images/s")
        print(f"ratio ours / Trainer: {ours_rate / reference_rate:.2f}x")


if __name__ == "__main__":
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="unet")
    parser.add_argument("--image_size", type=COUNT, default=64)
    parser.add_argument("--batch_size", type=COUNT, default=16)
    parser.add_argument("--steps", type=COUNT, default=40)
    parser.add_argument("--warmup", type=COUNT, default=10)
    parser.add_argument("--no_reference", action="store_true")
    main(parser.parse_args())
