"""The Python API (cosmodiff.train, load, sample, evaluate, posterior) and the quickstart example: the
same fields, posteriors and refusals as the commands."""
import json
import re
import runpy
import sys

import numpy as np
import pytest

import cosmodiff
from conftest import ROOT, run_in_process
from cosmodiff.fields import FieldError, load_fields


def test_the_quickstart_trains_samples_evaluates_and_plots(tmp_path):
    import torch

    quickstart = runpy.run_path(str(ROOT / "examples" / "quickstart.py"))
    threads = torch.get_num_threads()
    torch.set_num_threads(3)  # a count no training would choose on its own here: a library call leaves it be
    try:
        report = quickstart["main"](tmp_path)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(threads)
    run_dir = tmp_path / "runs" / "quickstart"
    config = json.loads((run_dir / "config.json").read_text())
    assert config["step"] == 60 and config["image_size"] == 32 and (run_dir / "model.safetensors").exists()
    assert (tmp_path / "power_spectrum.png").stat().st_size > 10_000
    assert np.isfinite(report["mafd"]) and report["mafd"] > 0 and report["floor"]["median"] > 0
    assert len(report["power_spectrum"]["k"]) == len(report["power_spectrum"]["ratio"])


def test_train_refuses_settings_as_its_flags_do(tmp_path, tiny_data):
    for settings, message in [(dict(lr=-1.0), "'lr' is -1.0; it must be a number > 0"),
                              (dict(lr_schedule="linear"), "'lr_schedule' is 'linear'; choose one of cosine, constant, wsd"),
                              (dict(learning_rate=1e-3), "unknown training setting learning_rate")]:
        with pytest.raises(ValueError, match=message):
            cosmodiff.train(tiny_data, results_dir=tmp_path, run_name="never", **settings)
    with pytest.raises(ValueError, match="cosmodiff.train: give data_path"):  # no data made in the repository
        cosmodiff.train(results_dir=tmp_path, run_name="never")
    assert not (tmp_path / "never").exists()


def test_train_py_flags_are_the_settings_cosmodiff_train_documents_and_checks(tmp_path, tiny_data):
    import dataclasses

    from cosmodiff.config import GROUPS
    from cosmodiff.ranges import Number

    train_script = runpy.run_path(str(ROOT / "train.py"))
    flags = {action.dest: action for action in train_script["PARSER"]._actions if action.dest != "help"}
    settings = {item.name: item for item in dataclasses.fields(cosmodiff.TrainConfig)}
    assert set(flags) == set(settings) and len(GROUPS) == 7
    documented = cosmodiff.train.__doc__
    for name, item in settings.items():
        assert flags[name].default == item.default, name
        assert f"    {name} = {item.default!r}" in documented, name
        kind = item.metadata["kind"]
        if isinstance(kind, Number):
            assert flags[name].type is kind and kind.describe() in documented, name
        if item.metadata["choices"]:
            assert list(flags[name].choices) == list(item.metadata["choices"]), name
    # the documented ranges, refused the same way by the flag (named as a flag) and the keyword (as a parameter)
    for name, bad, sentence in [("ema_decay", 1.5, "a number in [0, 1]"), ("warmup_steps", 0, "an integer >= 1"),
                                ("loss_spike", 1.5, "a number >= 2"), ("p_std", 0.0, "a number > 0")]:
        with pytest.raises(ValueError, match=rf"'{name}' is {bad}; it must be {re.escape(sentence)}"):
            cosmodiff.train(tiny_data, results_dir=tmp_path, run_name="never", **{name: bad})
        result = run_in_process([sys.executable, ROOT / "train.py", f"--{name}", str(bad)])
        assert result.returncode == 2 and f"argument --{name}: must be {sentence}" in result.stderr, result.stderr
    assert not (tmp_path / "never").exists()


def test_sample_gives_the_fields_generate_images_writes(conditional_run, tmp_path):
    run_dir = conditional_run / "results" / "run"
    result = run_in_process([sys.executable, ROOT / "UNet-DDPM" / "generate_images.py", "--checkpoint", run_dir,
                             "--num_samples", "3", "--steps", "3", "--params", "Omega_m=0.3,sigma_8=0.8", "--guidance",
                             "1.5", "--seed", "7", "--out", tmp_path / "script"])
    assert result.returncode == 0, result.stderr
    fields = cosmodiff.sample(run_dir, 3, params={"sigma_8": 0.8, "Omega_m": 0.3}, guidance=1.5, steps=3, seed=7,
                              batch_size=2)
    np.testing.assert_allclose(fields, np.load(tmp_path / "script" / "samples.npy"), rtol=1e-5)
    with pytest.raises(ValueError, match="conditioned on Omega_m, sigma_8; give params"):
        cosmodiff.sample(run_dir, 1)


def test_posterior_of_an_array_is_the_posterior_of_its_file(conditional_run):
    run_dir = conditional_run / "results" / "run"
    fieldset = load_fields(conditional_run / "lh.npz")
    options = dict(models={"checkpoint": run_dir}, methods=["elbo", "power_spectrum"], grid=5, n_levels=2, batch_size=32)
    from_file = cosmodiff.posterior(conditional_run / "lh.npz", indices=[0, 1], **options)
    from_array = cosmodiff.posterior(fieldset.fields[:2], truths=fieldset.params[:2, [0, 4]], **options)
    assert [result["indices"] for result in from_file] == [[0], [1]] and len(from_array) == 2  # the fields asked for
    for by_file, by_array in zip(from_file, from_array):
        assert by_file["truth"] == pytest.approx(by_array["truth"])
        for method in ("elbo", "power_spectrum"):
            np.testing.assert_allclose(by_array[method]["posterior"], by_file[method]["posterior"], rtol=1e-6)
            assert 0.99 < np.sum(by_array[method]["posterior"]) < 1.01
            assert np.shape(by_array[method]["posterior"]) == (5, 5)  # the grid asked for
    reseeded = cosmodiff.posterior(fieldset.fields[:1], **dict(options, methods=["elbo"]), seed=1)
    assert not np.allclose(reseeded[0]["elbo"]["posterior"], from_array[0]["elbo"]["posterior"])  # settings reach the ELBO
    quick = dict(models=options["models"], methods=["power_spectrum"], grid=5)
    every = cosmodiff.posterior(conditional_run / "lh.npz", **quick)  # a path without indices: all its fields
    assert [result["indices"] for result in every] == [[i] for i in range(len(fieldset.fields))]
    joint = cosmodiff.posterior(fieldset.fields[:2], joint=True, **quick)
    assert len(joint) == 1 and joint[0]["indices"] == [0, 1]  # one posterior of both fields
    sampled = cosmodiff.posterior(fieldset.fields[:1], mcmc=20, walkers=8, **quick)
    assert np.shape(sampled[0]["power_spectrum"]["samples"])[1] == 2  # emcee's chain, not the grid's posterior
    box = fieldset.box_size
    with pytest.raises(FieldError, match=rf"^fields: its box size is {2 * box:g} Mpc/h but the run was trained on a "
                                         rf"{box:g} Mpc/h box; pass box_size \(--box_size\) if"):
        cosmodiff.posterior(fieldset.fields[:1], box_size=2 * box, **quick)  # the box given is the fields' box
    with pytest.raises(FieldError, match=rf"lh.npz: its box size is {2 * box:g} Mpc/h but the run was trained"):
        cosmodiff.posterior(conditional_run / "lh.npz", indices=[0], box_size=2 * box, **quick)  # a path's too


def test_importing_cosmodiff_and_drawing_keeps_the_backend_the_user_chose(tmp_path):
    import os
    import subprocess

    code = ("import matplotlib, numpy as np, cosmodiff; from cosmodiff import plots; cosmodiff.posterior; "
            f"plots.field_grid(np.ones((2, 16, 16)), r'{tmp_path / 'grid.png'}', columns=2); print(matplotlib.get_backend())")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "MPLBACKEND": "svg"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "svg" and (tmp_path / "grid.png").read_bytes()[:4] == b"\x89PNG"


def test_reading_a_run_folder_loads_no_simulation_code_and_no_flag_parser():
    import subprocess

    code = ("import sys, cosmodiff, cosmodiff.checkpoint; cosmodiff.load; "
            "print(sorted(set(sys.modules) & {'cosmodiff.mock', 'cosmodiff.nbody', 'cosmodiff.cli'}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
