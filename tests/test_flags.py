"""Flags and outputs: every numeric flag of every entry script refuses NaN and values outside its
declared range at parse time; non-finite parameters, samples and reports are refused; outputs are
checked before any work; fields must be real numbers."""
import argparse
import json
import runpy
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import ROOT
from cosmodiff.cli import Number
from cosmodiff.diffusion import build_formulation, sample
from cosmodiff.fields import FieldError, load_fields

# script -> the arguments it needs besides the flag under test
SCRIPTS = {
    "train.py": [], "UNet-DDPM/generate_images.py": [], "evaluate/power_spectrum.py": [],
    "evaluate/infer.py": ["fields.npz", "--checkpoint", "run"], "evaluate/cosmology.py": ["run"],
    "evaluate/train_npe.py": [],
    "cosmodiff/prepare/__main__.py": ["src", "--out", "shards"], "cosmodiff/mock/__main__.py": ["--out", "mock.npz"],
    "benchmarks/error_budget.py": ["run"],
    "benchmarks/fidelity.py": [], "benchmarks/fidelity_study.py": [], "benchmarks/inference.py": [],
    "benchmarks/conditional.py": [], "benchmarks/sampler_sweep.py": [], "benchmarks/streaming.py": [],
    "benchmarks/train_throughput.py": [], "benchmarks/power_spectrum_speed.py": [],
    "benchmarks/stress_multiprocess.py": [],
}


class Captured(Exception):
    pass


def run_script(script, argv, monkeypatch):
    """The script run as __main__ in this process with argv; returns its exit status."""
    monkeypatch.setattr(sys, "argv", [str(ROOT / script), *argv])
    try:
        runpy.run_path(str(ROOT / script), run_name="__main__")
    except SystemExit as exit_status:
        return exit_status.code
    return 0


def parser_of(script, monkeypatch):
    """The script's own parser, caught as its __main__ block parses."""
    captured = {}

    def capture(self, args=None, namespace=None):
        captured["parser"] = self
        raise Captured

    with monkeypatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_args", capture)
        patch.setattr(sys, "argv", [str(ROOT / script)])
        with pytest.raises(Captured):
            runpy.run_path(str(ROOT / script), run_name="__main__")
    return captured["parser"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_numeric_flag_refuses_nan_and_values_outside_its_range(script, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    parser = parser_of(script, monkeypatch)
    numeric = [action for action in parser._actions if isinstance(action.type, Number)]
    untyped = [action.option_strings for action in parser._actions if action.type in (int, float)]
    assert numeric and not untyped, untyped
    for action in numeric:
        flag = action.option_strings[0]
        for probe in ["nan", "inf", *action.type.outside()]:
            status = run_script(script, [*SCRIPTS[script], f"{flag}={probe}"], monkeypatch)
            stderr = capsys.readouterr().err
            assert status == 2, (flag, probe, stderr)
            assert stderr.startswith(f"error: argument {flag}: must be {action.type.describe()}, got ") and \
                stderr.count("\n") == 1 and "Traceback" not in stderr, stderr
    assert not list(tmp_path.iterdir())  # nothing written


def test_number_ranges_and_their_probes():
    assert Number(int, 1).outside() == [0] and Number(float, 0, 1).outside() == [-1e-6, 1 + 1e-6]
    assert Number(float, 0, open_low=True).outside() == [0]
    assert Number(float, 0, 10).describe() == "a number in [0, 10]" and Number(int, 1).describe() == "an integer >= 1"
    with pytest.raises(argparse.ArgumentTypeError, match="must be an integer >= 1, got '1.5'"):
        Number(int, 1)("1.5")
    assert Number(float, 0, 1)("1") == 1.0 and Number(int)("-3") == -3


@pytest.mark.parametrize("script, argv, message", [
    ("train.py", ["--train_steps", "0"], "argument --train_steps: must be an integer >= 1, got 0"),
    ("train.py", ["--batch_size", "0"], "argument --batch_size: must be an integer >= 1, got 0"),
    ("train.py", ["--lr", "nan"], "argument --lr: must be a number > 0, got nan"),
    ("train.py", ["--ema_decay", "2"], "argument --ema_decay: must be a number in [0, 1], got 2"),
    ("train.py", ["--cond_drop_prob", "2"], "argument --cond_drop_prob: must be a number in [0, 1], got 2"),
    ("UNet-DDPM/generate_images.py", ["--steps", "0"], "argument --steps: must be an integer >= 1, got 0"),
    ("UNet-DDPM/generate_images.py", ["--batch_size", "0"], "argument --batch_size: must be an integer >= 1, got 0"),
    ("UNet-DDPM/generate_images.py", ["--guidance", "nan"], "argument --guidance: must be a number in [0, 10], got nan"),
    ("UNet-DDPM/generate_images.py", ["--guidance", "-1"], "argument --guidance: must be a number in [0, 10], got -1"),
    ("evaluate/infer.py", ["f.npz", "--checkpoint", "run", "--grid", "1"],
     "argument --grid: must be an integer >= 3, got 1"),
    ("evaluate/infer.py", ["f.npz", "--checkpoint", "run", "--device", "gpu0"],
     "argument --device: must be a torch device such as cpu, cuda or cuda:1, got 'gpu0'"),
])
def test_the_reported_bad_flags_get_one_sentence_and_exit_2(script, argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run_script(script, argv, monkeypatch) == 2
    assert capsys.readouterr().err == f"error: {message}\n"
    assert not list(tmp_path.iterdir())


def test_an_output_that_is_a_file_or_under_one_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "taken").write_text("a file")
    cases = [("train.py", ["--results_dir", "taken"], "--results_dir taken: is a file, not a folder"),
             ("UNet-DDPM/generate_images.py", ["--checkpoint", str(ROOT.parent / "shared" / "run-folders" / "vp-run"),
                                               "--out", "taken"], "--out taken: is a file, not a folder"),
             ("evaluate/power_spectrum.py", ["a.npy", "b.npy", "--out", "taken"], "--out taken: is a file, not a folder"),
             ("evaluate/infer.py", ["a.npz", "--checkpoint", "run", "--out", "taken/posterior"],
              "--out taken/posterior: cannot be written (taken is not a writable folder)"),
             ("cosmodiff/prepare/__main__.py", ["src", "--out", "taken"], "--out taken: is a file, not a folder"),
             ("cosmodiff/mock/__main__.py", ["--out", "taken/mock.npz"],
              "--out taken/mock.npz: cannot be written (taken is not a writable folder)"),
             ("cosmodiff/mock/__main__.py", ["--split", "2lpt", "--out", "taken"], "--out taken: is a file, not a folder")]
    for script, argv, message in cases:
        if "shared" in " ".join(argv) and not (ROOT.parent / "shared" / "run-folders").exists():
            continue
        assert run_script(script, argv, monkeypatch) == 2, script
        assert capsys.readouterr().err == f"error: {message}\n", script
    assert sorted(path.name for path in tmp_path.iterdir()) == ["taken"]


@pytest.mark.parametrize("values, kind", [(np.ones((2, 16, 16), complex), "complex128"),
                                          (np.ones((2, 16, 16), bool), "bool"),
                                          (np.full((2, 16, 16), "1"), "<U1")])
@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_fields_that_are_not_real_numbers_are_refused(values, kind, suffix, tmp_path):
    path = tmp_path / f"fields{suffix}"
    np.save(path, values) if suffix == ".npy" else np.savez(path, fields=values)
    with pytest.raises(FieldError, match=f"fields{suffix}: holds {kind} values; fields must be real numbers"):
        load_fields(path)
    np.save(tmp_path / "ints.npy", np.ones((2, 16, 16), np.int16))
    assert load_fields(tmp_path / "ints.npy").fields.dtype == np.float32  # integers stay valid


class NaNNetwork(torch.nn.Module):
    def forward(self, x, c_noise, cond=None):
        return torch.where(torch.arange(len(x)).view(-1, 1, 1, 1) == 1, float("nan"), 0.0) * x


def test_a_non_finite_sample_is_an_error_naming_its_seed_and_index():
    formulation = build_formulation({"formulation": "vp", "timesteps": 50})
    with pytest.raises(ValueError, match="sample 5 of seed 3 is not finite"):
        sample(formulation, NaNNetwork(), (1, 16, 16), [4, 5, 6], seed=3, x0_range=(-2, 2), sampler="ddim", steps=3)
    with pytest.raises(ValueError, match="a condition holds NaN or infinity"):
        sample(formulation, NaNNetwork(), (1, 16, 16), [0], seed=3, x0_range=(-2, 2), sampler="ddim", steps=3,
               cond=torch.tensor([[float("nan"), 0.0]]))


def test_generate_leaves_nothing_behind_when_a_sample_is_not_finite(tmp_path, monkeypatch, capsys):
    source = ROOT.parent / "shared" / "run-folders" / "vp-run"
    if not source.exists():
        pytest.skip("../shared/run-folders is absent")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text((source / "config.json").read_text())
    weights = load_file(str(source / "model.safetensors"))
    weights["final_conv.bias"] = torch.full_like(weights["final_conv.bias"], float("nan"))
    save_file(weights, str(run / "model.safetensors"))
    monkeypatch.chdir(tmp_path)
    status = run_script("UNet-DDPM/generate_images.py", ["--checkpoint", "run", "--num_samples", "2", "--steps", "2",
                                                         "--out", "samples"], monkeypatch)
    assert status == 2 and capsys.readouterr().err.splitlines()[-1] == "error: sample 0 of seed 42 is not finite: " \
                                                                   "the network returned NaN or infinity"
    assert not (tmp_path / "samples").exists()


def test_conditional_parameters_must_be_finite_and_unconditional_sampling_is_explicit(conditional_run, monkeypatch,
                                                                                       capsys):
    monkeypatch.chdir(conditional_run)
    run = ["--checkpoint", "results/run", "--num_samples", "2", "--steps", "2"]
    (conditional_run / "points.txt").write_text("# Omega_m sigma_8\n0.3 inf\n")
    for argv, message in [(["--params", "Omega_m=nan,sigma_8=0.8"], "--params: Omega_m = nan is not a finite number"),
                          (["--params_file", "points.txt"], "points.txt: sigma_8 = inf is not a finite number"),
                          (["--unconditional", "--params", "Omega_m=0.3,sigma_8=0.8"],
                           "--unconditional samples without parameters; it takes no --params")]:
        assert run_script("UNet-DDPM/generate_images.py", [*run, *argv, "--out", "bad"], monkeypatch) == 2
        assert message in capsys.readouterr().err
        assert not (conditional_run / "bad").exists()
    assert run_script("UNet-DDPM/generate_images.py", [*run, "--unconditional", "--out", "null"], monkeypatch) == 0
    record = json.loads((conditional_run / "null" / "samples.json").read_text())
    assert record["unconditional"] is True and record["guidance"] == 1.0 and "params" not in record
    assert np.isfinite(np.load(conditional_run / "null" / "samples.npy")).all()


def test_a_report_holding_nan_is_refused_and_nothing_is_written(tmp_path, monkeypatch, capsys):
    import cosmodiff.stats as stats
    from cosmodiff.fields import FieldSet, save_fields
    from cosmodiff.mock import make_mock_set

    real = make_mock_set(1, grid=16, image_size=16, progress=False, method="2lpt")
    save_fields(tmp_path / "real.npz", real)
    save_fields(tmp_path / "generated.npz", FieldSet(fields=real.fields[::-1].copy(), box_size=real.box_size))
    monkeypatch.setattr(stats, "compare", lambda *args, **kwargs: {"mafd": float("nan"), "settings": {}})
    monkeypatch.chdir(tmp_path)
    assert run_script("evaluate/power_spectrum.py", ["real.npz", "generated.npz", "--out", "evaluation"],
                      monkeypatch) == 2
    assert capsys.readouterr().err == "error: the report of generated.npz against real.npz holds NaN or infinity; " \
                                      "nothing was written\n"
    assert not (tmp_path / "evaluation").exists()


def test_a_non_finite_fidelity_check_stops_training_at_its_step_with_the_last_checkpoint_kept(tiny_data, tmp_path,
                                                                                                monkeypatch):
    from conftest import TINY
    from cosmodiff.validation import Validation

    train = runpy.run_path(str(ROOT / "train.py"))
    checks = []
    original = Validation.__call__

    def failing_second_check(self, network, formulation):
        checks.append(1)
        if len(checks) == 2:
            raise ValueError("sample 1 of seed 0 is not finite: the network returned NaN or infinity")
        return original(self, network, formulation)
    monkeypatch.setattr(Validation, "__call__", failing_second_check)
    args = train["parse_args"](["--data_path", str(tiny_data), "--val_path", str(tiny_data), "--results_dir",
                                str(tmp_path), "--run_name", "run", *TINY, "--train_steps", "4", "--save_every", "2",
                                "--val_samples", "2", "--val_steps", "2", "--timesteps", "50",
                                "--num_workers", "0"])  # a worker would outlive the raise and trip torch's
    # SIGCHLD handler in this process when later tests' subprocesses exit
    with pytest.raises(train["TrainingError"], match=r"step 4: the fidelity check failed \(sample 1 of seed 0 is not "
                                                     r"finite.*\); the last checkpoint is kept"):
        train["main"](args)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["step"] == 2
