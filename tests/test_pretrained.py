import csv
import hashlib
import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import cosmodiff
from cosmodiff import pretrained
from cosmodiff.checkpoint import CheckpointError
from cosmodiff.diffusion import build_formulation
from cosmodiff.models import build_model
from cosmodiff.pretrained import PRETRAINED, publish
from cosmodiff.transforms import LogTransform

KWARGS = dict(dim=8, dim_mults=[1, 2], attn_heads=1, attn_dim_head=8)
SHIPPED = sorted(path.parent for path in PRETRAINED.glob("*/manifest.json"))


def file_sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def tiny_run(tmp_path):
    """A run folder of a tiny, randomly initialised UNet."""
    torch.manual_seed(0)
    network = build_model("unet", KWARGS)
    run = tmp_path / "run"
    run.mkdir()
    save_file({name: tensor.contiguous() for name, tensor in network.state_dict().items()}, str(run / "model.safetensors"))
    fields = np.random.default_rng(0).lognormal(size=(4, 16, 16))
    config = dict(format=2, model={"name": "unet", "kwargs": KWARGS},
                  diffusion=build_formulation({"formulation": "vp", "timesteps": 100}).settings(), image_size=16,
                  box_size=250.0, transform=LogTransform.fit(fields).to_dict(), step=3, condition=None,
                  data={"path": "train_data/nonlinear", "n_fields": 4})
    (run / "config.json").write_text(json.dumps(config))
    with (run / "log.csv").open("w", newline="") as file:
        csv.writer(file).writerows([["step", "loss", "cpu_s"], [3, 0.5, 9.0]])
    return run


def test_published_model_carries_its_checksums_and_loads(tiny_run, tmp_path):
    folder = tmp_path / "pretrained" / "tiny"
    manifest = publish(tiny_run, folder, "accelerate launch train.py", {"path": "train_data/nonlinear"},
                       {"worst": {"statistic": "bispectrum", "over_floor": 2.0}})
    assert sorted(path.name for path in folder.iterdir()) == ["config.json", "log.csv", "manifest.json",
                                                              "model.safetensors"]
    assert manifest["sha256"] == {name: file_sha256(tiny_run / name) for name in ("config.json", "model.safetensors",
                                                                                "log.csv")}
    assert json.loads((folder / "manifest.json").read_text())["command"] == "accelerate launch train.py"
    fields = cosmodiff.sample(cosmodiff.load(folder), 2, sampler="ddim", steps=2, batch_size=2)
    assert fields.shape == (2, 16, 16) and np.isfinite(fields).all()


def test_a_damaged_or_missing_pretrained_file_is_refused_by_name(tiny_run, tmp_path):
    folder = tmp_path / "tiny"
    publish(tiny_run, folder, "train.py", {}, {})
    weights = folder / "model.safetensors"
    damaged = bytearray(weights.read_bytes())
    damaged[-1] ^= 1
    weights.write_bytes(bytes(damaged))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: its SHA-256 differs"):
        cosmodiff.load(folder)
    weights.unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors: listed in .*manifest\.json but missing"):
        cosmodiff.load(folder)
    (folder / "manifest.json").write_text('{"command": "train.py"}')
    with pytest.raises(CheckpointError, match=r"manifest\.json: not a manifest with a 'sha256' table"):
        cosmodiff.load(folder)


def test_publish_refuses_weights_over_the_limit_and_writes_nothing(tiny_run, tmp_path, monkeypatch):
    monkeypatch.setattr(pretrained, "MAX_MODEL_BYTES", 1000)
    with pytest.raises(ValueError, match="over the 0 MiB a pretrained model may take"):
        publish(tiny_run, tmp_path / "big", "train.py", {}, {})
    assert not list(tmp_path.glob("big*"))


@pytest.mark.parametrize("folder", SHIPPED, ids=[folder.name for folder in SHIPPED])
def test_shipped_models_match_their_manifests_and_sample(folder):
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["sha256"] == {name: file_sha256(folder / name) for name in manifest["sha256"]}
    assert (folder / "model.safetensors").stat().st_size <= 20 * 2 ** 20
    assert manifest["command"] and manifest["commit"] and manifest["scorecard"]["worst"]["over_floor"] > 0
    run = cosmodiff.load(folder)
    params = None if run.condition is None else {  # a conditional model: the middle of its training ranges
        name: (low + high) / 2 for name, low, high in zip(run.condition.names, run.condition.low, run.condition.high)}
    fields = cosmodiff.sample(run, 2, params=params, sampler="ddim", steps=3, batch_size=2)
    size = run.config["image_size"]
    assert fields.shape == (2, size, size) and np.isfinite(fields).all() and (fields >= 0).all()
