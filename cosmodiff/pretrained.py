"""Pretrained models: run folders shipped in pretrained/NAME, each with manifest.json (the command
that trained it, its data, the commit, its scorecard and every file's SHA-256), so a fresh clone
samples and evaluates with no training. Loading a folder checks it against its manifest
(`cosmodiff.checkpoint.verify_manifest`)."""
import json
import os
import shutil
from pathlib import Path

from cosmodiff.checkpoint import sha256
from cosmodiff.repository import ROOT, commit

PRETRAINED = ROOT / "pretrained"
FILES = ("config.json", "model.safetensors", "log.csv")  # what sampling, evaluation and the run's record need
MAX_MODEL_BYTES = 20 * 2 ** 20  # per model, so the repository stays small


def publish(run_dir, folder, command, data, scorecard):
    """Copy a run folder's FILES into folder with its manifest, through a temporary folder so the copy
    is whole; refuses weights over MAX_MODEL_BYTES. Returns the manifest."""
    run_dir, folder = Path(run_dir), Path(folder)
    size = (run_dir / "model.safetensors").stat().st_size
    if size > MAX_MODEL_BYTES:
        raise ValueError(f"{run_dir / 'model.safetensors'}: {size / 2 ** 20:.1f} MiB is over the "
                         f"{MAX_MODEL_BYTES / 2 ** 20:.0f} MiB a pretrained model may take")
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for name in FILES:
        shutil.copy2(run_dir / name, partial / name)
    manifest = dict(command=command, data=data, commit=commit() or "unknown", scorecard=scorecard,
                    sha256={name: sha256(partial / name) for name in FILES})
    (partial / "manifest.json").write_text(json.dumps(manifest, indent=1))
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(partial, folder)
    return manifest
