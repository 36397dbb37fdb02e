"""The main job as a new user meets it, timed: the default particle-mesh split made as train.py makes it
on first use, then the default training run through `accelerate launch train.py`, on this machine's
cores, with each part's wall-clock seconds.

    python benchmarks/main_job.py [--out benchmarks/out/main-job] [--results benchmarks/results/main_job.json]

The split is made by `python -m cosmodiff.mock --split nonlinear` (the function train.py calls on
first use, with the same default workers) into --out/data, and the run trains on that folder with
train.py's defaults otherwise (its checks against the split's test fields included). The part of the
run outside its training steps (start-up, the fidelity checks, sample grids and checkpoints) is the
launch's wall time less log.csv's elapsed_s. --out is emptied first; a row is appended to --results.
"""
import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from cosmodiff.benchmark import run
from cosmodiff.checkpoint import read_log
from cosmodiff.cli import ArgumentParser, writable_folder
from cosmodiff.repository import ROOT, commit

TARGET_S = 600  # the main job's budget on 2 idle cores, data included


def timed(command):
    """Wall-clock seconds of one command run to its end."""
    start = time.perf_counter()
    run(command)
    return time.perf_counter() - start


def main(args):
    out = Path(args.out)
    writable_folder(out, "--out")
    shutil.rmtree(out, ignore_errors=True)
    data_s = timed([sys.executable, "-m", "cosmodiff.mock", "--split", "nonlinear", "--out", out / "data"])
    launch_s = timed([sys.executable, "-m", "accelerate.commands.launch", ROOT / "train.py", "--data_path", out / "data",
                      "--results_dir", out / "results", "--run_name", "default"])
    training_s = read_log(out / "results" / "default")[-1]["elapsed_s"]
    row = dict(commit=commit(short=True), cores=os.cpu_count(), data_s=round(data_s, 1),
               launch_s=round(launch_s, 1), training_steps_s=round(training_s, 1),
               outside_steps_s=round(launch_s - training_s, 1), total_s=round(data_s + launch_s, 1),
               target_s=TARGET_S)
    print(json.dumps(row))
    results = Path(args.results)
    rows = json.loads(results.read_text())["rows"] if results.exists() else []
    results.write_text(json.dumps(dict(rows=rows + [row]), indent=1) + "\n")


def build_parser():
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "main-job"))
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "main_job.json"))
    return parser


if __name__ == "__main__":
    main(build_parser().parse_args())
