import csv
import json
import os
import runpy
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, TINY, free_port, run_in_process, shared_path, wait_for_group_exit
from cosmodiff.fields import load_fields, save_fields
from cosmodiff.mock import make_mock_set

GENERATE = str(ROOT / "UNet-DDPM" / "generate_images.py")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gen")
    save_fields(folder / "tiny.npz", make_mock_set(1, grid=32, image_size=32, progress=False, method="2lpt"))
    result = run_in_process([sys.executable, str(ROOT / "train.py"), "--data_path", str(folder / "tiny.npz"),
                             "--image_size", "32", "--batch_size", "4", "--train_steps", "2", "--timesteps", "100",
                             "--sampling_timesteps", "2", "--results_dir", str(folder / "results"), "--run_name", "run"], cwd=folder)
    assert result.returncode == 0, result.stderr
    return folder


def generate(cwd, *args, env=None):
    return run_in_process([sys.executable, GENERATE, *map(str, args)], cwd=cwd, env=env)


def test_generate_writes_physical_samples_previews_and_record(trained_run):
    result = generate(trained_run, "--num_samples", "3", "--seed", "42", "--steps", "4", "--batch_size", "2")
    assert result.returncode == 0, result.stderr
    out = trained_run / "results" / "run" / "samples"
    fields = np.load(out / "samples.npy")
    assert fields.shape == (3, 32, 32) and fields.dtype == np.float32 and (fields >= 0).all()
    record = json.loads((out / "samples.json").read_text())
    assert record["sampler"] == "unipc" and record["grid"] == "log" and record["steps"] == 4 and record["seed"] == 42
    assert record["seconds_per_sample"] > 0 and record["box_size"] == 250.0
    samples = load_fields(out / "samples.npy")  # the evaluation reads the box from samples.json
    assert samples.box_size == 250.0 and not samples.box_size_assumed
    assert len(list(out.glob("sample_*.png"))) == 3 and (out / "samples_grid.png").exists()


def test_two_processes_give_the_same_fields_as_one(trained_run):
    one = generate(trained_run, "--num_samples", "3", "--sampler", "dpm++", "--steps", "3", "--out", "one")
    assert one.returncode == 0, one.stderr
    env = dict(os.environ, ACCELERATE_USE_CPU="true")
    two = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                          "--num_machines", "1", "--main_process_port", free_port(), "--mixed_precision", "no", "--dynamo_backend", "no", GENERATE,
                          "--num_samples", "3", "--sampler", "dpm++", "--steps", "3", "--batch_size", "1", "--out", "two"],
                         cwd=trained_run, env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    np.testing.assert_allclose(np.load(trained_run / "two" / "samples.npy"), np.load(trained_run / "one" / "samples.npy"),
                               rtol=1e-4)
    assert json.loads((trained_run / "two" / "samples.json").read_text())["num_processes"] == 2


def test_bf16_trains_and_samples_on_cpu(trained_run, tiny_data):
    # what `accelerate launch --cpu --mixed_precision bf16 --dynamo_backend no` hands the script
    bf16 = dict(os.environ, ACCELERATE_MIXED_PRECISION="bf16", ACCELERATE_USE_CPU="true", ACCELERATE_DYNAMO_BACKEND="NO")

    def launch(script, *args):
        return run_in_process([sys.executable, script, *map(str, args)], cwd=trained_run, env=bf16)
    trained = launch(ROOT / "train.py", *TINY, "--data_path", tiny_data, "--train_steps", "3", "--results_dir", "bf16",
                     "--run_name", "run")
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert json.loads((trained_run / "bf16" / "run" / "config.json").read_text())["mixed_precision"] == "bf16"
    assert all(np.isfinite(float(row["loss"])) for row in csv.DictReader((trained_run / "bf16" / "run" / "log.csv").open()))
    sampled = launch(GENERATE, "--num_samples", "2", "--sampler", "dpm++", "--steps", "3", "--out", "half")
    full = generate(trained_run, "--num_samples", "2", "--sampler", "dpm++", "--steps", "3", "--out", "full")
    assert sampled.returncode == 0 and full.returncode == 0, sampled.stderr[-3000:] + full.stderr
    assert json.loads((trained_run / "half" / "samples.json").read_text())["mixed_precision"] == "bf16"
    half, single = np.load(trained_run / "half" / "samples.npy"), np.load(trained_run / "full" / "samples.npy")
    difference = np.abs(np.log(half) - np.log(single))  # bf16 network, float32 sampler: close, not equal
    assert 0 < difference.max() and np.median(difference) < 0.05


def test_generate_errors(trained_run, tmp_path, monkeypatch, capsys):
    cases = [
        ((tmp_path, "--results_dir", tmp_path / "none"), "no run folders with a config.json"),
        ((tmp_path, "--checkpoint", tmp_path), "not a run folder (no config.json)"),
        ((trained_run, "--num_samples", "0"), "error: argument --num_samples: must be an integer >= 1, got 0"),
        ((trained_run, "--sampler", "ddpm", "--steps", "10"), "ddpm runs all 100 training timesteps"),
        ((trained_run, "--params", "Omega_m=0.3"), "this run is unconditional; it takes no --params"),
        ((trained_run, "--guidance", "2"), "this run is unconditional"),
    ]
    broken = tmp_path / "broken"
    broken.mkdir()
    run = trained_run / "results" / "run"
    config = json.loads((run / "config.json").read_text())
    config["model"]["kwargs"]["dim"] = 8
    (broken / "config.json").write_text(json.dumps(config))
    (broken / "model.safetensors").write_bytes((run / "model.safetensors").read_bytes())
    cases.append(((tmp_path, "--checkpoint", broken), "the weights do not match the model in config.json"))
    weights = (run / "model.safetensors").read_bytes()

    def corrupt(name, config_text=None, weights_bytes=weights):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.json").write_text(config_text if config_text is not None else json.dumps(
            {key: value for key, value in config.items() if key != "state"}))
        (folder / "model.safetensors").write_bytes(weights_bytes)
        return folder
    good = json.loads((run / "config.json").read_text())
    cases += [
        ((tmp_path, "--checkpoint", corrupt("truncated", weights_bytes=weights[:len(weights) // 2])),
         "truncated/model.safetensors: not a readable safetensors file"),
        ((tmp_path, "--checkpoint", corrupt("garbage", weights_bytes=b"\x00garbage" * 100)),
         "garbage/model.safetensors: not a readable safetensors file"),
        ((tmp_path, "--checkpoint", corrupt("notjson", config_text="{model: unet")),
         "notjson/config.json: unreadable config"),
        ((tmp_path, "--checkpoint", corrupt("nokeys", config_text=json.dumps({"model": good["model"]}))),
         "nokeys/config.json: lacks the key 'diffusion'"),
        ((tmp_path, "--checkpoint", corrupt("unknownmodel", config_text=json.dumps(dict(good, model={"name": "vit", "kwargs": {}})))),
         "unknownmodel/config.json: unknown model 'vit'"),
        ((tmp_path, "--checkpoint", corrupt("unknownformulation", config_text=json.dumps(dict(good, diffusion={"formulation": "ve"})))),
         "unknownformulation/config.json: unknown formulation 've'"),
        ((tmp_path, "--checkpoint", corrupt("newer", config_text=json.dumps(dict(good, format=99)))),
         "newer/config.json: written by a newer version (run folder format 99; this one reads up to 2)"),
    ]
    for (cwd, *args), message in cases:  # in this process: the script's own exit path, without 14 start-ups
        monkeypatch.chdir(cwd)
        monkeypatch.setattr(sys, "argv", [GENERATE, *map(str, args)])
        with pytest.raises(SystemExit) as exit_status:
            runpy.run_path(GENERATE, run_name="__main__")
        stderr = capsys.readouterr().err
        assert exit_status.value.code == 2 and message in stderr, (message, stderr)
        assert stderr.count("\n") == 1, stderr
        assert not (tmp_path / "samples").exists() and not list(tmp_path.glob("*/samples"))


@pytest.mark.parametrize("run, sampler, reference", [("vp-run", "ddim", "vp-run-ddim5-seed42.npy"),
                                                     ("vp-run", "dpm++", "vp-run-dpm5-seed42.npy"),
                                                     ("dit-run", "ddim", "dit-run-ddim5-seed42.npy")])
def test_run_folders_from_before_the_formulations_give_the_same_fields(run, sampler, reference, tmp_path):
    """Users' run folders written before diffusion formulations existed sample as they did then."""
    folder, expected = shared_path(f"run-folders/{run}"), np.load(shared_path(f"run-folders/{reference}"))
    result = generate(tmp_path, "--checkpoint", folder, "--num_samples", "4", "--seed", "42", "--sampler", sampler,
                      "--steps", "5", "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    fields = np.load(tmp_path / "out" / "samples.npy")
    assert fields.shape == expected.shape
    assert np.abs(fields - expected).max() / np.abs(expected).max() < 1e-3


def test_interrupted_sampling_keeps_its_finished_batches_and_ends_with_the_same_fields(trained_run, tmp_path):
    args = ["--checkpoint", trained_run / "results" / "run", "--num_samples", "6", "--batch_size", "1", "--steps", "30",
            "--seed", "5"]
    whole = generate(tmp_path, *args, "--out", tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr
    out = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, GENERATE, *map(str, args), "--out", str(out)], cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "parts").glob("0*[0-9].npy"))) < 2:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    wait_for_group_exit(process.pid)
    finished = sorted((out / "parts").glob("0*[0-9].npy"))
    assert 2 <= len(finished) < 6 and not (out / "samples.npy").exists()
    shutil.copytree(out, tmp_path / "marked")
    np.save(tmp_path / "marked" / "parts" / finished[0].name, np.full((1, 32, 32), 7.0, np.float32))
    for folder in (out, tmp_path / "marked"):
        again = generate(tmp_path, *args, "--out", folder)
        assert again.returncode == 0, again.stderr
        assert not (folder / "parts").exists()
    np.testing.assert_array_equal(np.load(out / "samples.npy"), np.load(tmp_path / "whole" / "samples.npy"))
    reused = np.load(tmp_path / "marked" / "samples.npy")[int(finished[0].stem)]
    assert (reused == 7.0).all()  # the finished batch was kept, not sampled again
