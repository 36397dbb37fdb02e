"""The emulated training path: a conditional run's fields at chosen cosmologies (cosmodiff.emulate) and
the NPE trained on them (evaluate/train_npe.py --emulator)."""
import json
import sys

import numpy as np
import pytest

from conftest import ROOT, run_in_process
from cosmodiff.emulate import emulated_set, latin_hypercube
from cosmodiff.fields import load_fields


def test_latin_hypercube_puts_one_point_in_each_stratum_of_every_parameter():
    low, high = [0.1, 0.6], [0.5, 1.0]
    points = latin_hypercube(20, low, high, seed=3)
    assert points.shape == (20, 2)
    for column, (a, b) in enumerate(zip(low, high)):
        strata = np.floor((points[:, column] - a) / (b - a) * 20).astype(int)
        assert sorted(strata) == list(range(20))  # the definition of a Latin hypercube
    assert np.array_equal(points, latin_hypercube(20, low, high, seed=3))
    assert not np.array_equal(points, latin_hypercube(20, low, high, seed=4))


def test_emulated_set_holds_fields_per_point_with_their_parameters(conditional_run):
    run = conditional_run / "results" / "run"
    config = json.loads((run / "config.json").read_text())
    low, high = np.array(config["condition"]["low"]), np.array(config["condition"]["high"])
    points = low + np.array([[0.1, 0.2], [0.9, 0.5], [0.5, 0.8]]) * (high - low)  # inside the training ranges
    emulated = emulated_set(run, points, 2, steps=3)
    assert emulated.fields.shape == (6, 32, 32) and emulated.param_names == ["Omega_m", "sigma_8"]
    assert np.array_equal(emulated.params, np.repeat(points, 2, axis=0))
    assert emulated.sim_index.tolist() == [0, 0, 1, 1, 2, 2]
    assert np.isfinite(emulated.fields).all() and (emulated.fields >= 0).all()  # densities
    assert len({field.tobytes() for field in emulated.fields}) == 6  # every field its own noise
    assert emulated.box_size == config["box_size"]
    with pytest.raises(ValueError, match=r"points must be \(M, 2\) values of Omega_m, sigma_8"):
        emulated_set(run, [0.3, 0.8], 2)
    with pytest.raises(ValueError, match="fields_per_point"):
        emulated_set(run, points, 0)


def test_npe_trains_on_emulated_fields_in_one_command(conditional_run, tmp_path):
    run = conditional_run / "results" / "run"
    out = tmp_path / "npe-emulated"
    result = run_in_process([sys.executable, str(ROOT / "evaluate" / "train_npe.py"), "--data_path",
                             str(conditional_run / "lh.npz"), "--image_size", "32", "--emulator", str(run),
                             "--emulated_cosmologies", "6", "--max_epochs", "2", "--out", str(out)])
    assert result.returncode == 0, result.stderr
    data = load_fields(conditional_run / "lh.npz")
    emulated = load_fields(out / "emulated.npz")
    assert len(emulated) == len(data)  # the data's number of fields, spread over the emulated cosmologies
    assert len(np.unique(emulated.params, axis=0)) == 6
    condition = json.loads((run / "config.json").read_text())["condition"]
    assert (emulated.params >= np.array(condition["low"])).all() and (emulated.params <= np.array(condition["high"])).all()
    config = json.loads((out / "config.json").read_text())
    assert config["emulator"] == str(run) and config["emulated_cosmologies"] == 6 and config["fields"] == len(data)
    assert config["low"] == condition["low"] and config["high"] == condition["high"]  # the emulator's prior
    assert config["cpu_seconds_per_emulated_field"] > 0

    # a chosen count, steps and guidance: the fields are emulated_set's with them at the hypercube's points
    chosen = run_in_process([sys.executable, str(ROOT / "evaluate" / "train_npe.py"), "--data_path",
                             str(conditional_run / "lh.npz"), "--image_size", "32", "--emulator", str(run),
                             "--emulated_cosmologies", "3", "--emulated_fields", "6", "--emulator_steps", "2",
                             "--emulator_guidance", "1", "--max_epochs", "1", "--out", str(tmp_path / "chosen")])
    assert chosen.returncode == 0, chosen.stderr
    points = latin_hypercube(3, condition["low"], condition["high"], seed=0)
    expected = emulated_set(run, points, 2, guidance=1.0, steps=2, seed=0)
    np.testing.assert_allclose(load_fields(tmp_path / "chosen" / "emulated.npz").fields, expected.fields, rtol=1e-5)
    config = json.loads((tmp_path / "chosen" / "config.json").read_text())
    assert config["fields"] == 6 and config["fields_per_cosmology"] == 2
    assert config["emulator_steps"] == 2 and config["emulator_guidance"] == 1.0

    mismatched = run_in_process([sys.executable, str(ROOT / "evaluate" / "train_npe.py"), "--data_path",
                                 str(conditional_run / "lh.npz"), "--image_size", "32", "--emulator", str(run),
                                 "--condition", "Omega_m", "--out", str(tmp_path / "never")])
    assert mismatched.returncode == 2
    assert "the NPE infers Omega_m (--condition), which the emulator must be conditioned on" in mismatched.stderr
    assert not (tmp_path / "never").exists()
