"""Calibration: the coverage diagnostics on posteriors whose calibration is known, the post-hoc
corrections against the miscalibrations they are built for, the figure of merit on an analytic case,
and NPE on the field and on its P(k) (evaluate/train_npe.py, infer.py) recovering the amplitude of
Gaussian fields."""
import json
import sys

import numpy as np
import pytest
from scipy import stats

from conftest import ROOT, run_in_process
from cosmodiff.inference.coverage import (AffineCorrection, Correction, QuantileCorrection, cell_rank,
                                         expected_coverage, log_density_at, sbc, tarp)
from cosmodiff.fields import FieldSet, save_fields
from cosmodiff.inference.likelihoods import (figure_of_merit, grid_draws, grid_moments, grid_posterior, log_power_spectra,
                                 parameter_grid)
from cosmodiff.inference.npe import load_npe, log_density
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
    ecp, alpha, atc, tarp_p = tarp(samples, truths)
    assert tarp_p > 0.05 and abs(atc) < 0.05
    assert len(ecp) == len(alpha) == 300 // 10 + 1  # about ten fields a bin
    assert len(tarp(samples[:, :15], truths[:15])[1]) == 2 + 1  # never fewer than 2 bins

    narrow, truths = conjugate_posteriors(300, 400, width_factor=0.5)
    ranks, ks_p = sbc(narrow, truths)
    coverage, _, _ = expected_coverage(ranks, 400, [0.68])
    assert (ks_p < 1e-3).all()
    assert coverage[:, 0] == pytest.approx(0.38, abs=0.08)  # P(|z| < 0.5): half-width intervals
    _, _, atc, _ = tarp(narrow, truths)
    assert atc < -0.05


def test_expected_coverage_counts_truths_in_the_closed_equal_tailed_interval_and_bootstraps_over_fields():
    ranks = np.tile(np.arange(100), 2)[:, None].repeat(2, axis=1)  # uniform ranks out of 100 draws, 2 parameters
    coverage, low, high = expected_coverage(ranks, 100, [0.5, 0.9], n_bootstrap=4000)
    assert coverage.shape == low.shape == high.shape == (2, 2)
    # rank r lies in the 50% interval when 25 <= r <= 75 (51 of 100), in the 90% one when 5 <= r <= 95
    np.testing.assert_allclose(coverage, [[0.51, 0.91], [0.51, 0.91]])
    binomial = np.sqrt(coverage * (1 - coverage) / len(ranks))  # the 16th-84th percentiles: one sigma
    np.testing.assert_allclose(low, coverage - binomial, atol=0.2 * binomial.max())
    np.testing.assert_allclose(high, coverage + binomial, atol=0.2 * binomial.max())
    again = expected_coverage(ranks, 100, [0.5, 0.9], n_bootstrap=4000)
    np.testing.assert_array_equal(again[1], low)  # seeded: the same band every call
    # two fields, one inside and one outside: resampled fractions 0, 1/2, 1 with chances 1/4, 1/2, 1/4
    coverage, low, high = expected_coverage(np.array([[50], [0]]), 100, [0.5])
    assert coverage[0, 0] == 0.5 and low[0, 0] == 0.0 and high[0, 0] == 1.0


def test_log_density_at_the_truth_is_normalised_linear_between_nodes_and_the_edge_value_beyond():
    axes, points = parameter_grid([0.2, 0.1], [0.8, 0.7], 41)  # cells of 0.015, away from zero
    sigma, centre = 0.06, np.array([0.5, 0.4])

    def exact(theta):  # ln N(centre, sigma^2) in 2D
        return -np.log(2 * np.pi * sigma ** 2) - 0.5 * np.sum((np.asarray(theta) - centre) ** 2) / sigma ** 2
    log_likelihood = np.array([exact(point) for point in points]).reshape(41, 41)
    node = [axes[0][24], axes[1][20]]
    between = [0.5 * (axes[0][24] + axes[0][25]), axes[1][20]]
    for constant in (0.0, 1000.0, -1000.0):  # the likelihood's constant is irrelevant, however large
        assert log_density_at(log_likelihood + constant, axes, node) == pytest.approx(exact(node), abs=1e-4)
        linear = 0.5 * (exact(node) + exact([axes[0][25], axes[1][20]]))  # not the Gaussian's own value between
        assert log_density_at(log_likelihood + constant, axes, between) == pytest.approx(linear, abs=1e-4)
    beyond = log_density_at(log_likelihood, axes, [0.95, axes[1][20]])
    assert beyond == pytest.approx(exact([0.8, axes[1][20]]), abs=1e-4)


def test_the_correction_moves_a_grid_by_its_shift_in_parameter_units_linearly_in_the_log():
    axes, points = parameter_grid([0.1, 0.6], [0.5, 1.0], 41)  # cells of 0.01, away from zero
    log_likelihood = (-0.5 * ((points - [0.3, 0.8]) / 0.03) ** 2).sum(axis=1).reshape(41, 41)
    moved = Correction.shifted(log_likelihood, axes, [0.02, -0.01])  # the grid moves by -shift
    expected = (-0.5 * ((points - [0.28, 0.81]) / 0.03) ** 2).sum(axis=1).reshape(41, 41)
    np.testing.assert_allclose(moved[3:-3, 3:-3], expected[3:-3, 3:-3], atol=1e-8)
    half = Correction.shifted(log_likelihood, axes, [0.005, 0.0])  # half a cell: the neighbours' mean
    np.testing.assert_allclose(half[:-1], 0.5 * (log_likelihood[:-1] + log_likelihood[1:]), atol=1e-8)


def test_the_affine_maps_moments_are_its_documented_formula():
    correction = AffineCorrection(shift=[0.1, -0.2], slope=[[1.0, 0.0], [0.5, 0.0]], centre=[0.3, 0.8],
                                  scale=[2.0, 0.5], floor=[[0.1, 0.0], [0.2, 0.3]])
    mean, covariance = np.array([0.4, 0.7]), np.array([[0.04, 0.01], [0.01, 0.09]])
    new_mean, new_covariance = correction.moments(mean, covariance)
    # m + shift + slope (m - centre) and D S D + F F^T, D = diag(scale)
    np.testing.assert_allclose(new_mean, [0.4 + 0.1 + 0.1, 0.7 - 0.2 + 0.05])
    np.testing.assert_allclose(new_covariance, [[0.16 + 0.01, 0.01 + 0.02], [0.01 + 0.02, 0.0225 + 0.13]])


def test_the_affine_correction_widens_one_parameters_overconfident_posteriors_to_the_truths_spread():
    axes, points = parameter_grid([0.0], [1.0], 201)
    rng = np.random.default_rng(0)
    truths = rng.uniform(0.3, 0.7, size=(400, 1))
    centres = truths + 0.04 * rng.normal(size=truths.shape)  # the truths scatter by 0.04 about the means
    log_likelihoods = [-0.5 * ((points[:, 0] - c) / 0.02) ** 2 for c in centres[:, 0]]  # claimed width 0.02
    correction = AffineCorrection.fit(log_likelihoods, axes, truths)
    _, covariance = grid_moments(correction(log_likelihoods[0], axes), axes)
    assert np.sqrt(covariance[0, 0]) == pytest.approx(0.04, rel=0.1)


def test_the_affine_correction_reads_the_raw_posterior_linearly_between_nodes_and_takes_it_flat():
    axes, points = parameter_grid([0.1, 0.2], [0.9, 1.0], 41)
    log_likelihood = (-0.5 * ((points - [0.5, 0.6]) / 0.08) ** 2).sum(axis=1)  # flat, as the ELBO grid gives it
    cell = axes[0][1] - axes[0][0]
    moved = AffineCorrection(shift=[cell / 2, 0.0], slope=np.zeros((2, 2)), centre=[0.5, 0.6], scale=[1.0, 1.0],
                             floor=np.zeros((2, 2)))(log_likelihood, axes)
    grid = log_likelihood.reshape(41, 41)
    expected = grid_posterior(np.vstack([grid[:1], 0.5 * (grid[:-1] + grid[1:])]), axes)  # half a cell up
    np.testing.assert_allclose(moved, expected, rtol=1e-6)


def test_a_correction_rebuilt_from_its_dict_corrects_as_the_fitted_one():
    axes, points = parameter_grid([0.0, 0.0], [1.0, 1.0], 81)
    truths, _, log_likelihoods = heteroscedastic_log_likelihoods(60, points, [0.02, 0.0], 0.01, seed=3)
    for kind in (Correction, AffineCorrection):  # QuantileCorrection's: the quantile map's test
        fitted = kind.fit(log_likelihoods, axes, truths)
        rebuilt = kind(**json.loads(json.dumps(fitted.to_dict())))  # as a results file records it
        np.testing.assert_allclose(rebuilt(log_likelihoods[0], axes), fitted(log_likelihoods[0], axes))


def test_the_temperature_narrows_underconfident_posteriors():
    axes, points = parameter_grid([0.0, 0.0], [1.0, 1.0], 61)
    truths = np.random.default_rng(2).uniform(0.3, 0.7, (150, 2))
    rng = np.random.default_rng(3)
    centres = truths + 0.02 * rng.normal(size=truths.shape)  # the truths scatter by 0.02 ...
    log_likelihoods = [-0.5 * (((points - c) / 0.04) ** 2).sum(axis=1).reshape(61, 61) for c in centres]  # ... claimed 0.04
    assert Correction.fit(log_likelihoods, axes, truths).temperature == pytest.approx(0.25, rel=0.3)


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


def heteroscedastic_log_likelihoods(count, points, bias, floor, seed, narrowest=0.005):
    """Truths drawn from the grid's flat prior and Gaussian log-likelihood grids of widths w from
    narrowest to 0.05 (log-uniform) centred on truth + bias + w z + floor z': each claims only its own
    width w, so the exact posterior's is sqrt(w^2 + floor^2), narrow fields being the most
    overconfident. With no bias and no floor every posterior is exact."""
    rng = np.random.default_rng(seed)
    truths = rng.uniform(0.3, 0.7, (count, 2))
    widths = np.exp(rng.uniform(np.log(narrowest), np.log(0.05), count))
    centres = truths + bias + widths[:, None] * rng.normal(size=(count, 2)) + floor * rng.normal(size=(count, 2))
    return truths, widths, [-0.5 * (((points - c) / w) ** 2).sum(axis=1).reshape(81, 81) for c, w in zip(centres, widths)]


def test_the_affine_correction_calibrates_narrow_and_wide_posteriors_and_keeps_their_sharpness():
    axes, points = parameter_grid([0.3, 0.3], [0.7, 0.7], 81)
    bias, floor = np.array([0.03, -0.02]), 0.02
    calibration_truths, _, calibration = heteroscedastic_log_likelihoods(200, points, bias, floor, seed=0)
    truths, widths, test = heteroscedastic_log_likelihoods(200, points, bias, floor, seed=1)
    affine = AffineCorrection.fit(calibration, axes, calibration_truths)
    tempered = Correction.fit(calibration, axes, calibration_truths)
    assert affine.shift == pytest.approx(-bias, abs=0.006)
    assert np.sqrt(np.diag(affine.floor @ affine.floor.T)) == pytest.approx([floor, floor], abs=0.004)

    order = np.argsort(widths)
    narrow, wide = order[:70], order[-70:]

    def coverage_68(posteriors, chosen):
        samples = np.stack([grid_draws(posteriors[i], axes, 400, seed=i) for i in chosen], axis=1)
        return expected_coverage(sbc(samples, truths[chosen])[0], 400, [0.68])[0][:, 0]

    def figure_of_merit_mean(posteriors):  # geometric: the FoM spans orders of magnitude across fields
        return np.exp(np.mean([np.log(figure_of_merit(p, axes)) for p in posteriors]))
    by_affine = [affine(log_like, axes) for log_like in test]
    by_temperature = [tempered(log_like, axes) for log_like in test]
    for chosen in (narrow, wide):
        assert np.abs(coverage_68(by_affine, chosen) - 0.68).max() < 0.1
    # one temperature leaves narrow fields overconfident and wide ones underconfident, and is less sharp
    assert coverage_68(by_temperature, narrow).min() < 0.55 and coverage_68(by_temperature, wide).max() > 0.85
    assert figure_of_merit_mean(by_affine) > 1.2 * figure_of_merit_mean(by_temperature)


def test_both_corrections_leave_exact_posteriors_as_they_are():
    # exact posteriors, resolved by the grid (at least three cells wide): either correction keeps their
    # centres and widths within the noise of 400 calibration fields
    axes, points = parameter_grid([0.3, 0.3], [0.7, 0.7], 81)
    no_bias = np.zeros(2)
    calibration_truths, _, calibration = heteroscedastic_log_likelihoods(400, points, no_bias, 0.0, seed=0, narrowest=0.015)
    _, _, test = heteroscedastic_log_likelihoods(200, points, no_bias, 0.0, seed=1, narrowest=0.015)
    affine = AffineCorrection.fit(calibration, axes, calibration_truths)
    tempered = Correction.fit(calibration, axes, calibration_truths)
    assert np.abs(affine.shift).max() < 0.005 and np.abs(tempered.shift).max() < 0.005
    assert np.abs(affine.slope).max() < 0.05 and tempered.temperature == pytest.approx(1, abs=0.2)

    def moments(posteriors):
        means, covariances = zip(*(grid_moments(p, axes) for p in posteriors))
        return np.array(means), np.sqrt(np.diagonal(np.array(covariances), axis1=1, axis2=2))
    raw = [grid_posterior(log_like, axes) for log_like in test]
    raw_means, raw_sigmas = moments(raw)
    for correct in (affine, tempered):
        means, sigmas = moments([correct(log_like, axes) for log_like in test])
        assert np.median(np.abs(means - raw_means) / raw_sigmas) < 0.15
        assert np.median(np.abs(sigmas / raw_sigmas - 1)) < 0.12


def parameter_dependent_log_likelihoods(count, points, seed):
    """Truths on the flat prior [0.3, 0.7]^2 and Gaussian log-likelihood grids whose centres are pulled
    toward 0.5 by a quarter of the distance and whose claimed widths are half the scatter of the centres:
    an offset that changes sign across the prior (a global shift cannot remove it) on top of
    overconfidence, so the truths' marginal CDF values pile up at 0 and 1."""
    rng = np.random.default_rng(seed)
    truths = rng.uniform(0.3, 0.7, (count, 2))
    scatter = 0.04
    centres = truths - 0.25 * (truths - 0.5) + scatter * rng.normal(size=(count, 2))
    return truths, [-0.5 * (((points - c) / (scatter / 2)) ** 2).sum(axis=1).reshape(101, 101) for c in centres]


def test_the_quantile_correction_makes_the_sbc_ranks_of_new_fields_uniform():
    axes, points = parameter_grid([0.1, 0.1], [0.9, 0.9], 101)
    calibration_truths, calibration = parameter_dependent_log_likelihoods(600, points, seed=10)
    truths, test = parameter_dependent_log_likelihoods(300, points, seed=20)
    quantile = QuantileCorrection.fit(calibration, axes, calibration_truths)
    # z = Phi^-1(u) of posteriors half as wide as the truth's scatter spread about twice as far as N(0, 1)
    assert [z.std() for z in quantile.probits] == pytest.approx([2.2, 2.2], rel=0.15)

    def ks_p_and_coverage(posteriors):
        samples = np.stack([grid_draws(p, axes, 400, seed=i) for i, p in enumerate(posteriors)], axis=1)
        ranks, ks_p = sbc(samples, truths)
        return ks_p, expected_coverage(ranks, 400, [0.68, 0.95])[0]
    raw_p, raw_coverage = ks_p_and_coverage([grid_posterior(log_like, axes) for log_like in test])
    corrected = [quantile(log_like, axes) for log_like in test]
    p, coverage = ks_p_and_coverage(corrected)
    assert (raw_p < 1e-6).all() and (raw_coverage[:, 0] < 0.45).all()
    assert (p > 0.05).all() and np.abs(coverage - [0.68, 0.95]).max() < 0.07, (p, coverage)
    # each corrected marginal CDF is R of the raw one at the cells' edges (the proportional fitting
    # converged in both parameters)
    raw = grid_posterior(test[0], axes)
    for dim, axis in enumerate(axes):
        for value in (axis[40:60:4] + axis[41:61:4]) / 2:
            expected = quantile.recalibrated(cell_rank(raw, axes, dim, value), dim)
            assert cell_rank(corrected[0], axes, dim, value) == pytest.approx(expected, abs=1e-4)


def test_the_quantile_correction_keeps_a_calibrated_posteriors_width_and_its_correlation():
    axes, points = parameter_grid([0.0, 0.0], [1.0, 1.0], 81)
    rng = np.random.default_rng(3)
    covariance = np.array([[0.03 ** 2, 0.8 * 0.03 * 0.02], [0.8 * 0.03 * 0.02, 0.02 ** 2]])
    precision = np.linalg.inv(covariance)
    truths = rng.uniform(0.3, 0.7, (400, 2))
    centres = truths + rng.multivariate_normal(np.zeros(2), covariance, 400)  # exact posteriors: N(centre, C)
    log_likes = [-0.5 * np.einsum("mi,ij,mj->m", points - c, precision, points - c).reshape(81, 81) for c in centres]
    quantile = QuantileCorrection.fit(log_likes, axes, truths)
    # calibrated: z = Phi^-1(u) is N(0, 1), whose kernel estimate of the CDF is R(u) = u
    u = np.linspace(0.05, 0.95, 7)
    for dim in range(2):
        np.testing.assert_allclose(quantile.recalibrated(u, dim), u, atol=0.05)
    _, raw_covariance = grid_moments(grid_posterior(log_likes[0], axes), axes)
    _, corrected_covariance = grid_moments(quantile(log_likes[0], axes), axes)
    assert np.sqrt(np.diag(corrected_covariance)) == pytest.approx(np.sqrt(np.diag(raw_covariance)), rel=0.15)
    correlation = corrected_covariance[0, 1] / np.sqrt(corrected_covariance[0, 0] * corrected_covariance[1, 1])
    assert correlation == pytest.approx(0.8, abs=0.05)
    # a widening map (calibration z twice N(0, 1)'s spread) on the correlated posterior: both corrected
    # marginal CDFs are R of the raw ones at the cells' edges, which one sweep over the parameters misses
    widening = QuantileCorrection([2 * stats.norm.ppf((np.arange(200) + 0.5) / 200)] * 2, [0.05, 0.05])
    raw, corrected = grid_posterior(log_likes[0], axes), widening(log_likes[0], axes)
    for dim, axis in enumerate(axes):
        for value in (axis[30:50:3] + axis[31:51:3]) / 2:
            expected = widening.recalibrated(cell_rank(raw, axes, dim, value), dim)
            assert cell_rank(corrected, axes, dim, value) == pytest.approx(expected, abs=1e-4)


def test_cell_rank_spreads_each_cells_mass_across_the_cell_to_its_edges():
    axes = [np.array([0.0, 1.0, 2.0, 3.0]), np.array([0.0, 1.0])]
    posterior = np.full((4, 2), 1 / 8)  # uniform: the marginal CDF rises linearly from -0.5 to 3.5
    assert cell_rank(posterior, axes, 0, -0.5) == 0 and cell_rank(posterior, axes, 0, 3.5) == pytest.approx(1)
    assert cell_rank(posterior, axes, 0, 3.0) == pytest.approx(7 / 8) and cell_rank(posterior, axes, 0, 0.0) == pytest.approx(1 / 8)
    assert cell_rank(posterior, axes, 1, 1.5) == pytest.approx(1) and cell_rank(posterior, axes, 1, 0.5) == pytest.approx(0.5)


def test_the_quantile_map_is_the_calibration_ranks_distribution_smooth_with_their_variance():
    """R is a kernel estimate of the CDF of the calibration ranks in probit space: it keeps their
    variance (kernels narrowed to make room for the bandwidth), follows a skewed rank distribution
    (not its mirror image), is smooth where 20 ranks would make a staircase, and takes a truth outside
    every cell of its posterior (rank 0) as far out, not as an infinity."""
    axes, points = parameter_grid([0.0, 0.0], [1.0, 1.0], 101)
    rng = np.random.default_rng(4)
    truths = rng.uniform(0.3, 0.7, (400, 2))
    errors = 0.02 * (rng.exponential(size=(400, 2)) - 1)  # skewed: most centres a little below, a few far above
    log_likes = [-0.5 * (((points - (t + e)) / 0.02) ** 2).sum(axis=1).reshape(101, 101) for t, e in zip(truths, errors)]
    quantile = QuantileCorrection.fit(log_likes, axes, truths)
    for dim in range(2):
        ranks = np.array([cell_rank(grid_posterior(log_like, axes), axes, dim, t[dim]) for log_like, t in zip(log_likes, truths)])
        z = stats.norm.ppf(np.clip(ranks, QuantileCorrection.EDGE, 1 - QuantileCorrection.EDGE))
        assert quantile.probits[dim].var() + quantile.bandwidths[dim] ** 2 == pytest.approx(z.var(), rel=1e-6)
        u = np.linspace(0.1, 0.9, 9)
        empirical = (ranks[None] <= u[:, None]).mean(axis=1)
        assert np.abs(quantile.recalibrated(u, dim) - empirical).max() < 0.06
    rebuilt = QuantileCorrection(**json.loads(json.dumps(quantile.to_dict())))  # as a results file records it
    np.testing.assert_array_equal(rebuilt.recalibrated(u, 1), quantile.recalibrated(u, 1))
    few = QuantileCorrection.fit(log_likes[:20], axes, truths[:20])
    fine = few.recalibrated(np.linspace(0.01, 0.99, 400), 0)
    assert np.all(np.diff(fine) >= 0) and np.diff(fine).max() < 0.02  # a staircase of 20 ranks jumps by 0.05
    narrow = [-0.5 * (((points - 0.5) / 0.02) ** 2).sum(axis=1).reshape(101, 101)] * 20
    outside = np.concatenate([np.full((10, 2), 0.1), rng.normal(0.5, 0.02, (10, 2))])  # half where no posterior reaches
    far = QuantileCorrection.fit(narrow, axes, outside)
    assert all(np.isfinite(z).all() for z in far.probits) and np.isfinite(far.bandwidths).all()


def test_the_quantile_correction_keeps_empty_cells_empty_and_the_rest_finite():
    axes, points = parameter_grid([0.0, 0.0], [1.0, 1.0], 41)
    log_like = np.where((np.abs(points - 0.5) < 0.2).all(axis=1), -0.5 * (((points - 0.5) / 0.1) ** 2).sum(axis=1),
                        -np.inf).reshape(41, 41)  # nothing outside a box: zero mass there
    widening = QuantileCorrection([2 * stats.norm.ppf((np.arange(200) + 0.5) / 200)] * 2, [0.05, 0.05])
    corrected = widening(log_like, axes)
    assert np.isfinite(corrected).all() and corrected.sum() == pytest.approx(1)
    assert (corrected[~np.isfinite(log_like)] == 0).all()


def test_a_posterior_in_one_cell_keeps_the_cells_uniform_variance():
    axes, _ = parameter_grid([0.0, 1.0], [1.0, 3.0], 11)  # cells 0.1 and 0.2 wide
    posterior = np.zeros((11, 11))
    posterior[4, 7] = 1.0
    mean, covariance = grid_moments(posterior, axes)
    np.testing.assert_allclose(mean, [0.4, 2.4])
    np.testing.assert_allclose(covariance, np.diag([0.1 ** 2 / 12, 0.2 ** 2 / 12]))  # a uniform cell's variance


def test_figure_of_merit_of_a_gaussian_posterior_is_its_inverse_area():
    axes, points = parameter_grid([-1.0, -1.0], [1.0, 1.0], 201)
    covariance = np.array([[0.04, 0.018], [0.018, 0.0225]])
    log_like = -0.5 * np.einsum("mi,ij,mj->m", points, np.linalg.inv(covariance), points)
    posterior = grid_posterior(log_like, axes)
    mean, moments = grid_moments(posterior, axes)
    assert mean == pytest.approx([0, 0], abs=1e-9) and moments == pytest.approx(covariance, rel=0.01)
    assert figure_of_merit(posterior, axes) == pytest.approx(1 / np.sqrt(np.linalg.det(covariance)), rel=0.01)


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
    for summary, folder in (("field", "npe"), ("power_spectrum", "npe-pk")):
        result = run_in_process([sys.executable, str(ROOT / "evaluate" / "train_npe.py"), "--data_path",
                                 str(tmp_path / "train.npz"), "--condition", "A", "--image_size", str(SIZE),
                                 "--summary", summary, "--max_epochs", "20", "--lr", "2e-3", "--out", str(tmp_path / folder)])
        assert result.returncode == 0, result.stderr
        assert sorted(path.name for path in (tmp_path / folder).iterdir()) == [".lock", "config.json", "logs",
                                                                                "model.safetensors"]
    posterior, config = load_npe(tmp_path / "npe")
    assert config["names"] == ["A"] and config["low"][0] == pytest.approx(0.5, abs=0.01) and config["summary"] == "field"
    assert config["patience"] == 10 and config["epochs"] > 0  # how it stopped, recorded
    # a field of the prior's amplitudes: a constant field (amplitude 0) would leave the prior's box to rejection sampling
    field = log_density(amplitude_set([1.5], 7000).fields)[0]
    assert posterior.sample((10,), x=field, show_progress_bars=False).shape == (10, 1)
    # the P(k) summary: the bins up to Nyquist of a 16x16 field
    assert load_npe(tmp_path / "npe-pk")[1]["input_shape"] == [log_power_spectra(field[None].exp().numpy(), 100.0).shape[1]]

    methods = ("npe", "npe_power_spectrum", "power_spectrum")
    result = run_in_process([sys.executable, str(ROOT / "evaluate" / "infer.py"), str(tmp_path / "test.npz"),
                             "--npe", str(tmp_path / "npe"), "--npe_power_spectrum", str(tmp_path / "npe-pk"),
                             "--method", ",".join(methods), "--grid", "81", "--out", str(tmp_path / "posterior")])
    assert result.returncode == 0, result.stderr
    results = json.loads((tmp_path / "posterior" / "posterior.json").read_text())["results"]
    for method in methods:
        summaries = [r[method]["A"] for r in results]
        for truth in (1.0, 2.0):
            chosen = [s for s in summaries if s["truth"] == truth]
            mean = np.mean([s["mean"] for s in chosen])
            spread = np.mean([s["std"] for s in chosen])
            # six fields' averaged estimate lies within 3 of its standard errors; the posterior is informative
            assert abs(mean - truth) < 3 * spread / np.sqrt(len(chosen)) + 0.02 and spread < 0.25 * truth, (method, truth)

    swapped = run_in_process([sys.executable, str(ROOT / "evaluate" / "infer.py"), str(tmp_path / "test.npz"),
                              "--npe_power_spectrum", str(tmp_path / "npe"), "--method", "npe_power_spectrum",
                              "--out", str(tmp_path / "never")])
    assert swapped.returncode == 2 and ("an NPE on the field summary; models['npe_power_spectrum'] "
                                        "(--npe_power_spectrum) takes one on the power_spectrum summary") in swapped.stderr
    assert not (tmp_path / "never").exists()


def test_infer_needs_the_run_each_method_uses(tmp_path):
    result = run_in_process([sys.executable, str(ROOT / "evaluate" / "infer.py"), "fields.npz", "--method", "npe",
                             "--out", str(tmp_path / "never")])
    assert result.returncode == 2 and "method npe (--method) needs models['npe'] (--npe), a folder made by" in result.stderr
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "config.json").write_text("{}")
    result = run_in_process([sys.executable, str(ROOT / "evaluate" / "infer.py"), "fields.npz", "--method", "npe",
                             "--npe", str(tmp_path / "fake"), "--out", str(tmp_path / "never")])
    assert result.returncode == 2 and "not an NPE folder" in result.stderr and not (tmp_path / "never").exists()
