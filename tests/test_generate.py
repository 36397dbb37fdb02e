import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from conftest import ROOT
from cosmodiff.diffusion import build_diffusion, sample
from cosmodiff.fields import save_fields
from cosmodiff.mock import make_mock_set

GENERATE = str(ROOT / "UNet-DDPM" / "generate_images.py")


class Oracle(nn.Module):
    """The exact denoiser of a data distribution that is one field x*: every sampler must return x*."""
    channels, out_dim, self_condition = 1, 1, False

    def __init__(self, target, objective):
        super().__init__()
        self.register_buffer("target", target)
        self.objective = objective
        self.diffusion = None

    def forward(self, x, t, x_self_cond=None):
        alpha_bar = self.diffusion.alphas_cumprod[t].view(-1, 1, 1, 1)
        noise = (x - alpha_bar.sqrt() * self.target) / (1 - alpha_bar).sqrt()
        if self.objective == "pred_noise":
            return noise
        return alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * self.target


@pytest.mark.parametrize("objective", ["pred_v", "pred_noise"])
@pytest.mark.parametrize("sampler, steps", [("ddpm", None), ("ddim", 10), ("dpm++", 10), ("dpm++", 5), ("dpm++sde", 10)])
def test_every_sampler_recovers_the_field_an_exact_denoiser_describes(objective, sampler, steps):
    target = torch.rand(1, 16, 16) * 4 - 2  # standardised fields reach beyond [-1, 1]
    oracle = Oracle(target, objective)
    diffusion = build_diffusion(oracle, 16, timesteps=200, objective=objective)
    oracle.diffusion = diffusion
    out = sample(diffusion, [0, 1], seed=1, x0_range=(-2.2, 2.2), sampler=sampler, steps=steps)
    torch.testing.assert_close(out, target.expand(2, 1, 16, 16), atol=2e-3, rtol=0)


class WildDenoiser(nn.Module):
    """An untrained network with large outputs: its x0 predictions leave [-1, 1] unless clamped."""
    channels, out_dim, self_condition = 1, 1, False

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        torch.nn.init.normal_(self.conv.weight, std=3.0)

    def forward(self, x, t, x_self_cond=None):
        return 5 * self.conv(x)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm++", "dpm++sde"])
def test_samples_stay_in_the_x0_range_and_do_not_depend_on_batch_size(sampler):
    torch.manual_seed(0)
    diffusion = build_diffusion(WildDenoiser(), 16, timesteps=50)
    together = sample(diffusion, [0, 1, 2, 3], seed=7, x0_range=(-2, 1.5), sampler=sampler, steps=None if sampler == "ddpm" else 8)
    apart = torch.cat([sample(diffusion, [i], seed=7, x0_range=(-2, 1.5), sampler=sampler, steps=None if sampler == "ddpm" else 8)
                       for i in range(4)])
    assert -2 <= together.min() and together.max() <= 1.5
    torch.testing.assert_close(together, apart, atol=1e-3, rtol=0)  # float rounding of batched convolutions
    other_seed = sample(diffusion, [0], seed=8, x0_range=(-2, 1.5), sampler=sampler, steps=None if sampler == "ddpm" else 8)
    assert not torch.allclose(other_seed, together[:1])


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gen")
    save_fields(folder / "tiny.npz", make_mock_set(1, grid=32, image_size=32, progress=False))
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), "--data_path", str(folder / "tiny.npz"),
                             "--image_size", "32", "--batch_size", "4", "--train_steps", "2", "--timesteps", "100",
                             "--sampling_timesteps", "2", "--results_dir", str(folder / "results"), "--run_name", "run"],
                            cwd=folder, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return folder


def generate(cwd, *args, env=None):
    return subprocess.run([sys.executable, GENERATE, *map(str, args)], cwd=cwd, capture_output=True, text=True, env=env)


def test_generate_writes_physical_samples_previews_and_record(trained_run):
    result = generate(trained_run, "--num_samples", "3", "--seed", "42", "--steps", "4", "--batch_size", "2")
    assert result.returncode == 0, result.stderr
    out = trained_run / "results" / "run" / "samples"
    fields = np.load(out / "samples.npy")
    assert fields.shape == (3, 32, 32) and fields.dtype == np.float32 and (fields >= 0).all()
    record = json.loads((out / "samples.json").read_text())
    assert record["sampler"] == "ddim" and record["steps"] == 4 and record["seed"] == 42 and record["seconds_per_sample"] > 0
    assert len(list(out.glob("sample_*.png"))) == 3 and (out / "samples_grid.png").exists()


def test_two_processes_give_the_same_fields_as_one(trained_run):
    one = generate(trained_run, "--num_samples", "3", "--sampler", "dpm++", "--steps", "3", "--out", "one")
    assert one.returncode == 0, one.stderr
    env = dict(os.environ, ACCELERATE_USE_CPU="true")
    two = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                          "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", GENERATE,
                          "--num_samples", "3", "--sampler", "dpm++", "--steps", "3", "--batch_size", "1", "--out", "two"],
                         cwd=trained_run, env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    np.testing.assert_allclose(np.load(trained_run / "two" / "samples.npy"), np.load(trained_run / "one" / "samples.npy"),
                               rtol=1e-4)
    assert json.loads((trained_run / "two" / "samples.json").read_text())["num_processes"] == 2


def test_generate_errors(trained_run, tmp_path):
    cases = [
        ((tmp_path, "--results_dir", tmp_path / "none"), "no run folders with a config.json"),
        ((tmp_path, "--checkpoint", tmp_path), "not a run folder (no config.json)"),
        ((trained_run, "--num_samples", "0"), "--num_samples must be at least 1"),
        ((trained_run, "--sampler", "ddpm", "--steps", "10"), "ddpm runs all 100 training timesteps"),
    ]
    broken = tmp_path / "broken"
    broken.mkdir()
    run = trained_run / "results" / "run"
    config = json.loads((run / "config.json").read_text())
    config["model"]["kwargs"]["dim"] = 8
    (broken / "config.json").write_text(json.dumps(config))
    (broken / "model.safetensors").write_bytes((run / "model.safetensors").read_bytes())
    cases.append(((tmp_path, "--checkpoint", broken), "the weights do not match the model in config.json"))
    for (cwd, *args), message in cases:
        result = generate(cwd, *args)
        assert result.returncode == 2 and message in result.stderr, (message, result.stderr)
        assert not (tmp_path / "samples").exists()
