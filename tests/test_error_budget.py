import csv
import json
import runpy
import sys

import pytest
import torch
from safetensors.torch import save_file

from cosmodiff.error_budget import solved
from conftest import ROOT, TINY, run_in_process
from cosmodiff.diffusion import build_formulation
from cosmodiff.fields import FieldSet, save_fields
from cosmodiff.mock import make_mock_set
from cosmodiff.models import build_model
from cosmodiff.transforms import LogTransform

ERROR_BUDGET = runpy.run_path(str(ROOT / "benchmarks" / "error_budget.py"))
KWARGS = dict(dim=8, dim_mults=[1, 2], attn_heads=1, attn_dim_head=8)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A run folder holding a tiny, randomly initialised UNet (config.json, model.safetensors, log.csv)."""
    folder = tmp_path_factory.mktemp("budget")
    real = make_mock_set(1, grid=16, image_size=16, progress=False, method="2lpt")
    save_fields(folder / "test.npz", real)
    torch.manual_seed(0)
    network = build_model("unet", KWARGS)
    run = folder / "run"
    run.mkdir()
    save_file({name: tensor.contiguous() for name, tensor in network.state_dict().items()}, str(run / "model.safetensors"))
    formulation = build_formulation({"formulation": "vp", "timesteps": 100})
    config = dict(format=2, model={"name": "unet", "kwargs": KWARGS}, diffusion=formulation.settings(), image_size=16,
                  box_size=real.box_size, transform=LogTransform.fit(real.fields).to_dict(), step=7, condition=None)
    (run / "config.json").write_text(json.dumps(config))
    with (run / "log.csv").open("w", newline="") as file:
        csv.writer(file).writerows([["step", "loss", "cpu_s"], [7, 0.5, 90.0]])
    return folder


def budget(tiny_run, out, *extra):
    args = ["--num_samples", "8", "--batch_size", "4", "--reference", "dpm++3m:4:log", "--out", str(tiny_run / out)]
    return ERROR_BUDGET["main"](ERROR_BUDGET["parse_args"]([str(tiny_run / "run"), *args, *extra]))


def test_error_budget_splits_the_mafd_into_model_sampler_and_floor(tiny_run):
    results = tiny_run / "fidelity.json"
    report = budget(tiny_run, "first", "--test", str(tiny_run / "test.npz"), "--sampler", "dpm++:3:log",
                    "--check_reference", "--results", str(results), "--recipe", "tiny")
    for space in ("delta", "log"):
        assert set(report["budget"][space]) == {"all", "k < 0.1", "0.1-0.4"}  # 16 pixels of 15.6 Mpc/h: Nyquist 0.2
        row = report["budget"][space]["all"]
        assert row["floor"] > 0 and row["model_error"] > 0 and row["sampler_error"] > 0
        assert row["mafd_over_floor"] == pytest.approx(row["mafd"] / row["floor"])
    assert report["reference_check"]["doubled"] == "dpm++3m:8:log"
    # 8 log-spaced levels of a 100-step vp schedule snap to 7 distinct training timesteps
    assert report["network_evaluations"] == {"reference": 4, "sampler": 3, "reference_doubled": 7}
    real = report["one_point"]["real"]
    assert real["delta_q0.999"] > real["delta_q0.99"] > 0 and real["var_delta"] > 0
    assert (tiny_run / "first" / "error_budget.png").exists()
    rows = json.loads(results.read_text())
    assert [row["solve"] for row in rows] == ["reference", "sampler"]
    assert rows[0]["cpu_minutes"] == 1.5 and rows[0]["recipe"] == "tiny" and rows[0]["step"] == 7
    assert rows[1]["nfe"] == 3 and rows[1]["grid"] == "log"
    assert rows[1]["sampler_error"] == report["budget"]["delta"]["all"]["sampler_error"]
    budget(tiny_run, "first", "--test", str(tiny_run / "test.npz"), "--sampler", "dpm++:3:log", "--results", str(results))
    assert len(json.loads(results.read_text())) == 2  # the same budget's rows are replaced, not repeated


def test_against_its_own_reference_the_model_error_is_zero_and_the_same_solve_has_no_sampler_error(tiny_run):
    reference = solved(tiny_run / "run", "dpm++3m:4:log", 8, 0, 4, tiny_run, "cpu")
    save_fields(tiny_run / "as_real.npz", FieldSet(fields=reference, box_size=250.0))
    report = budget(tiny_run, "second", "--test", str(tiny_run / "as_real.npz"), "--sampler", "dpm++3m:4:log")
    for space in ("delta", "log"):
        row = report["budget"][space]["all"]
        # zero up to float32 rounding: the two solves may run on different thread counts
        assert row["model_error"] < 1e-6 and row["sampler_error"] < 1e-6 and row["mafd"] < 1e-6
    one_point = report["one_point"]
    assert one_point["reference"] == pytest.approx(one_point["real"], rel=1e-5)


def test_convergence_trains_a_run_per_budget_when_the_schedule_ends_with_the_run(tiny_data, tmp_path):
    train_args = " ".join(["--data_path", str(tiny_data), *TINY, "--lr", "1e-3", "--lr_schedule", "wsd",
                           "--cooldown_fraction", "0.5", "--save_every", "1000"])
    result = run_in_process([sys.executable, ROOT / "benchmarks" / "convergence.py", "--name", "study", "--out", tmp_path,
                             "--separate_runs", "--budgets", "4 6", "--train_args", train_args])
    assert result.returncode == 0, result.stderr
    for budget in (4, 6):
        copy = tmp_path / "study" / "checkpoints" / f"step-{budget:07d}"
        assert json.loads((copy / "config.json").read_text())["step"] == budget
        rates = [float(row["lr"]) for row in csv.DictReader((copy / "log.csv").open())]
        # each budget's own run decays over its own last half: 4 steps end at 1/2, 6 steps at 1/3 of the rate
        assert len(rates) == budget and rates[-1] == pytest.approx(1e-3 / (budget // 2), rel=1e-3)
    assert (tmp_path / "study" / "run-0000004").is_dir() and (tmp_path / "study" / "run-0000006").is_dir()
