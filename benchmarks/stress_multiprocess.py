"""Run 2-process training and 2-process sampling many times on CPU (gloo) and count the failures.

    python benchmarks/stress_multiprocess.py --repeats 20

A rank that exits while collectives are pending, or without tearing its process group down, fails
a run at random (SIGABRT, "terminate called without an active exception"); this script shows how
often. Each run is a tiny model on a tiny mock set, so a repeat takes seconds.
"""
import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tqdm import trange

from cosmodiff.cli import ArgumentParser, COUNT
from cosmodiff.fields import save_fields
from cosmodiff.mock import make_mock_set
from cosmodiff.repository import ROOT

LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
          "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
TINY = ["--image_size", "32", "--batch_size", "4", "--sampling_timesteps", "2", "--warmup_steps", "2"]


def run(command, cwd):
    env = dict(os.environ, ACCELERATE_USE_CPU="true", COSMODIFF_THREADS="1")
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def main(args):
    work = Path(tempfile.mkdtemp(prefix="stress-"))
    data = work / "tiny.npz"
    save_fields(data, make_mock_set(1, grid=32, image_size=32, progress=False, method="2lpt"))
    train = [str(ROOT / "train.py"), "--data_path", str(data), "--results_dir", str(work / "results"), *TINY,
             "--train_steps", "2", "--save_every", "2"]
    generate = [str(ROOT / "UNet-DDPM" / "generate_images.py"), "--checkpoint", str(work / "results" / "run"),
                "--num_samples", "3", "--sampler", "ddim", "--steps", "2", "--batch_size", "1"]
    first = run([sys.executable, *train, "--run_name", "run"], work)
    if first.returncode:
        sys.exit(f"the single-process training the sampling runs need failed:\n{first.stderr[-2000:]}")
    failures = {"training": [], "sampling": []}
    for repeat in trange(args.repeats, desc="2-process runs"):
        for kind, script in (("training", train + ["--run_name", f"ddp-{repeat}"]),
                             ("sampling", generate + ["--out", str(work / f"samples-{repeat}")])):
            result = run(LAUNCH + script, work)
            if result.returncode:
                failures[kind].append((repeat, result.returncode, result.stderr[-600:]))
    for kind, failed in failures.items():
        print(f"2-process {kind}: {len(failed)} failures in {args.repeats} runs")
        for repeat, code, tail in failed:
            print(f"  run {repeat}: exit {code}\n    " + tail.replace("\n", "\n    "))
    sys.exit(1 if any(failures.values()) else 0)


if __name__ == "__main__":
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=COUNT, default=20)
    main(parser.parse_args())
