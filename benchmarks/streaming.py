"""Streaming a shard set bigger than memory against the default data held in memory: peak memory and
training throughput, in one run, side by side.

    python benchmarks/streaming.py [--gigabytes 20] [--steps 120] [--num_workers 1]

Writes a synthetic shard set of --gigabytes of 64x64 fields (the default training fields with random
periodic shifts, 4096 per shard, with cosmodiff.shards.write_shard; kept and reused) under
benchmarks/out/streaming, then trains the default UNet on it and on the default data at the same
time, one thread each (COSMODIFF_THREADS=1), both with --num_workers workers and no fidelity check.
Memory is the peak over the run of the summed proportional set size (PSS, /proc/PID/smaps_rollup) of
each training process and its DataLoader workers: shared pages counted once, file pages the memory
map brought in included. Throughput is images/s from log.csv past the first --warmup steps.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cosmodiff.checkpoint import log_images_per_s
from cosmodiff.cli import ArgumentParser, COUNT, INDEX, POSITIVE
from cosmodiff.fields import load_fields
from cosmodiff.mock import ensure_default_data
from cosmodiff.shards import FORMAT, is_shard_set, read_index, write_index, write_shard
from cosmodiff.repository import ROOT

OUT = ROOT / "benchmarks" / "out" / "streaming"
SHARD = 4096


def synthetic_shards(folder, gigabytes):
    """A shard set of about `gigabytes` GB of the default training fields, randomly rolled per shard."""
    train = load_fields(ensure_default_data()[0])
    count = int(gigabytes * 1e9 // (SHARD * train.fields[0].nbytes))
    if is_shard_set(folder) and len(read_index(folder)["shards"]) == count:
        return
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    shards = []
    for number in tqdm(range(count), desc="synthetic shards", unit="shard"):
        chosen = rng.integers(0, len(train), SHARD)
        shift = rng.integers(0, train.image_size, 2)
        fields = np.roll(train.fields[chosen], tuple(shift), axis=(1, 2))
        shards.append(write_shard(folder, number, fields, [(f"synthetic-{number}", SHARD)]))
    write_index(folder, dict(format=FORMAT, image_size=train.image_size, box_size=train.box_size, param_names=[],
                             shards=shards))


def tree_pss_kib(pid):
    """Summed PSS (KiB) of a process and all its descendants."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            rollup = Path(f"/proc/{current}/smaps_rollup").read_text()
            total += int(next(line.split()[1] for line in rollup.splitlines() if line.startswith("Pss:")))
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(child) for child in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError, StopIteration):
            continue
    return total


def main(args):
    synthetic_shards(OUT / "shards", args.gigabytes)
    size_gb = sum(path.stat().st_size for path in (OUT / "shards").glob("shard-*.npy")) / 1e9
    runs = {"in memory (default data)": ROOT / "train_data", f"streamed ({size_gb:.1f} GB shards)": OUT / "shards"}
    processes, peaks = {}, {}
    for name, data in runs.items():
        run_name = "memory" if data.name == "train_data" else "streamed"
        command = [sys.executable, ROOT / "train.py", "--data_path", data, "--train_steps", args.steps,
                   "--save_every", 10 * args.steps, "--log_every", args.warmup, "--val_samples", 0, "--num_workers",
                   args.num_workers, "--results_dir", OUT / "results", "--run_name", run_name, "--sampling_timesteps", 1]
        shutil.rmtree(OUT / "results" / run_name, ignore_errors=True)
        processes[name] = (subprocess.Popen(list(map(str, command)), stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL, env=dict(os.environ, COSMODIFF_THREADS="1")),
                           run_name)
        peaks[name] = 0
    while any(process.poll() is None for process, _ in processes.values()):
        for name, (process, _) in processes.items():
            if process.poll() is None:
                peaks[name] = max(peaks[name], tree_pss_kib(process.pid))
        time.sleep(0.2)
    rows = []
    for name, (process, run_name) in processes.items():
        if process.returncode:
            raise SystemExit(f"{name}: train.py exited with {process.returncode}")
        rows.append(dict(data=name, peak_pss_gb=peaks[name] / 2 ** 20,
                         images_per_s=log_images_per_s(OUT / "results" / run_name, args.warmup)))
    reference = rows[0]["images_per_s"]
    lines = ["| data | peak memory (PSS, GiB) | images/s | ratio |", "| --- | --- | --- | --- |"]
    lines += [f"| {row['data']} | {row['peak_pss_gb']:.2f} | {row['images_per_s']:.2f} | "
              f"{row['images_per_s'] / reference:.2f} |" for row in rows]
    table = "\n".join(lines)
    (OUT / "streaming.md").write_text(table + "\n")
    (OUT / "streaming.json").write_text(json.dumps(dict(settings=vars(args), rows=rows), indent=1))
    print(table)


if __name__ == "__main__":
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gigabytes", type=POSITIVE, default=20.0)
    parser.add_argument("--steps", type=COUNT, default=120)
    parser.add_argument("--warmup", type=COUNT, default=20)
    parser.add_argument("--num_workers", type=INDEX, default=1)
    main(parser.parse_args())
