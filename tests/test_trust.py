"""Run folders and data read back are checked like flags typed in; outputs are checked in the units
they are written in; data whose parts disagree, or that does not match its run, is refused before
any output; output folders in use are locked; names stay inside their folder; a loss spike stops
training before the update."""
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, run_in_process, shared_path, train_command
from cosmodiff.checkpoint import CONFIG_RANGES, CheckpointError, load_run, lock_folder, release_folders
from cosmodiff.cli import FINITE, numbers_in
from cosmodiff.diffusion.formulations import Formulation
from cosmodiff.fields import FieldError, FieldSet, load_fields, save_fields


def generate(run, out, *extra):
    return run_in_process([sys.executable, ROOT / "UNet-DDPM" / "generate_images.py", "--checkpoint", run,
                           "--num_samples", "2", "--steps", "2", "--out", out, *extra])


def with_value(config, key, position, value):
    """config with the position-th number under the dotted key (a list's entries share it) set to value."""
    config = json.loads(json.dumps(config))
    seen = -1

    def replace(node, prefix):
        nonlocal seen
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for name, item in items:
            path = f"{prefix}.{name}" if prefix and isinstance(node, dict) else (str(name) if isinstance(node, dict) else prefix)
            if isinstance(item, (dict, list)):
                if replace(item, path):
                    return True
            elif isinstance(item, (int, float)) and not isinstance(item, bool) and path == key:
                seen += 1
                if seen == position:
                    node[name] = value
                    return True
        return False

    assert replace(config, "")
    return config


def numeric_keys(config):
    """(dotted key, position among the numbers under that key) of every number in a config."""
    keys, positions = [], {}
    for key, _ in numbers_in(config):
        keys.append((key, positions.get(key, 0)))
        positions[key] = positions.get(key, 0) + 1
    return keys


@pytest.mark.parametrize("folder", ["vp-run", "dit-run"])
def test_every_numeric_key_of_a_run_folders_config_is_checked_when_it_is_read(folder, tmp_path):
    """Each number of config.json set to NaN, infinity and just outside its range is refused by load_run
    (what every command reads a run through) in one sentence naming the file, the key and the range;
    the sampling command then exits 2 and writes nothing."""
    source = shared_path(f"run-folders/{folder}")
    run = tmp_path / "run"
    shutil.copytree(source, run)
    original = json.loads((source / "config.json").read_text())
    keys = numeric_keys(original)
    assert len(keys) > 30
    for key, position in keys:
        kind = CONFIG_RANGES.get(key) or CONFIG_RANGES.get(key.rsplit(".", 1)[0] + ".*") or FINITE
        for probe in [float("nan"), float("inf"), *kind.outside()]:
            (run / "config.json").write_text(json.dumps(with_value(original, key, position, probe)))
            message = f"{run / 'config.json'}: '{key}' is {probe}; it must be {kind.describe()}"
            with pytest.raises(CheckpointError) as error:
                load_run(run)
            assert str(error.value) == message
    for key in ("transform.offset", "diffusion.timesteps", "train_args.lr"):
        (run / "config.json").write_text(json.dumps(with_value(original, key, 0, float("nan"))))
        result = generate(run, tmp_path / "out")
        assert result.returncode == 2 and result.stderr.startswith(f"error: {run / 'config.json'}: '{key}' is nan")
        assert result.stderr.count("\n") == 1 and not (tmp_path / "out").exists()


def test_fields_that_are_not_finite_in_physical_units_are_refused_where_they_are_made(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(shared_path("run-folders/vp-run"), run)
    config = json.loads((run / "config.json").read_text())
    config["transform"]["log_std"] = 1e30  # in range, but the inverse transform overflows
    (run / "config.json").write_text(json.dumps(config))
    result = generate(run, tmp_path / "out")
    assert result.returncode == 2 and "not finite in physical units; nothing was written" in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_parameter_table_shorter_than_the_fields_is_refused_before_a_run_folder_exists(tmp_path):
    fields = np.random.default_rng(0).random((6, 32, 32)).astype(np.float32) + 0.5
    np.savez(tmp_path / "short.npz", fields=fields, params=np.full((4, 2), 0.3),
             param_names=np.array(["Omega_m", "sigma_8"]), box_size=250.0)
    result = run_in_process(train_command(tmp_path / "short.npz", tmp_path / "results", "--condition",
                                          "Omega_m,sigma_8", "--train_steps", "2"), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"error: {tmp_path / 'short.npz'}: 'params' has 4 rows for 6 fields; give one row per field\n"
    assert not (tmp_path / "results").exists() or not list((tmp_path / "results").iterdir())


def test_sim_indices_names_and_box_sizes_that_disagree_with_the_fields_are_refused(tmp_path):
    fields = np.ones((3, 16, 16), np.float32)
    cases = [(dict(sim_index=np.arange(2)), "'sim_index' has 2 entries for 3 fields"),
             (dict(params=np.ones((3, 2)), param_names=np.array(["Omega_m"])),
              "'param_names' names 1 parameters but 'params' has 2 columns"),
             (dict(box_size=-5.0), "'box_size' is -5.0; it must be a number > 0 (Mpc/h)")]
    for extra, message in cases:
        np.savez(tmp_path / "bad.npz", fields=fields, **extra)
        with pytest.raises(FieldError, match=re.escape(message)):
            load_fields(tmp_path / "bad.npz")


def test_a_samples_record_and_a_shard_index_with_values_out_of_range_are_refused(tmp_path):
    np.save(tmp_path / "samples.npy", np.ones((2, 16, 16), np.float32))
    (tmp_path / "samples.json").write_text(json.dumps({"box_size": -1.0}))
    with pytest.raises(FieldError, match=r"samples.json: 'box_size' is -1.0; it must be a number > 0"):
        load_fields(tmp_path / "samples.npy")
    source = tmp_path / "source.npz"
    save_fields(source, FieldSet(fields=np.ones((4, 16, 16), np.float32), box_size=100.0))
    shards = tmp_path / "shards"
    assert run_in_process([sys.executable, "-m", "cosmodiff.prepare", source, "--out", shards]).returncode == 0
    index = json.loads((shards / "index.json").read_text())
    (shards / "index.json").write_text(json.dumps(dict(index, box_size=float("nan"))))
    result = run_in_process(train_command(shards, tmp_path / "results", "--image_size", "16", "--train_steps", "1"),
                            cwd=tmp_path)
    assert result.returncode == 2 and "index.json: 'box_size' is nan; it must be a number > 0" in result.stderr


def test_an_npe_folders_numbers_are_checked(tmp_path):
    from cosmodiff.checkpoint import CheckpointError
    from cosmodiff.inference.npe import NPE_KIND, load_npe

    (tmp_path / "config.json").write_text(json.dumps(dict(kind=NPE_KIND, names=["Omega_m"], low=[0.1], high=[0.5],
                                                          image_size=0, box_size=250.0, network="cnn")))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="'image_size' is 0; it must be an integer >= 1"):
        load_npe(tmp_path)


def test_inference_refuses_fields_whose_box_is_not_the_runs(conditional_run, tmp_path):
    np.save(tmp_path / "field.npy", np.random.default_rng(0).random((1, 64, 64)).astype(np.float32) + 0.5)
    result = run_in_process([sys.executable, ROOT / "evaluate" / "infer.py", tmp_path / "field.npy", "--checkpoint",
                             conditional_run / "results" / "run", "--out", tmp_path / "posterior"])
    assert result.returncode == 2, result.stderr
    assert ("its box size is not recorded, so it is taken as 1000 Mpc/h but the run was trained on a 250 Mpc/h box; "
            "pass box_size (--box_size)") in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "posterior").exists()


def test_output_folders_in_use_are_refused_naming_the_holder_and_freed_by_kill_9(conditional_run, tmp_path):
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    for path in (a, b):
        np.save(path, np.random.default_rng(0).random((8, 16, 16)).astype(np.float32) + 0.5)
    out = tmp_path / "held"
    commands = {
        "sampling": [ROOT / "UNet-DDPM" / "generate_images.py", "--checkpoint", conditional_run / "results" / "run",
                     "--params", "Omega_m=0.3,sigma_8=0.8", "--num_samples", "1", "--steps", "2", "--out", out],
        "evaluation": [ROOT / "evaluate" / "power_spectrum.py", a, b, "--out", out],
        "inference": [ROOT / "evaluate" / "infer.py", conditional_run / "lh.npz", "--indices", "0", "--checkpoint",
                      conditional_run / "results" / "run", "--method", "power_spectrum", "--grid", "3", "--out", out],
        "conversion": ["-m", "cosmodiff.prepare", a, "--out", out],
        "NPE training": [ROOT / "evaluate" / "train_npe.py", "--data_path", conditional_run / "lh.npz",
                         "--image_size", "32", "--out", out],
    }
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from cosmodiff.checkpoint import lock_folder; "
                               "lock_folder(sys.argv[1], 'x', 'y'); print('held', flush=True); time.sleep(120)", out],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        for holder_kind, command in commands.items():
            result = run_in_process([sys.executable, *command])
            assert result.returncode == 2, (holder_kind, result.stderr)
            assert f"{out}: in use by another {holder_kind} (pid {holder.pid}); wait for it to end or pick another --out" \
                in result.stderr and result.stderr.count("\n") == 1, result.stderr
    finally:
        holder.kill()  # kill -9: the kernel drops the lock with the process
        holder.wait()
    assert sorted(path.name for path in out.iterdir()) == [".lock"]
    result = run_in_process([sys.executable, *commands["evaluation"]])
    assert result.returncode == 0 and (out / "report.json").exists(), result.stderr
    lock_folder(out, "evaluation", "pick another --out")  # and this process can take it again, then let it go
    release_folders()


@pytest.mark.parametrize("name", ["../../x", "a/b", ".."])
def test_a_run_name_stays_inside_the_results_folder(name, tiny_data, tmp_path):
    result = run_in_process(train_command(tiny_data, tmp_path / "results", "--run_name", name, "--train_steps", "1"),
                            cwd=tmp_path)
    assert result.returncode == 2 and result.stderr == (
        f"error: argument --run_name: must be a folder name without a path separator or '..', got '{name}'\n")
    assert not list(tmp_path.iterdir())


def test_a_loss_spike_stops_before_the_update_keeping_the_last_checkpoint(tiny_data, tmp_path, monkeypatch):
    loss, calls = Formulation.loss, []

    def spiking(self, *args, **kwargs):
        calls.append(None)
        value = loss(self, *args, **kwargs)
        return value * 1000 if len(calls) == 30 else value

    monkeypatch.setattr(Formulation, "loss", spiking)
    result = run_in_process(train_command(tiny_data, tmp_path, "--train_steps", "40", "--save_every", "25",
                                          "--val_samples", "0", "--run_name", "spike"), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    error = result.stderr.split("error: ")[1]
    assert error.startswith("step 30: the loss jumped to") and "of the last 29 steps; stopped before the update" in error
    assert "lower --lr than 0.002" in error
    assert json.loads((tmp_path / "spike" / "config.json").read_text())["step"] == 25


def test_no_command_writes_its_output_into_a_training_run(conditional_run, tmp_path):
    run = conditional_run / "results" / "run"
    link = tmp_path / "link"
    link.symlink_to(run, target_is_directory=True)
    before = {path.name: path.stat().st_mtime_ns for path in run.iterdir()}
    for out in (run, link):
        commands = [[ROOT / "evaluate" / "train_npe.py", "--data_path", conditional_run / "lh.npz", "--image_size", "32",
                     "--max_epochs", "1", "--out", out],
                    [ROOT / "UNet-DDPM" / "generate_images.py", "--checkpoint", run, "--params", "Omega_m=0.3,sigma_8=0.8",
                     "--num_samples", "1", "--steps", "2", "--out", out]]
        for command in commands:
            result = run_in_process([sys.executable, *command])
            assert result.returncode == 2, result.stderr
            assert f"{out}: holds a training run (its config.json and weights)" in result.stderr, result.stderr
    assert {path.name: path.stat().st_mtime_ns for path in run.iterdir()} == before  # nothing written, the run intact


def test_a_training_run_is_a_folder_whose_config_has_train_args(tmp_path):
    from cosmodiff.checkpoint import holds_training_run

    run, npe, broken = tmp_path / "run", tmp_path / "npe", tmp_path / "broken"
    for folder, text in ((run, '{"train_args": {}, "step": 3}'), (npe, '{"kind": "npe"}'), (broken, '{"train_args": ')):
        folder.mkdir()
        (folder / "config.json").write_text(text)
    (tmp_path / "link").symlink_to(run, target_is_directory=True)
    assert holds_training_run(run) and holds_training_run(tmp_path / "link")
    assert not holds_training_run(npe) and not holds_training_run(broken) and not holds_training_run(tmp_path / "none")
