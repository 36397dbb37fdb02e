"""Parameter inference: the ELBO posterior against an analytic one, the power-spectrum baseline, and
evaluate/infer.py end to end."""
import hashlib
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from conftest import ROOT, noise_level, run_in_process
from cosmodiff.diffusion import build_formulation
from cosmodiff.fields import load_fields
from cosmodiff.inference.likelihoods import (PowerSpectrumLikelihood, cubic_interpolation, grid_draws, grid_posterior, mcmc_samples,
                                 negative_elbo, parameter_grid, quadratic_features, sample_histogram, sample_summaries,
                                 summaries)

SIZE = 16
K = np.sqrt(np.add.outer(np.fft.fftfreq(SIZE) ** 2, np.fft.fftfreq(SIZE) ** 2)) * SIZE
SHAPE = torch.from_numpy(0.3 * (1 + K) ** -1.5)  # the power per mode of the fields at amplitude 1


def gaussian_field(amplitude, seed):
    """A periodic Gaussian field whose orthonormal Fourier modes have variance amplitude * SHAPE."""
    white = torch.randn(SIZE, SIZE, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return torch.fft.ifft2(torch.fft.fft2(white) * (amplitude * SHAPE).sqrt()).real


class GaussianOracle(nn.Module):
    """The exact network of Gaussian fields whose power is cond (the amplitude) times SHAPE, under a formulation."""

    def __init__(self, formulation):
        super().__init__()
        self.formulation = formulation

    def forward(self, x, c_noise, cond):
        sigma = noise_level(self.formulation, c_noise)
        c_skip, c_out, c_in, _ = (c.view(-1, 1, 1, 1) for c in self.formulation.precondition(sigma))
        y = x.double() / c_in
        power = cond.double().view(-1, 1, 1, 1) * SHAPE
        denoised = torch.fft.ifft2(torch.fft.fft2(y) * power / (power + sigma.view(-1, 1, 1, 1) ** 2)).real
        return ((denoised - c_skip * y) / c_out).float()


def test_elbo_posterior_matches_the_analytic_posterior_of_gaussian_fields():
    formulation = build_formulation({"formulation": "edm"})
    truth = 1.3
    fields = torch.stack([gaussian_field(truth, seed) for seed in range(2)])[:, None].float()
    amplitudes = np.linspace(0.6, 2.4, 61)
    nll = negative_elbo(formulation, GaussianOracle(formulation), fields, torch.from_numpy(amplitudes)[:, None].float(),
                        n_levels=48, n_draws=4, progress=False).sum(axis=0)
    modes = torch.fft.fft2(fields[:, 0].double(), norm="ortho").abs() ** 2
    exact = np.array([-0.5 * float((modes / (a * SHAPE) + torch.log(a * SHAPE)).sum()) for a in amplitudes])
    elbo = summaries(grid_posterior(-nll, [amplitudes]), [amplitudes], ["A"])["A"]
    analytic = summaries(grid_posterior(exact, [amplitudes]), [amplitudes], ["A"])["A"]
    assert abs(elbo["mean"] - analytic["mean"]) < 0.25 * analytic["std"]
    assert elbo["std"] == pytest.approx(analytic["std"], rel=0.15)
    assert analytic["interval_95"][0] < truth < analytic["interval_95"][1]


def test_elbo_maximum_moves_with_the_amplitude_that_made_the_field():
    formulation = build_formulation({"formulation": "vp", "timesteps": 200})
    amplitudes = np.linspace(0.3, 3.0, 28)
    best = []
    for truth in (0.6, 2.0):
        field = gaussian_field(truth, 7)[None, None].float()
        nll = negative_elbo(formulation, GaussianOracle(formulation), field, torch.from_numpy(amplitudes)[:, None].float(),
                            n_levels=32, n_draws=2, progress=False)[0]
        best.append(amplitudes[nll.argmin()])
    assert best[0] == pytest.approx(0.6, rel=0.35) and best[1] == pytest.approx(2.0, rel=0.35)


def test_the_elbo_is_the_same_whatever_the_network_batch():
    # a batch mixes levels, draws and parameters: how they are cut into batches must not change the noise
    formulation = build_formulation({"formulation": "vp", "timesteps": 200})
    fields = torch.stack([gaussian_field(1.0, seed) for seed in range(2)])[:, None].float()
    amplitudes = torch.linspace(0.5, 2.0, 7)[:, None]
    runs = [negative_elbo(formulation, GaussianOracle(formulation), fields, amplitudes, n_levels=5, n_draws=3,
                          batch_size=size, progress=False, per_level=True) for size in (1, 5, 64, 1000)]
    assert runs[0].shape == (2, 5, 7)
    for other in runs[1:]:
        np.testing.assert_allclose(other, runs[0], rtol=1e-12)
    one_draw = negative_elbo(formulation, GaussianOracle(formulation), fields, amplitudes, n_levels=5, n_draws=1,
                             progress=False, per_level=True)
    assert not np.allclose(one_draw, runs[0])


def test_elbo_levels_are_the_midpoints_of_equal_cells_in_ln_sigma_highest_first():
    from cosmodiff.inference.likelihoods import elbo_levels

    formulation = build_formulation(dict(formulation="edm"))  # no timesteps to snap to: sigma in [0.002, 80]
    levels, weights = elbo_levels(formulation, 4)
    step = (np.log(80.0) - np.log(0.002)) / 4
    np.testing.assert_allclose(np.log(levels.numpy()), np.log(0.002) + step * np.array([3.5, 2.5, 1.5, 0.5]))
    np.testing.assert_allclose(weights, [step] * 4)


def test_grid_summaries_of_a_known_gaussian_posterior():
    axes, points = parameter_grid([0.0, -1.0], [1.0, 1.0], 201)
    assert points.shape == (201 * 201, 2) and points[1].tolist() == [0.0, -0.99]
    log_like = -0.5 * ((points[:, 0] - 0.5) / 0.1) ** 2 - 0.5 * (points[:, 1] / 0.2) ** 2
    result = summaries(grid_posterior(log_like, axes), axes, ["a", "b"], truth=[0.5, 0.0])
    assert result["a"]["mean"] == pytest.approx(0.5, abs=1e-3) and result["a"]["std"] == pytest.approx(0.1, rel=0.01)
    assert result["b"]["interval_68"] == pytest.approx([-0.2, 0.2], abs=0.01)
    assert result["b"]["interval_95"] == pytest.approx([-1.96 * 0.2, 1.96 * 0.2], abs=0.01)
    assert result["a"]["truth"] == 0.5 and result["a"]["truth_rank"] == pytest.approx(0.5, abs=0.01)


def test_grid_summaries_of_a_posterior_on_few_cells_are_symmetric_and_rank_truths_beyond_the_grid_at_0_and_1():
    axes, _ = parameter_grid([0.0, 0.0], [3.0, 1.0], 4)
    posterior = np.outer([0.1, 0.4, 0.4, 0.1], [0.25] * 4)  # symmetric about 1.5 in the first parameter
    for truth, rank in (([1.5, 0.5], 0.5), ([-1.0, 0.5], 0.0), ([4.0, 0.5], 1.0)):
        result = summaries(posterior, axes, ["a", "b"], truth=truth)["a"]
        assert result["mean"] == pytest.approx(1.5) and result["truth_rank"] == pytest.approx(rank)
        low, high = result["interval_68"]
        assert low + high == pytest.approx(2 * 1.5) and low < 1.5 < high  # a symmetric marginal's interval
    np.testing.assert_allclose(result["marginal"], [0.1, 0.4, 0.4, 0.1])  # the marginal on its axis, to plot
    np.testing.assert_allclose(result["axis"], [0.0, 1.0, 2.0, 3.0])


def test_mcmc_resolves_a_posterior_narrower_than_the_grid_cells():
    def log_like(points):
        return -0.5 * ((points[:, 0] - 0.503) / 0.004) ** 2 - 0.5 * ((points[:, 1] + 0.2) / 0.3) ** 2
    axes, points = parameter_grid([0.0, -1.0], [1.0, 1.0], 11)  # cells 0.1 wide: 25 sigma of the first parameter
    start = grid_draws(grid_posterior(log_like(points), axes), axes, 16)
    assert np.all(np.abs(start[:, 0] - 0.5) <= 0.05)
    samples, acceptance = mcmc_samples(log_like, [0.0, -1.0], [1.0, 1.0], start, steps=1500, progress=False)
    assert samples.shape == (16 * 1000, 2) and 0.2 < acceptance < 0.9
    result = sample_summaries(samples, axes, ["a", "b"], truth=[0.503, 1.0])
    assert result["a"]["mean"] == pytest.approx(0.503, abs=0.001) and result["a"]["std"] == pytest.approx(0.004, rel=0.15)
    assert result["b"]["interval_68"] == pytest.approx([-0.5, 0.1], abs=0.06)
    assert result["a"]["truth_rank"] == pytest.approx(0.5, abs=0.1) and result["b"]["truth_rank"] > 0.99
    assert sample_histogram(samples, axes).shape == (11, 11) and sample_histogram(samples, axes)[5].sum() > 0.99


def test_cubic_interpolation_resolves_a_posterior_narrower_than_the_grid_cells_through_every_grid_point():
    covariance = np.array([[0.01 ** 2, 0.6 * 0.01 * 0.015], [0.6 * 0.01 * 0.015, 0.015 ** 2]])
    centre = np.array([0.3317, 0.7843])  # between grid points

    def log_like(points):
        offset = points - centre
        return -0.5 * np.einsum("mi,ij,mj->m", offset, np.linalg.inv(covariance), offset)
    axes, points = parameter_grid([0.1, 0.6], [0.5, 1.0], 11)  # cells 0.04 wide: four sigma of the first parameter
    coarse = summaries(grid_posterior(log_like(points), axes), axes, ["a", "b"])
    fine_axes, fitted = cubic_interpolation(log_like(points), axes, 81)
    fine = summaries(grid_posterior(fitted, fine_axes), fine_axes, ["a", "b"])
    assert len(fine_axes[0]) == 81 and fitted.shape == (81 * 81,)
    np.testing.assert_allclose(fitted, log_like(parameter_grid([0.1, 0.6], [0.5, 1.0], 81)[1]), atol=1e-8)  # exact
    for name, dim in (("a", 0), ("b", 1)):
        sigma = np.sqrt(covariance[dim, dim])
        assert fine[name]["mean"] == pytest.approx(centre[dim], abs=0.02 * sigma)
        assert fine[name]["std"] == pytest.approx(sigma, rel=0.02)
    assert abs(coarse["a"]["std"] - 0.01) > 0.1 * 0.01  # the coarse grid alone does not resolve it
    wavy = np.cos(8 * points[:, 0]) + points[:, 1] - 100  # not quadratic: still read through every grid point
    assert cubic_interpolation(wavy, axes, 21)[1].reshape(21, 21)[::2, ::2].ravel() == pytest.approx(wavy, abs=1e-9)


def test_cubic_interpolation_is_the_not_a_knot_cubic_spline_along_each_parameter():
    from scipy.interpolate import CubicSpline

    axes, _ = parameter_grid([0.1, 0.6], [0.5, 1.0], 7)
    values = np.random.default_rng(0).normal(size=(7, 7))
    fine_axes, fitted = cubic_interpolation(values.ravel(), axes, 25)
    along_first = CubicSpline(axes[0], values, axis=0, bc_type="not-a-knot")(fine_axes[0])
    expected = CubicSpline(axes[1], along_first, axis=1, bc_type="not-a-knot")(fine_axes[1])
    np.testing.assert_allclose(fitted.reshape(25, 25), expected, atol=1e-10)


def test_power_spectrum_baseline_recovers_the_amplitude_of_gaussian_fields():
    rng = np.random.default_rng(0)
    amplitudes = rng.uniform(0.5, 2.5, 300)
    train = np.stack([1 + 0.1 * gaussian_field(a, 100 + i).numpy() for i, a in enumerate(amplitudes)])
    likelihood = PowerSpectrumLikelihood(train, amplitudes[:, None], box_size=100.0)
    assert quadratic_features(np.array([[2.0]])).tolist() == [[1.0, 2.0, 4.0]]
    axes, points = parameter_grid([0.5], [2.5], 81)
    test = np.stack([1 + 0.1 * gaussian_field(1.5, 1000 + i).numpy() for i in range(8)])
    posterior = grid_posterior(likelihood.log_likelihood(test, points).sum(axis=0), axes)
    result = summaries(posterior, axes, ["A"])["A"]
    assert result["interval_95"][0] < 1.5 < result["interval_95"][1] and result["std"] < 0.3


def test_infer_writes_both_posteriors_per_field_and_jointly(conditional_run, tmp_path):
    run, data = conditional_run / "results" / "run", conditional_run / "lh.npz"

    def infer(*args):
        return run_in_process([sys.executable, str(ROOT / "evaluate" / "infer.py"), str(data), "--checkpoint", str(run),
                               "--grid", "5", "--n_levels", "2", *map(str, args)])
    result = infer("--indices", "0,30", "--out", tmp_path / "each")
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "each" / "posterior.json").read_text())
    assert record["settings"]["weights"] == {"checkpoint": hashlib.sha256((run / "model.safetensors").read_bytes()).hexdigest()}
    fields = load_fields(data)
    assert [r["indices"] for r in record["results"]] == [[0], [30]]
    for r, index in zip(record["results"], (0, 30)):
        assert r["truth"] == pytest.approx([fields.params[index, 0], fields.params[index, 4]])
        for method in ("elbo", "power_spectrum"):
            summary = r[method]["Omega_m"]
            low, high = record["settings"]["prior"]["Omega_m"]
            assert low <= summary["interval_95"][0] <= summary["interval_68"][0] <= summary["mean"] <= summary["interval_68"][1] <= summary["interval_95"][1] <= high
            assert np.asarray(r[method]["posterior"]).shape == (5, 5)
    assert (tmp_path / "each" / "posterior.png").exists()
    levels = np.load(tmp_path / "each" / "elbo_levels.npz")  # the ELBO per noise level, for reweighting
    assert levels["log_likelihood"].shape == (2, 2, 25) and levels["sigmas"][0] > levels["sigmas"][1]
    for r, log_like in zip(record["results"], levels["log_likelihood"]):
        assert grid_posterior(log_like.sum(axis=0), [np.zeros(5)] * 2) == pytest.approx(np.asarray(r["elbo"]["posterior"]))
    result = infer("--indices", "0,1", "--joint", "--mcmc", "6", "--walkers", "8", "--out", tmp_path / "joint")
    assert result.returncode == 0, result.stderr
    joint = json.loads((tmp_path / "joint" / "posterior.json").read_text())["results"]
    assert [r["indices"] for r in joint] == [[0, 1]]
    for method in ("elbo", "power_spectrum"):
        samples = np.asarray(joint[0][method]["samples"])
        assert samples.shape == (8 * 4, 2) and np.asarray(joint[0][method]["posterior"]).sum() == pytest.approx(1)
        assert joint[0][method]["Omega_m"]["mean"] == pytest.approx(samples[:, 0].mean())
    result = infer("--indices", "0", "--fine", "17", "--out", tmp_path / "fine")  # read by cubic interpolation
    assert result.returncode == 0, result.stderr
    fine = json.loads((tmp_path / "fine" / "posterior.json").read_text())["results"][0]
    for method in ("elbo", "power_spectrum"):
        assert np.asarray(fine[method]["posterior"]).shape == (17, 17) and len(fine[method]["axes"][0]) == 17
        assert fine[method]["axes"][0][0] == record["results"][0]["axes"][0][0]
    result = infer("--indices", "0", "--grid", "3", "--fine", "17", "--out", tmp_path / "too-coarse")
    assert result.returncode != 0 and "needs --grid 4 or more" in result.stderr
    assert not (tmp_path / "too-coarse").exists()
    result = infer("--indices", "99999", "--out", tmp_path / "never")
    assert result.returncode == 2 and "index 99999 does not exist" in result.stderr and not (tmp_path / "never").exists()


def test_the_inference_benchmark_makes_a_cached_posterior_again_once_its_model_is_retrained(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("inference_benchmark", ROOT / "benchmarks" / "inference.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    args = benchmark.build_parser().parse_args(["--out", str(tmp_path), "--grid", "5"])
    weights = tmp_path / "npe" / "model.safetensors"
    weights.parent.mkdir()
    weights.write_bytes(b"weights of the first training")
    commands = []

    def infer(command):  # what evaluate/infer.py records: the settings and the digest of the weights it read
        commands.append(command)
        out = Path(command[command.index("--out") + 1])
        out.mkdir(parents=True, exist_ok=True)
        settings = dict(grid=5, weights=dict(npe=hashlib.sha256(weights.read_bytes()).hexdigest()))
        (out / "posterior.json").write_text(json.dumps(dict(settings=settings, results=[{}])))
    monkeypatch.setattr(benchmark, "run", infer)
    for _ in range(2):
        benchmark.posteriors(args, "npe", "test", 1)
    assert len(commands) == 1  # the second call reads the file the first one made
    weights.write_bytes(b"weights of a second training")
    benchmark.posteriors(args, "npe", "test", 1)
    assert len(commands) == 2
    args.grid = 7
    benchmark.posteriors(args, "npe", "test", 1)
    assert len(commands) == 3


def test_the_inference_benchmark_compares_widths_with_another_results_files_p_k_rows_of_the_same_split(tmp_path):
    spec = importlib.util.spec_from_file_location("inference_benchmark", ROOT / "benchmarks" / "inference.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    reference = tmp_path / "reference.json"
    pk_row = dict(method="P(k) Gaussian likelihood", parameter="Omega_m", width_68=0.2)
    reference.write_text(json.dumps(dict(settings=dict(split="inference"), rows=[pk_row])))
    own = [dict(method="diffusion ELBO", parameter="Omega_m", width_68=0.1)]
    args = benchmark.build_parser().parse_args(["--methods", "elbo", "--reference_results", str(reference)])
    assert benchmark.reference_rows(args, own) == [pk_row]
    args = benchmark.build_parser().parse_args(["--methods", "elbo,power_spectrum", "--reference_results", str(reference)])
    assert benchmark.reference_rows(args, own) == own  # its own P(k) rows, where it has them
    args = benchmark.build_parser().parse_args(["--split", "inference-nonlinear", "--methods", "elbo",
                                                "--reference_results", str(reference)])
    with pytest.raises(SystemExit, match="judged the inference split, not inference-nonlinear"):
        benchmark.reference_rows(args, own)


def test_the_grid_check_reads_a_coarse_grid_off_a_refined_one_that_contains_it_as_it_would_compute_it(conditional_run,
                                                                                                         tmp_path):
    def grid_check(refined_grid, *saved):
        out = tmp_path / f"refined-{refined_grid}{'-saved' if saved else ''}"
        result = run_in_process([sys.executable, ROOT / "benchmarks" / "elbo_variance.py", "--run",
                                 conditional_run / "results" / "run", "--fields", conditional_run / "lh.npz", "--n_fields", "1",
                                 "--settings", "2:2", "--grid", "4", "--refined_grid", str(refined_grid), "--fine", "9",
                                 "--studies", "grid", "--out", out, *saved])
        assert result.returncode == 0, result.stderr
        return np.load(out / "grid_check.npz"), json.loads((out / "elbo_variance.json").read_text())["grid_check"]

    contained, report = grid_check(7)  # 4 points per parameter are every other one of 7: read off
    computed, _ = grid_check(6)  # 4 points are not among 6: computed
    assert list(contained["names"]) == ["Omega_m", "sigma_8"]
    assert contained["coarse_axes"].shape == (2, 4) and contained["refined_axes"].shape == (2, 7)
    assert contained["coarse_log_likelihood"].shape == (1, 16) and contained["refined_log_likelihood"].shape == (1, 49)
    np.testing.assert_allclose(contained["coarse_axes"], computed["coarse_axes"])
    np.testing.assert_allclose(contained["coarse_log_likelihood"], computed["coarse_log_likelihood"], rtol=1e-5)
    assert np.isfinite(contained["refined_log_likelihood"]).all()
    assert report["refined_grid"] == 7 and set(report["cubic_interpolation"]) == {"Omega_m", "sigma_8"}
    # the saved refined grid is read again, not recomputed: the same report
    _, reread = grid_check(7, "--saved_grids", tmp_path / "refined-7" / "grid_check.npz")
    assert reread == report
    missing = run_in_process([sys.executable, ROOT / "benchmarks" / "elbo_variance.py", "--run",
                              conditional_run / "results" / "run", "--fields", conditional_run / "lh.npz",
                              "--indices", "99999", "--studies", "grid", "--out", tmp_path / "missing"])
    assert missing.returncode == 2 and "index 99999 does not exist" in missing.stderr
    assert not (tmp_path / "missing").exists()


def test_fisher_forecast_is_the_analytic_one_and_unbiased_with_hartlap():
    from cosmodiff.inference.likelihoods import fisher_forecast

    # one parameter, diagonal covariance: F = (n - K - 2) / (n - 1) * sum_k d_k^2 / c_k
    d, c = np.array([1.0, 2.0, -0.5, 3.0]), np.array([0.5, 1.0, 2.0, 4.0])
    fisher, sigma = fisher_forecast(d, np.diag(c), n_realisations=27)
    exact = np.sum(d ** 2 / c)
    assert fisher[0, 0] == pytest.approx((27 - 4 - 2) / 26 * exact) and sigma[0] == pytest.approx(1 / np.sqrt(fisher[0, 0]))
    # two degenerate-ish parameters: the marginal sigma is sqrt of the inverse's diagonal, larger than 1/sqrt(F_ii)
    two = np.array([d, d + np.array([0.1, -0.1, 0.2, 0.0])])
    fisher, sigma = fisher_forecast(two, np.diag(c), n_realisations=10 ** 9)
    np.testing.assert_allclose(fisher, two @ np.diag(1 / c) @ two.T, rtol=1e-6)
    assert sigma[0] > 3 / np.sqrt(fisher[0, 0])
    # the precision of a sample covariance of n Gaussian draws, scaled by Hartlap's factor, is unbiased
    rng = np.random.default_rng(0)
    n = 12
    estimates = [fisher_forecast(d, np.cov(rng.normal(size=(n, 4)) * np.sqrt(c), rowvar=False), n)[0][0, 0]
                 for _ in range(4000)]
    assert np.mean(estimates) == pytest.approx(exact, rel=0.03)
    with pytest.raises(ValueError, match="at least 7 realisations, got 6"):
        fisher_forecast(d, np.diag(c), n_realisations=6)
    fisher_forecast(d, np.diag(c), n_realisations=7)


def test_pooled_covariance_ignores_the_groups_means():
    from cosmodiff.inference.likelihoods import pooled_covariance

    rng = np.random.default_rng(1)
    covariance = np.array([[1.0, 0.6], [0.6, 2.0]])
    groups = [rng.multivariate_normal(mean, covariance, size=4000) for mean in ([0, 0], [30, -30], [-5, 50])]
    np.testing.assert_allclose(pooled_covariance(groups), covariance, atol=0.08)
    # two draws per group: the one degree of freedom each group keeps is its difference
    pair = [np.array([[0.0], [2.0]]), np.array([[10.0], [14.0]])]
    assert pooled_covariance(pair)[0, 0] == pytest.approx((1 + 1 + 4 + 4) / 2)
