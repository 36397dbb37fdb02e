"""The CUDA path on one GPU, in one run: train.py's speed in fp32 and in bf16 mixed precision (accelerate's
ACCELERATE_MIXED_PRECISION), generate_images.py's speed in both and the bf16 samples' P(k) against the
fp32 ones from the same noise, and the particle-mesh conditional run trained there (its folder is
the run's output, for inference on CPU).

    python benchmarks/cuda_check.py --out OUT [--data train_data/nonlinear] [--steps 400] [--samples 384] \
        [--conditional_minutes 3] [--workers 16]

Writes OUT/cuda_check.json (the numbers) and OUT/conditional/{config.json,model.safetensors,log.csv}.
The conditional split (cosmodiff.mock's conditional-nonlinear train file, --conditional_sims
simulations) is simulated there by --workers processes; the run uses the recipe of docs/results.md's
best lever (wsd, lr 1e-3, EMA 0.999, --loss_k_power 1) for --conditional_minutes of training at batch
--conditional_batch.
"""
import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cosmodiff import stats
from cosmodiff.benchmark import run
from cosmodiff.checkpoint import log_images_per_s, read_config
from cosmodiff.cli import ArgumentParser, COUNT, POSITIVE
from cosmodiff.fields import save_fields
from cosmodiff.mock import CONDITIONAL_NONLINEAR_SIMS, CONDITIONAL_NONLINEAR_SLABS, CONDITIONAL_SEED, make_mock_set
from cosmodiff.repository import ROOT

RECIPE = ["--lr", "1e-3", "--lr_schedule", "wsd", "--ema_decay", "0.999", "--loss_k_power", "1"]


def run_at(command, precision):
    """A script run with accelerate's mixed precision set to precision ("no" or "bf16")."""
    run([sys.executable, *command], ACCELERATE_MIXED_PRECISION=precision)


def training_speed(args, work, precision):
    """images/s of the default UNet over --steps steps, past the warm-up window."""
    run_at([ROOT / "train.py", "--data_path", args.data, "--train_steps", args.steps, "--save_every", args.steps,
            "--log_every", 25, "--val_samples", 0, "--results_dir", work, "--run_name", f"speed-{precision}"], precision)
    return log_images_per_s(work / f"speed-{precision}", after_step=args.steps // 4)


def sampling(args, work, run_dir, precision):
    """--samples fields of the run with UniPC 20 steps, and the seconds per sample."""
    out = work / f"samples-{precision}"
    run_at([ROOT / "UNet-DDPM" / "generate_images.py", "--checkpoint", run_dir, "--num_samples", args.samples,
            "--batch_size", 128, "--out", out], precision)
    return np.load(out / "samples.npy"), json.loads((out / "samples.json").read_text())["seconds_per_sample"]


def conditional_run(args, work):
    """The particle-mesh conditional split simulated by --workers processes, and the run trained on it."""
    started = time.time()
    data = work / "conditional-nonlinear"
    save_fields(data / "train.npz", make_mock_set(args.conditional_sims, seed=CONDITIONAL_SEED, latin_hypercube=True,
                                                  method="pm", slabs_per_sim=CONDITIONAL_NONLINEAR_SLABS,
                                                  workers=args.workers))
    simulated = time.time() - started
    run_at([ROOT / "train.py", "--data_path", data, "--condition", "Omega_m,sigma_8", *RECIPE, "--train_minutes",
            args.conditional_minutes, "--batch_size", args.conditional_batch, "--save_every", 100000, "--val_samples", 0,
            "--results_dir", work, "--run_name", "conditional"], "bf16")
    folder = Path(args.out) / "conditional"
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "model.safetensors", "log.csv"):
        shutil.copy2(work / "conditional" / name, folder / name)
    steps = read_config(work / "conditional")["step"]
    return dict(simulation_seconds=simulated, steps=steps,
                images_per_s=log_images_per_s(work / "conditional", after_step=steps // 10))


def main(args):
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    record = dict(torch=torch.__version__, device=torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
                  steps=args.steps, samples=args.samples)
    record["train_images_per_s"] = {precision: training_speed(args, work, precision) for precision in ("no", "bf16")}
    fields, seconds = {}, {}
    for precision in ("no", "bf16"):
        fields[precision], seconds[precision] = sampling(args, work, work / "speed-bf16", precision)
    box_size = read_config(work / "speed-bf16")["box_size"]
    _, pk_fp32, _ = stats.power_spectrum(fields["no"], box_size)
    _, pk_bf16, _ = stats.power_spectrum(fields["bf16"], box_size)
    record["sample_seconds_per_field"] = seconds
    record["bf16_vs_fp32"] = dict(max_abs_mean_pk_ratio_minus_1=float(np.max(np.abs(pk_bf16.mean(0) / pk_fp32.mean(0) - 1))),
                                  median_abs_field_difference=float(np.median(np.abs(fields["bf16"] - fields["no"]))))
    record["conditional"] = conditional_run(args, work)
    (Path(args.out) / "cuda_check.json").write_text(json.dumps(record, indent=1))
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--work", default="/tmp/cuda_check", help="run folders and data")
    parser.add_argument("--data", default=str(ROOT / "train_data" / "nonlinear"))
    parser.add_argument("--steps", type=COUNT, default=400)
    parser.add_argument("--samples", type=COUNT, default=384)
    parser.add_argument("--conditional_minutes", type=POSITIVE, default=3.0)
    parser.add_argument("--conditional_batch", type=COUNT, default=32)
    parser.add_argument("--conditional_sims", type=COUNT, default=CONDITIONAL_NONLINEAR_SIMS,
                        help="Latin-hypercube simulations (default: the conditional-nonlinear split's train file)")
    parser.add_argument("--workers", type=COUNT, default=16)
    main(parser.parse_args())
