"""What survives what: preemption, kill -9 during saves, a full disk, a diverging loss, a busy run folder."""
import errno
import fcntl
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from ema_pytorch import EMA
from safetensors.torch import load_file

import cosmodiff.checkpoint as checkpoint
from conftest import ROOT, losses, run_in_process, train_command, wait_for_group_exit
from cosmodiff.checkpoint import CheckpointError, load_run, load_training_state, save_checkpoint
from cosmodiff.models import build_model

SEED = ["--seed", "3"]


def resume_command(run):
    return [sys.executable, str(ROOT / "train.py"), "--resume", str(run)]


def committed_step(run):
    path = run / "config.json"
    return json.loads(path.read_text())["step"] if path.exists() else 0


def wait_for_step(process, run, step, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None and committed_step(run) < step:
        time.sleep(0.02)


def assert_consistent(run):
    """The weights load_run gives are the EMA of the step config.json names, whose state folder is whole."""
    network, _, config = load_run(run)
    state = run / config["state"]
    ema = load_file(str(state / "ema.safetensors"))
    assert int(ema["step"]) >= 0 and (state / "model.safetensors").exists()
    for name, tensor in network.state_dict().items():
        assert torch.equal(tensor, ema[f"ema_model.{name}"]), name
    return config["step"]


def assert_same_run(run, reference):
    assert [step for step, _ in losses(run)] == [step for step, _ in losses(reference)]
    np.testing.assert_allclose([loss for _, loss in losses(run)], [loss for _, loss in losses(reference)], rtol=1e-5)
    ours, theirs = load_file(str(run / "model.safetensors")), load_file(str(reference / "model.safetensors"))
    for name in theirs:
        torch.testing.assert_close(ours[name], theirs[name], rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def uninterrupted(tiny_data, tmp_path_factory):
    results = tmp_path_factory.mktemp("whole")
    result = run_in_process(train_command(tiny_data, results, *SEED, "--train_steps", "24", "--save_every", "1",
                                          "--run_name", "whole"), cwd=results)
    assert result.returncode == 0, result.stderr
    return results / "whole"


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGUSR1])
def test_preemption_signal_checkpoints_exits_75_and_resumes_on_the_same_trajectory(tiny_data, tmp_path, uninterrupted,
                                                                                     signal_number):
    run = tmp_path / "preempted"
    process = subprocess.Popen(train_command(tiny_data, tmp_path, *SEED, "--train_steps", "24", "--save_every", "5",
                                             "--run_name", "preempted"), cwd=tmp_path, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    wait_for_step(process, run, 5)
    process.send_signal(signal_number)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 75, stderr
    stopped = committed_step(run)
    assert 5 <= stopped < 24 and f"stopped after step {stopped} with its checkpoint written" in stderr
    assert [step for step, _ in losses(run)] == list(range(1, stopped + 1))
    assert_consistent(run)
    resumed = run_in_process(resume_command(run), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(run, uninterrupted)


def test_kill_9_at_random_moments_always_resumes_from_one_whole_step(tiny_data, tmp_path, uninterrupted):
    """Three kill -9 at random moments of a run that checkpoints every step (so most land in a save); a
    kill before each of a save's writes is test_a_save_killed_at_each_of_its_writes_leaves_one_whole_step."""
    run, rng = tmp_path / "killed", random.Random(0)
    command = train_command(tiny_data, tmp_path, *SEED, "--train_steps", "24", "--save_every", "1", "--run_name", "killed")
    kills = 0
    while kills < 3:
        process = subprocess.Popen(command if kills == 0 else resume_command(run), cwd=tmp_path,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_for_step(process, run, committed_step(run) + 1)
        time.sleep(rng.uniform(0, 0.4))
        if process.poll() is not None:
            break  # finished before this kill
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        wait_for_group_exit(process.pid)
        kills += 1
        assert_consistent(run)
    assert kills == 3
    resumed = run_in_process(resume_command(run), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(run, uninterrupted)


class Killed(BaseException):
    """Stands for kill -9: nothing after it runs, no handler sees it."""


def resumable_copy(uninterrupted, tmp_path, name):
    """A copy of a finished run, and the in-process accelerator, EMA and config to save its next step with."""
    run = tmp_path / name
    shutil.copytree(uninterrupted, run)
    config = json.loads((run / "config.json").read_text())
    network = build_model(config["model"]["name"], config["model"]["kwargs"])
    ema = EMA(network, beta=0.9, update_after_step=0, include_online_model=False)
    accelerator = Accelerator(cpu=True)
    model, optimizer = accelerator.prepare(network, torch.optim.AdamW(network.parameters()))
    load_training_state(run, accelerator, ema)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.add_(1.0)
    ema.update()
    return run, accelerator, ema, dict(config, step=config["step"] + 1)


def test_a_save_killed_at_each_of_its_writes_leaves_one_whole_step(uninterrupted, tmp_path, monkeypatch):
    """Kill before every file a save writes or renames: after the training state, between it and the
    weights, between the weights and config.json. The folder resumes from one step, never a mix."""
    writes = {"os.replace": checkpoint.os.replace, "save_file": checkpoint.save_file}
    for kill_at in range(6):
        run, accelerator, ema, config = resumable_copy(uninterrupted, tmp_path, f"kill{kill_at}")
        calls = []

        def counting(name):
            def write(*args, **kwargs):
                calls.append(name)
                if len(calls) > kill_at:
                    raise Killed()
                return writes[name](*args, **kwargs)
            return write
        monkeypatch.setattr(checkpoint.os, "replace", counting("os.replace"))
        monkeypatch.setattr(checkpoint, "save_file", counting("save_file"))
        try:
            save_checkpoint(run, accelerator, ema, config)
        except Killed:
            pass
        monkeypatch.undo()
        assert len(calls) == min(kill_at + 1, 5)  # five writes: EMA, state rename, weights, their rename, config
        step = assert_consistent(run)
        assert step == uninterrupted_step(uninterrupted) + (kill_at >= 5)  # config.json is the last rename
        run_again, accelerator, ema, _ = resumable_copy(run, tmp_path, f"resumed{kill_at}")
        assert load_training_state(run_again, accelerator, ema)["step"] == step


def uninterrupted_step(run):
    return json.loads((run / "config.json").read_text())["step"]


def test_a_full_disk_keeps_the_previous_checkpoint_and_says_so(uninterrupted, tmp_path, monkeypatch):
    run, accelerator, ema, config = resumable_copy(uninterrupted, tmp_path, "full")

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(checkpoint, "save_file", no_space)
    with pytest.raises(CheckpointError, match=r"could not write the checkpoint of step 25 \(No space left on device\); "
                                              r"the previous checkpoint \(step 24\) is intact"):
        save_checkpoint(run, accelerator, ema, config)
    monkeypatch.undo()
    assert not list(run.glob("*.tmp*")) and assert_consistent(run) == 24


def test_a_diverging_loss_stops_with_its_step_and_keeps_the_last_finite_checkpoint(tiny_data, tmp_path):
    result = run_in_process(train_command(tiny_data, tmp_path, *SEED, "--train_steps", "6", "--save_every", "1",
                                          "--lr", "1e30", "--warmup_steps", "1", "--run_name", "nan"), cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("error: ") == 1, result.stderr
    error = result.stderr.split("error: ")[1].splitlines()[0]
    assert "the loss is" in error and "gradients are not finite" in error
    failed_step = int(error.split("step ")[1].split(":")[0])
    run = tmp_path / "nan"
    assert committed_step(run) == failed_step - 1
    weights = load_file(str(run / "model.safetensors"))
    assert all(torch.isfinite(tensor).all() for tensor in weights.values())


def test_a_run_folder_in_use_is_refused(tiny_data, tmp_path, uninterrupted):
    run = tmp_path / "busy"
    shutil.copytree(uninterrupted, run)
    with (run / ".lock").open("a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        handle.truncate(0)
        handle.write("pid 4242")
        handle.flush()
        result = run_in_process(resume_command(run) + ["--train_steps", "30"], cwd=tmp_path)
    assert result.returncode == 2 and f"{run}: in use by another training run (pid 4242)" in result.stderr
    assert committed_step(run) == 24


def test_resume_without_its_state_folder_is_refused(tmp_path, uninterrupted):
    run = tmp_path / "stateless"
    shutil.copytree(uninterrupted, run)
    shutil.rmtree(run / json.loads((run / "config.json").read_text())["state"])
    result = run_in_process(resume_command(run) + ["--train_steps", "30"], cwd=tmp_path)
    assert result.returncode == 2 and "the training state config.json names is missing or incomplete" in result.stderr


def test_ctrl_c_during_an_evaluation_is_one_line_exit_130_and_leaves_no_temporary_folder(tmp_path, monkeypatch):
    from cosmodiff import plots
    from cosmodiff.fields import FieldSet, save_fields

    fields = np.random.default_rng(0).lognormal(sigma=0.5, size=(8, 16, 16)).astype(np.float32)
    save_fields(tmp_path / "real.npz", FieldSet(fields=fields, box_size=250.0))
    save_fields(tmp_path / "generated.npz", FieldSet(fields=fields[::-1].copy(), box_size=250.0))

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setitem(plots.FIGURES, list(plots.FIGURES)[-1], interrupt)  # everything else is staged by then
    result = run_in_process([sys.executable, ROOT / "evaluate" / "power_spectrum.py", tmp_path / "real.npz",
                             tmp_path / "generated.npz", "--out", tmp_path / "evaluation"], cwd=ROOT)
    assert result.returncode == 130
    assert result.stderr.strip().splitlines()[-1] == f"interrupted: nothing written to {tmp_path / 'evaluation'}"
    assert "Traceback" not in result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["generated.npz", "real.npz"]


def test_scripts_end_ctrl_c_and_operating_system_errors_in_one_line(capsys):
    from cosmodiff.cli import exit_on

    def interrupted(args):
        raise KeyboardInterrupt

    def read_only(args):
        raise PermissionError(13, "Permission denied", "/results/run")

    for main, status, line in ((interrupted, 130, "interrupted"), (read_only, 2, "error: /results/run: Permission denied")):
        with pytest.raises(SystemExit) as stop:
            exit_on(ValueError, main, None)
        assert stop.value.code == status
        assert capsys.readouterr().err.strip().splitlines() == [line]
