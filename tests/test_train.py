import csv
import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import ROOT, free_port, losses, run_in_process, shared_path, train_command, wait_for_group_exit
from cosmodiff.models import build_model, model_kwargs

@pytest.mark.parametrize("preset", ["unet", "unet-attn16"])
def test_unet_is_exactly_equivariant_to_periodic_shifts(preset):
    network = build_model(preset, model_kwargs(preset, 64)).eval()
    x, t = torch.randn(2, 1, 64, 64), torch.tensor([10, 700])
    factor = network.downsample_factor
    with torch.no_grad():
        out = network(x, t)
        shifted = network(torch.roll(x, (factor, 3 * factor), (-2, -1)), t)
    error = (torch.roll(out, (factor, 3 * factor), (-2, -1)) - shifted).abs().max() / out.abs().max()
    assert error < 1e-5
    with torch.no_grad():  # a shift that is not a multiple of the downsampling factor is not an exact symmetry
        odd = network(torch.roll(x, (1, 0), (-2, -1)), t)
    assert (torch.roll(out, (1, 0), (-2, -1)) - odd).abs().max() / out.abs().max() > 1e-3


def test_unet_attn16_attends_fully_at_16x16_and_8x8_and_linearly_above_also_rebuilt_from_config_json():
    from denoising_diffusion_pytorch.denoising_diffusion_pytorch import Attention, LinearAttention
    network = build_model("unet-attn16", model_kwargs("unet-attn16", 64))
    stored = json.loads(json.dumps(model_kwargs("unet-attn16", 64)))  # as a run folder's config.json holds them
    for built in (network, build_model("unet-attn16", stored)):
        kinds = [type(level[2]).__name__ for level in built.downs]  # 64, 32, 16 and 8 pixels a side
        assert kinds == [LinearAttention.__name__, LinearAttention.__name__, Attention.__name__, Attention.__name__]
    build_model("unet-attn16", stored).load_state_dict(network.state_dict())


def test_training_writes_a_complete_run_folder(tiny_data, tmp_path):
    result = run_in_process(train_command(tiny_data, tmp_path, "--train_steps", "4", "--save_every", "2", "--run_name", "run"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    run = tmp_path / "run"
    config = json.loads((run / "config.json").read_text())
    assert config["step"] == 4 and config["image_size"] == 32 and config["box_size"] == 250.0
    assert config["model"]["name"] == "unet" and config["transform"]["name"] == "log"
    assert (run / config["state"]).is_dir() and not list(run.glob("*.tmp*"))
    weights = load_file(str(run / "model.safetensors"))
    network = build_model("unet", config["model"]["kwargs"])
    network.load_state_dict(weights)
    assert [step for step, _ in losses(run)] == [1, 2, 3, 4]
    assert (run / "samples-0000002.png").exists() and (run / "samples-0000004.png").exists()


def test_killed_run_resumes_from_its_last_checkpoint_with_the_same_losses(tiny_data, tmp_path):
    steps = ["--train_steps", "8", "--save_every", "1", "--seed", "3"]
    reference = run_in_process(train_command(tiny_data, tmp_path, *steps, "--run_name", "whole"), cwd=tmp_path)
    assert reference.returncode == 0, reference.stderr
    process = subprocess.Popen(train_command(tiny_data, tmp_path, *steps, "--run_name", "killed"), cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    config_path = tmp_path / "killed" / "config.json"
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if config_path.exists() and json.loads(config_path.read_text())["step"] >= 3:
            break
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    wait_for_group_exit(process.pid)
    killed_at = json.loads(config_path.read_text())["step"]
    resumed = run_in_process([sys.executable, str(ROOT / "train.py"), "--resume", str(tmp_path / "killed")], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert killed_at >= 3
    whole, again = losses(tmp_path / "whole"), losses(tmp_path / "killed")
    assert [step for step, _ in again] == list(range(1, 9))
    np.testing.assert_allclose([loss for _, loss in again], [loss for _, loss in whole], rtol=1e-5)
    whole_weights = load_file(str(tmp_path / "whole" / "model.safetensors"))
    again_weights = load_file(str(tmp_path / "killed" / "model.safetensors"))
    for name in whole_weights:
        torch.testing.assert_close(again_weights[name], whole_weights[name], rtol=1e-5, atol=1e-6)


def test_time_budget_fixes_the_step_count_and_completes_the_schedule(tiny_data, tmp_path):
    result = run_in_process(train_command(tiny_data, tmp_path, "--train_minutes", "0.05", "--save_every", "1000",
                                          "--lr_schedule", "cosine", "--lr", "1e-3", "--run_name", "run"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    steps = config["train_args"]["train_steps"]
    assert steps >= 20 and config["step"] == steps and f"{steps} steps fill 0.05 minutes" in result.stdout
    last = list(csv.DictReader((tmp_path / "run" / "log.csv").open()))[-1]
    # The cosine decay ran over the fixed count: the last step's rate is 1e-3 (0.1 + 0.9 (1 + cos(pi (T-3)/(T-2))) / 2).
    expected = 1e-3 * (0.1 + 0.45 * (1 + np.cos(np.pi * (steps - 3) / (steps - 2))))
    assert int(last["step"]) == steps and float(last["lr"]) == pytest.approx(expected, rel=1e-3)


def test_wsd_schedule_holds_the_rate_then_decays_linearly_to_zero(tiny_data, tmp_path):
    result = run_in_process(train_command(tiny_data, tmp_path, "--train_steps", "8", "--save_every", "1000", "--lr", "1e-3",
                                          "--lr_schedule", "wsd", "--cooldown_fraction", "0.5", "--run_name", "run"),
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rates = [float(row["lr"]) for row in csv.DictReader((tmp_path / "run" / "log.csv").open())]
    # two warm-up steps, flat, then the last half (4 steps) falls linearly towards zero
    np.testing.assert_allclose(rates, 1e-3 * np.array([0.5, 1, 1, 1, 1, 0.75, 0.5, 0.25]), rtol=1e-3)


def test_two_process_data_parallel_run_on_cpu(tiny_data, tmp_path):
    env = dict(os.environ, ACCELERATE_USE_CPU="true")
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--main_process_port", free_port(), "--mixed_precision", "no", "--dynamo_backend", "no",
               *train_command(tiny_data, tmp_path, "--train_steps", "3", "--save_every", "3", "--run_name", "ddp")[1:]]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((tmp_path / "ddp" / "config.json").read_text())
    assert config["num_processes"] == 2 and config["step"] == 3
    assert "parameters identical on all 2 processes" in result.stdout


def test_bad_data_and_sizes_are_refused_with_one_sentence(tiny_data, tmp_path):
    result = run_in_process(train_command(tmp_path / "nothing.npz", tmp_path, "--train_steps", "1"), cwd=tmp_path)
    assert result.returncode == 2 and "nothing.npz: no such file or folder" in result.stderr
    result = run_in_process(train_command(tiny_data, tmp_path, "--train_steps", "1", "--image_size", "64"), cwd=tmp_path)
    assert result.returncode == 2 and "fields of 32x32 cannot be block-averaged to --image_size 64" in result.stderr
    assert not list(tmp_path.iterdir())  # no run folder is made for data that cannot train


def test_resume_of_a_run_folder_from_before_formulations_is_refused_without_writing(tmp_path):
    folder = shared_path("run-folders/vp-run")
    result = run_in_process([sys.executable, str(ROOT / "train.py"), "--resume", str(folder)], cwd=tmp_path)
    assert result.returncode == 2
    assert "written by an earlier version whose training state this one cannot resume" in result.stderr
    assert sorted(path.name for path in folder.iterdir()) == ["config.json", "model.safetensors"]


def test_earlier_work_flags_keep_their_meaning():
    spec = importlib.util.spec_from_file_location("train", ROOT / "train.py")
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)

    args = train.parse_args(["--seed", "1234", "--data_path", "./train_data", "--sampling_timesteps", "500"])
    assert (args.seed, args.data_path, args.sampling_timesteps) == (1234, "./train_data", 500)
    assert args.model == "unet" and args.image_size == 64 and args.resume is None


@pytest.mark.parametrize("formulation", ["edm", "flow"])
def test_each_formulation_trains_and_samples_through_the_commands(tiny_data, tmp_path, formulation):
    result = run_in_process(train_command(tiny_data, tmp_path, "--train_steps", "2", "--save_every", "2",
                                          "--formulation", formulation, "--run_name", "run"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["diffusion"]["formulation"] == formulation and config["format"] == 2
    if formulation == "edm":
        assert config["diffusion"]["sigma_data"] == 0.5  # the model space's spread
    for sampler in ("heun", "dpm++", "euler"):
        generate = run_in_process([sys.executable, str(ROOT / "UNet-DDPM" / "generate_images.py"), "--checkpoint",
                                   str(tmp_path / "run"), "--num_samples", "2", "--sampler", sampler, "--steps", "3",
                                   "--out", str(tmp_path / sampler)], cwd=tmp_path)
        assert generate.returncode == 0, generate.stderr
        record = json.loads((tmp_path / sampler / "samples.json").read_text())
        assert record["formulation"] == formulation and record["network_evaluations"] == (5 if sampler == "heun" else 3)
        samples = np.load(tmp_path / sampler / "samples.npy")
        assert samples.shape == (2, 32, 32) and np.isfinite(samples).all() and (samples >= 0).all()


def test_resume_refuses_flags_it_would_ignore(tiny_data, tmp_path):
    result = run_in_process(train_command(tiny_data, tmp_path, "--resume", str(tmp_path / "run"), "--lr", "0.01"), cwd=tmp_path)
    assert result.returncode == 2
    assert "--resume continues a run with its own settings; --data_path, --image_size, --sampling_timesteps, " \
        "--batch_size, --lr, --warmup_steps, --log_every cannot change them" in result.stderr, result.stderr


def test_resume_of_a_run_saved_before_newer_flags_takes_their_defaults(tiny_data, tmp_path):
    """A run folder written before --condition, --cond_drop_prob, --params_file and --lr_schedule existed
    resumes, with the cosine schedule it trained with (the default then)."""
    first = run_in_process(train_command(tiny_data, tmp_path / "results", "--train_steps", "1", "--timesteps", "50",
                                         "--run_name", "run"), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    config_path = tmp_path / "results" / "run" / "config.json"
    config = json.loads(config_path.read_text())
    for newer in ("condition", "cond_drop_prob", "params_file", "lr_schedule"):
        del config["train_args"][newer]
    config_path.write_text(json.dumps(config))
    resumed = run_in_process([sys.executable, str(ROOT / "train.py"), "--resume", str(tmp_path / "results" / "run"),
                              "--train_steps", "2"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    resumed_config = json.loads(config_path.read_text())
    assert resumed_config["step"] == 2 and resumed_config["train_args"]["lr_schedule"] == "cosine"


def test_fidelity_while_training_is_the_mafd_of_the_samples_the_commands_make(tmp_path):
    from cosmodiff.fields import save_fields
    from cosmodiff.mock import make_mock_set

    data = tmp_path / "data"
    save_fields(data / "train.npz", make_mock_set(1, grid=32, image_size=32, progress=False, method="2lpt"))
    save_fields(data / "test.npz", make_mock_set(1, grid=32, image_size=32, seed=9, progress=False, method="2lpt"))
    result = run_in_process(train_command(data, tmp_path / "results", "--train_steps", "4", "--save_every", "2",
                                          "--log_every", "3", "--val_samples", "6", "--val_steps", "4", "--run_name",
                                          "run", "--report_to", "tensorboard"))
    assert result.returncode == 0, result.stderr
    run = tmp_path / "results" / "run"
    rows = list(csv.DictReader((run / "log.csv").open()))
    assert [row["step"] for row in rows] == ["2", "3", "4"] and rows[1]["val_mafd"] == ""  # a row at every check
    assert (run / "validation.png").stat().st_size > 1000
    sampled = run_in_process([sys.executable, ROOT / "UNet-DDPM" / "generate_images.py", "--checkpoint", run,
                              "--num_samples", "6", "--seed", "0", "--sampler", "dpm++", "--steps", "4", "--out",
                              tmp_path / "samples"])
    evaluated = run_in_process([sys.executable, ROOT / "evaluate" / "power_spectrum.py", data / "test.npz",
                                tmp_path / "samples" / "samples.npy", "--out", tmp_path / "evaluation"])
    assert sampled.returncode == 0 and evaluated.returncode == 0, sampled.stderr + evaluated.stderr
    report = json.loads((tmp_path / "evaluation" / "report.json").read_text())
    assert float(rows[2]["val_mafd"]) == pytest.approx(report["mafd"], rel=1e-4)
    assert float(rows[2]["val_floor"]) == pytest.approx(report["floor"]["median"], rel=0.25)
    assert rows[0]["val_floor"] == rows[2]["val_floor"] and rows[0]["val_mafd"] != rows[2]["val_mafd"]

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard")).Reload()
    assert {"loss", "lr", "val_mafd", "val_floor"} <= set(events.Tags()["scalars"]) and events.Tags()["images"]
    assert [event.step for event in events.Scalars("val_mafd")] == [2, 4]
    assert events.Scalars("val_mafd")[-1].value == pytest.approx(float(rows[2]["val_mafd"]), rel=1e-4)


def test_a_formulation_added_in_one_place_trains_and_samples_through_the_commands(tiny_data, tmp_path, monkeypatch):
    """A new formulation is a class and a FORMULATIONS line: its flag reaches train.py, its settings
    config.json, and generate_images.py samples from the folder (CONTRIBUTING.md)."""
    from cosmodiff.cli import POSITIVE
    from cosmodiff.diffusion import formulations

    class Uniform(formulations.EDM):
        """EDM's preconditioning with ln sigma drawn uniformly over +-spread around ln sigma_data."""
        name = "uniform"
        flags = {"log_spread": dict(type=POSITIVE, default=3.0, help="half-width of ln sigma in training")}

        def __init__(self, log_spread=3.0, **edm):
            super().__init__(**edm)
            self.log_spread = log_spread

        @classmethod
        def from_settings(cls, settings):
            return cls(log_spread=settings.log_spread, sigma_data=settings.data_std)

        def settings(self):
            return dict(super().settings(), formulation=self.name, log_spread=self.log_spread)

        def training_sigmas(self, batch, device):
            unit = torch.rand(batch, device=device, dtype=torch.float64) * 2 - 1
            sigma = (math.log(self.sigma_data) + self.log_spread * unit).exp()
            return sigma, torch.ones_like(sigma)

    monkeypatch.setitem(formulations.FORMULATIONS, "uniform", Uniform)
    result = run_in_process(train_command(tiny_data, tmp_path, "--train_steps", "2", "--formulation", "uniform",
                                          "--log_spread", "2", "--run_name", "run"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    diffusion = json.loads((tmp_path / "run" / "config.json").read_text())["diffusion"]
    assert diffusion["formulation"] == "uniform" and diffusion["log_spread"] == 2.0
    sampled = run_in_process([sys.executable, ROOT / "UNet-DDPM" / "generate_images.py", "--checkpoint",
                              tmp_path / "run", "--num_samples", "2", "--sampler", "heun", "--steps", "3", "--out",
                              tmp_path / "samples"], cwd=tmp_path)
    assert sampled.returncode == 0, sampled.stderr
    assert np.isfinite(np.load(tmp_path / "samples" / "samples.npy")).all()


@pytest.mark.parametrize("precision, bf16_units, expected, note", [
    ("accelerate", False, None, ""),  # the launcher's --mixed_precision decides
    ("fp32", True, "no", ""),
    ("bf16", True, "bf16", ""),
    ("auto", True, "bf16", "bf16 autocast"),
    ("auto", False, "no", "--precision auto: fp32, because this cpu has no bf16 matrix units"),
    ("bf16", False, "no", "--precision bf16: fp32, because this cpu has no bf16 matrix units"),
])
def test_precision_is_bf16_only_where_the_device_has_bf16_units(precision, bf16_units, expected, note):
    from cosmodiff.launch import mixed_precision

    chosen, message = mixed_precision(precision, "cpu", bf16_units)
    assert chosen == expected
    assert note in message if note else message == ""


@pytest.mark.parametrize("flags, expected", [("fpu sse2 avx2 fma", False), ("fpu avx2 amx_bf16 amx_tile", True),
                                             ("avx512f avx512_bf16", True), ("avx512f avx512bw", False)])
def test_cpu_bf16_units_are_read_from_the_processor_flags(tmp_path, flags, expected):
    from cosmodiff.launch import cpu_has_bf16_units

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    assert cpu_has_bf16_units(cpuinfo) is expected
    assert cpu_has_bf16_units(tmp_path / "missing") is False


@pytest.mark.parametrize("bf16_units, recorded", [(False, "no"), (True, "bf16")])
def test_precision_bf16_falls_back_to_fp32_on_a_cpu_without_bf16_units(tiny_data, tmp_path, monkeypatch, bf16_units,
                                                                        recorded):
    monkeypatch.setattr("cosmodiff.training.device_has_bf16_units", lambda device_type: bf16_units)
    result = run_in_process(train_command(tiny_data, tmp_path, "--train_steps", "2", "--precision", "bf16",
                                          "--run_name", "run"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert ("--precision bf16: fp32, because this cpu has no bf16 matrix units" in result.stderr) is not bf16_units
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["mixed_precision"] == recorded and config["train_args"]["precision"] == "bf16"


def test_compiled_training_writes_the_weights_of_the_uncompiled_network(tiny_data, tmp_path, monkeypatch):
    compiled = []
    compile_for_real = torch.compile

    def eager_backend_compile(module):  # dynamo's tracing and wrapper, without minutes of code generation
        compiled.append(module)
        return compile_for_real(module, backend="eager")

    monkeypatch.setattr(torch, "compile", eager_backend_compile)
    result = run_in_process(train_command(tiny_data, tmp_path, "--train_steps", "2", "--save_every", "1", "--compile",
                                          "--run_name", "run"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(compiled) == 1
    run = tmp_path / "run"
    network = build_model("unet", json.loads((run / "config.json").read_text())["model"]["kwargs"])
    network.load_state_dict(load_file(str(run / "model.safetensors")))  # keys without the compiled wrapper's prefix
    resumed = run_in_process([sys.executable, str(ROOT / "train.py"), "--resume", str(run), "--train_steps", "3"],
                             cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert len(compiled) == 1  # --compile is a speed setting of the command, not of the run
    assert [step for step, _ in losses(run)] == [1, 2, 3]
