"""Calibration: the coverage diagnostics on posteriors whose calibration is known, the post-hoc correction
against the miscalibration it was built for, and NPE (evaluate/train_npe.py, infer.py --method npe)
recovering the amplitude of Gaussian fields."""
import json
import sys

import numpy as np
import pytest

from conftest import ROOT, run_in_process
from cosmodiff.coverage import Correction, expected_coverage, sbc, tarp
from cosmodiff.fields import FieldSet, save_fields
from cosmodiff.inference import grid_draws, grid_posterior, parameter_grid
from cosmodiff.npe import load_npe, log_density
from test_inference import SIZE, gaussian_field


def conjugate_posteriors(count, draws, width_factor=1.0, bias=0.0, seed=0):
    """Truths theta ~ N(0, 1) in 2D, data x = theta + N(0, 0.5^2); the exact posterior is
    N(0.8 x, 0.2). Samples (draws, count, 2) of that posterior, widened by width_factor and moved by bias."""
    rng = np.random.default_rng(seed)
    truths = rng.normal(size=(count, 2))
    x = truths + 0.5 * rng.normal(size=truths.shape)
    samples = 0.8 * x + bias + width_factor * np.sqrt(0.2) * rng.normal(size=(draws, count, 2))
    return samples, truths


def test_sbc_and_tarp_pass_a_calibrated_posterior_and_catch_an_overconfident_one():
    samples, truths = conjugate_posteriors(300, 400)
    ranks, ks_p = sbc(samples, truths)
    assert ranks.shape == (300, 2) and ranks.min() >= 0 and ranks.max() <= 400
    assert (ks_p > 0.01).all()
    coverage, low, high = expected_coverage(ranks, 400, [0.68, 0.95])
    assert np.abs(coverage - [0.68, 0.95]).max() < 0.08 and (low <= coverage).all() and (coverage <= high).all()
    _, _, atc, tarp_p = tarp(samples, truths)
    assert tarp_p > 0.05 and abs(atc) < 0.05

    narrow, truths = conjugate_posteriors(300, 400, width_factor=0.5)
    ranks, ks_p = sbc(narrow, truths)
    coverage, _, _ = expected_coverage(ranks, 400, [0.68])
    assert (ks_p < 1e-3).all()
    assert coverage[:, 0] == pytest.approx(0.38, abs=0.08)  # P(|z| < 0.5): half-width intervals
    _, _, atc, _ = tarp(narrow, truths)
    assert atc < -0.05


def grid_log_likelihoods(truths, axes, points, scale, bias):
    """Gaussian log-likelihood grids centred on noisy truths: N(truth + bias + scale * noise, scale^2 / 4),
    half as wide as the spread of their centres (overconfident by 2) and moved by bias."""
    rng = np.random.default_rng(1)
    centres = truths + bias + scale * rng.normal(size=truths.shape)
    return [-0.5 * (((points - c) / (scale / 2)) ** 2).sum(axis=1).reshape(len(axes[0]), len(axes[1])) for c in centres]


def test_correction_fitted_on_calibration_fields_calibrates_the_test_fields():
    axes, points = parameter_grid([0.0, 0.0], [1.0, 1.0], 61)
    rng = np.random.default_rng(0)
    calibration, test = rng.uniform(0.3, 0.7, (150, 2)), rng.uniform(0.3, 0.7, (150, 2))
    bias, scale = np.array([0.04, -0.03]), 0.03
    correction = Correction.fit(grid_log_likelihoods(calibration, axes, points, scale, bias), axes, calibration)
    assert correction.shift == pytest.approx(bias, abs=0.01)
    assert correction.temperature == pytest.approx(4.0, rel=0.3)  # (1 / (1/2))^2: the width doubles

    def ranks_of(posteriors):
        samples = np.stack([grid_draws(p, axes, 400, seed=i) for i, p in enumerate(posteriors)], axis=1)
        return sbc(samples, test)[0]
    raw = grid_log_likelihoods(test, axes, points, scale, bias)
    before, _, _ = expected_coverage(ranks_of([grid_posterior(log_like, axes) for log_like in raw]), 400, [0.68])
    after, _, _ = expected_coverage(ranks_of([correction(p, axes) for p in raw]), 400, [0.68])
    assert (before[:, 0] < 0.45).all() and np.abs(after[:, 0] - 0.68).max() < 0.1


def amplitude_set(amplitudes, first_seed):
    fields = np.stack([1 + 0.1 * gaussian_field(a, first_seed + i).numpy() for i, a in enumerate(amplitudes)])
    return FieldSet(fields=fields.astype(np.float32), box_size=100.0, params=np.asarray(amplitudes)[:, None],
                    param_names=["A"], sources=[f"gaussian {i}" for i in range(len(fields))],
                    sim_index=np.arange(len(fields)))


@pytest.mark.filterwarnings("ignore:In one-dimensional output space")  # sbi: a 1D flow is Gaussian, as wanted here
def test_npe_recovers_the_amplitude_of_gaussian_fields(tmp_path):
    rng = np.random.default_rng(0)
    save_fields(tmp_path / "train.npz", amplitude_set(rng.uniform(0.5, 2.5, 800), 100))
    save_fields(tmp_path / "test.npz", amplitude_set([1.0] * 6 + [2.0] * 6, 5000))
    result = run_in_process([sys.executable, str(ROOT / "evaluate" / "train_npe.py"), "--data_path",
                             str(tmp_path / "train.npz"), "--condition", "A", "--image_size", str(SIZE),
                             "--max_epochs", "20", "--lr", "2e-3", "--out", str(tmp_path / "npe")])
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in (tmp_path / "npe").iterdir()) == ["config.json", "logs", "model.safetensors"]
    posterior, config = load_npe(tmp_path / "npe")
    assert config["names"] == ["A"] and config["low"][0] == pytest.approx(0.5, abs=0.01)
    # a field of the prior's amplitudes: a constant field (amplitude 0) would leave the prior's box to rejection sampling
    field = log_density(amplitude_set([1.5], 7000).fields)[0]
    assert posterior.sample((10,), x=field, show_progress_bars=False).shape == (10, 1)

    result = run_in_process([sys.executable, str(ROOT / "evaluate" / "infer.py"), str(tmp_path / "test.npz"),
                             "--npe", str(tmp_path / "npe"), "--method", "npe,power_spectrum", "--grid", "81",
                             "--out", str(tmp_path / "posterior")])
    assert result.returncode == 0, result.stderr
    results = json.loads((tmp_path / "posterior" / "posterior.json").read_text())["results"]
    for method in ("npe", "power_spectrum"):
        summaries = [r[method]["A"] for r in results]
        for truth in (1.0, 2.0):
            chosen = [s for s in summaries if s["truth"] == truth]
            mean = np.mean([s["mean"] for s in chosen])
            spread = np.mean([s["std"] for s in chosen])
            # six fields' averaged estimate lies within 3 of its standard errors; the posterior is informative
            assert abs(mean - truth) < 3 * spread / np.sqrt(len(chosen)) + 0.02 and spread < 0.25 * truth, (method, truth)


def test_infer_needs_the_run_each_method_uses(tmp_path):
    result = run_in_process([sys.executable, str(ROOT / "evaluate" / "infer.py"), "fields.npz", "--method", "npe",
                             "--out", str(tmp_path / "never")])
    assert result.returncode == 2 and "--method npe needs --npe" in result.stderr
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "config.json").write_text("{}")
    result = run_in_process([sys.executable, str(ROOT / "evaluate" / "infer.py"), "fields.npz", "--method", "npe",
                             "--npe", str(tmp_path / "fake"), "--out", str(tmp_path / "never")])
    assert result.returncode == 2 and "not an NPE folder" in result.stderr and not (tmp_path / "never").exists()
