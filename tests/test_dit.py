import json
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT, run_in_process
from cosmodiff.diffusion import build_formulation
from cosmodiff.fields import save_fields
from cosmodiff.mock import make_mock_set
from cosmodiff.models import MODELS, build_model, model_kwargs
from cosmodiff.models.dit import periodic_position_embedding

DIT_PRESETS = [name for name in MODELS if name.startswith("dit")]


@pytest.mark.parametrize("name", DIT_PRESETS)
@pytest.mark.parametrize("size", [32, 64])
def test_every_preset_maps_fields_to_fields_and_starts_at_zero(name, size):
    network = build_model(name, model_kwargs(name, size))
    x, t = torch.randn(2, 1, size, size), torch.tensor([0, 999])
    with torch.no_grad():
        out = network(x, t)
    assert out.shape == (2, 1, size, size)
    assert torch.count_nonzero(out) == 0  # adaLN-Zero and the zeroed output layer


def test_position_embedding_is_periodic_on_the_torus():
    """Each embedding channel, along a row or column of patches, is a sinusoid with a whole number of
    periods over the grid: its discrete Fourier transform has no leakage outside one frequency."""
    grid, hidden = 16, 64
    embedding = periodic_position_embedding(hidden, grid).reshape(grid, grid, hidden).double()
    for profile in (embedding[:, 3, : hidden // 2], embedding[5, :, hidden // 2:]):  # rows, then columns
        spectrum = torch.fft.rfft(profile, dim=0).abs() ** 2
        top = spectrum.max(dim=0).values
        assert torch.all(top / spectrum.sum(dim=0) > 1 - 1e-9)
    assert len({tuple(v.tolist()) for v in embedding.reshape(-1, hidden).round(decimals=4)}) == grid * grid


@pytest.mark.parametrize("formulation", ["vp", "edm", "flow"])
def test_tiny_dit_loss_falls_through_every_formulation(formulation):
    fields = torch.from_numpy(make_mock_set(1, grid=16, image_size=16, progress=False, method="2lpt").fields)
    data = torch.log(fields)[:, None]
    data = 0.5 * (data - data.mean()) / data.std()
    torch.manual_seed(0)
    network = build_model("dit-xs/4", model_kwargs("dit-xs/4", 16))
    diffusion = build_formulation({"formulation": formulation})
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-3)

    def held_loss():  # the same noise levels and noise every time
        with torch.no_grad(), torch.random.fork_rng():
            torch.manual_seed(1)
            return np.mean([diffusion.loss(network, data).item() for _ in range(4)])

    before = held_loss()
    for _ in range(80):
        loss = diffusion.loss(network, data[torch.randint(0, len(data), (8,))])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert held_loss() < 0.9 * before  # EDM's unit-weight loss has the highest floor: 0.86 of the start here


def test_dit_run_folder_trains_and_samples(tmp_path):
    save_fields(tmp_path / "tiny.npz", make_mock_set(1, grid=32, image_size=32, progress=False, method="2lpt"))
    train = run_in_process([sys.executable, str(ROOT / "train.py"), "--model", "dit-xs/4", "--data_path",
                            str(tmp_path / "tiny.npz"), "--image_size", "32", "--batch_size", "4", "--train_steps", "3",
                            "--sampling_timesteps", "2", "--run_name", "dit"], cwd=tmp_path)
    assert train.returncode == 0, train.stderr
    config = json.loads((tmp_path / "results" / "dit" / "config.json").read_text())
    assert config["model"] == {"name": "dit-xs/4", "kwargs": dict(model_kwargs("dit-xs/4", 32))}
    generate = run_in_process([sys.executable, str(ROOT / "UNet-DDPM" / "generate_images.py"), "--num_samples", "2",
                               "--sampler", "dpm++", "--steps", "3"], cwd=tmp_path)
    assert generate.returncode == 0, generate.stderr
    samples = np.load(tmp_path / "results" / "dit" / "samples" / "samples.npy")
    assert samples.shape == (2, 32, 32) and np.isfinite(samples).all()


def test_presets_have_the_circular_stem_and_head_and_stored_kwargs_without_them_build_the_plain_dit():
    network = build_model("dit-xs/4", model_kwargs("dit-xs/4", 32))
    assert network.stem[0].padding_mode == network.head[0].padding_mode == "circular"
    plain_kwargs = {key: value for key, value in model_kwargs("dit-xs/4", 32).items() if key != "conv_channels"}
    plain = build_model("dit-xs/4", plain_kwargs)
    assert not hasattr(plain, "stem")  # a run folder from before the stem loads as it was
    x = torch.randn(1, 1, 32, 32)
    poked = x.clone()
    poked[0, 0, 0, 0] += 1.0  # a pixel on the border and a patch corner
    changes = []
    for model in (network, plain):  # transformer blocks left at adaLN-Zero's identity: only stem and head mix patches
        torch.manual_seed(0)
        for layer in (getattr(model, "head", [None])[-1], model.final_layer.linear, model.final_layer.adaLN_modulation[-1]):
            if layer is not None:
                torch.nn.init.normal_(layer.weight, std=0.1)
        with torch.no_grad():
            changes.append((model(poked, torch.tensor([10.0])) - model(x, torch.tensor([10.0]))).abs()[0, 0])
    assert changes[0][-1, -1] > 0 and changes[0][0, -1] > 0  # neighbours across the border, in other patches
    assert changes[1][-1, -1] == 0 and changes[1][0, -1] == 0 and changes[1][0, 0] > 0  # the plain DiT: its own patch
