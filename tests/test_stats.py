import json
import re
import sys
import warnings

import numpy as np
import pytest

from conftest import ROOT, run_in_process, shared_path
from cosmodiff import plots, stats
from cosmodiff.stats import (bispectrum, compare, correlation_difference, correlation_matrix, floor_draws, mafd,
                             mafd_floor, mean_difference, minkowski_functionals, nearest_distances, power_spectrum,
                             reduced_bispectrum, seam_score, simulations_for_floor)


@pytest.mark.parametrize("resolution", [64, 128, 512])
def test_power_spectrum_reproduces_pylians_pk_plane(resolution):
    reference = np.load(shared_path("pylians-pk-plane-reference.npz"))
    delta = reference[f"delta_{resolution}"]
    k, pk, n_modes = power_spectrum(delta, 1000.0)
    np.testing.assert_allclose(k, reference[f"k_{resolution}"][0], rtol=1e-5)
    np.testing.assert_allclose(n_modes, reference[f"Nmodes_{resolution}"][0], rtol=0)
    np.testing.assert_allclose(pk, reference[f"Pk_{resolution}"], rtol=1e-5)
    _, pk_cic, _ = power_spectrum(delta, 1000.0, MAS="CIC")
    np.testing.assert_allclose(pk_cic, reference[f"Pk_CIC_{resolution}"], rtol=1e-5)


def test_single_fourier_mode_lands_in_its_bin_with_its_power():
    grid, box_size, amplitude = 32, 500.0, 0.3
    x = np.arange(grid)
    delta = amplitude * np.cos(2 * np.pi * (3 * x[:, None] + 4 * x[None, :]) / grid)  # |k| = 5 kF
    k, pk, n_modes = power_spectrum(delta, box_size, as_overdensity=False)
    k_fundamental = 2 * np.pi / box_size
    # <delta^2> = A^2/2 = sum over the 2 modes (+-k) of P / L^2; Pylians counts one, so the bin mean is P/N.
    expected = amplitude ** 2 / 4 * box_size ** 2 / n_modes[4]
    assert np.argmax(pk[0]) == 4 and k[4] == pytest.approx(5 * k_fundamental, rel=0.1)
    assert pk[0, 4] == pytest.approx(expected, rel=1e-6)
    assert np.delete(pk[0], 4).max() < 1e-12 * expected


def test_a_field_taken_as_given_keeps_its_amplitude_and_the_nyquist_mask_stops_at_pi_n_over_l():
    grid, box_size, amplitude = 32, 500.0, 0.3
    x = np.arange(grid)
    wave = amplitude * np.cos(2 * np.pi * (3 * x[:, None] + 4 * x[None, :]) / grid)
    k, as_given, n_modes = power_spectrum(3.0 + wave, box_size, as_overdensity=False)  # no negatives, no division
    assert as_given[0, 4] == pytest.approx(amplitude ** 2 / 4 * box_size ** 2 / n_modes[4], rel=1e-5)
    _, as_delta, _ = power_spectrum(3.0 + wave, box_size)  # delta = wave / 3
    assert as_delta[0, 4] == pytest.approx(as_given[0, 4] / 9, rel=1e-5)
    nyquist = np.pi * grid / box_size
    np.testing.assert_array_equal(stats.nyquist_mask(k, box_size, grid), k <= nyquist)
    assert stats.nyquist_mask(np.array([0.99, 1.0, 1.01]) * nyquist, box_size, grid).tolist() == [True, True, False]


def test_white_noise_spectrum_is_flat_at_the_pixel_variance_level():
    grid, box_size, sigma = 128, 200.0, 0.5
    delta = np.random.default_rng(0).normal(0, sigma, (64, grid, grid))
    k, pk, _ = power_spectrum(delta, box_size, as_overdensity=False)
    expected = sigma ** 2 * (box_size / grid) ** 2  # P = sigma^2 * pixel area
    mean = pk.mean(axis=0)
    np.testing.assert_allclose(mean[5:60].mean(), expected, rtol=0.01)
    assert np.abs(mean[5:60] / expected - 1).max() < 0.1


def test_density_fields_are_converted_to_overdensity_per_field():
    delta = np.random.default_rng(1).normal(0, 0.2, (2, 32, 32))
    delta -= delta.mean(axis=(1, 2), keepdims=True)
    density = np.stack([3.0 * (1 + delta[0]), 0.01 * (1 + delta[1])])
    np.testing.assert_allclose(power_spectrum(density, 100.0)[1], power_spectrum(delta, 100.0)[1], rtol=1e-4)


def test_overdensity_is_per_field_mean_zero_and_keeps_fields_that_already_are_delta():
    rng = np.random.default_rng(5)
    density = rng.lognormal(sigma=0.5, size=(16, 16))
    density[3, 4] = 0.0  # an empty cell is a density of zero, not a delta field
    delta_field = rng.normal(0.0, 0.3, (16, 16))  # negative values: delta already
    converted = stats.overdensity(np.stack([density, delta_field]))
    np.testing.assert_allclose(converted[0], density / density.mean() - 1, rtol=1e-5, atol=1e-6)
    assert abs(converted[0].mean()) < 1e-6 and converted[0, 3, 4] == -1.0
    np.testing.assert_allclose(converted[1], delta_field, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(stats.log_density(density[None])[0],
                               np.log(np.maximum(density / density.mean(), stats.LOG_FLOOR)), rtol=1e-5, atol=1e-6)


def test_mafd_is_zero_against_itself_and_scales_with_a_power_offset():
    pk = np.random.default_rng(2).lognormal(size=(10, 20))
    assert mafd(pk, pk) == 0.0
    assert mafd(1.1 * pk, pk) == pytest.approx(0.1)
    mask = np.arange(20) < 5
    assert mafd(pk * np.where(mask, 1.2, 1.0), pk, mask) == pytest.approx(0.2)


def test_floor_shrinks_with_set_size_like_sample_variance():
    pk = np.random.default_rng(3).lognormal(sigma=0.3, size=(400, 30))
    small = np.median(mafd_floor(pk, 25, n_draws=200)[0])
    large = np.median(mafd_floor(pk, 100, n_draws=200)[0])
    assert large / small == pytest.approx(np.sqrt((1 / 100 + 1 / 400) / (1 / 25 + 1 / 400)), rel=0.1)


def test_minkowski_functionals_of_analytic_shapes():
    size = 256
    y, x = np.mgrid[:size, :size] - size / 2 + 0.5
    radius = np.hypot(x, y)
    disk = (radius < 60).astype(float)
    annulus = ((radius < 60) & (radius > 30)).astype(float)
    squares = np.zeros((size, size))
    squares[20:60, 20:60] = 1
    squares[100:180, 120:200] = 1
    v0, v1, v2 = minkowski_functionals(np.stack([disk, annulus, squares]), [0.5])
    area = size * size
    np.testing.assert_allclose(v0[:, 0] * area, [np.pi * 60 ** 2, np.pi * (60 ** 2 - 30 ** 2), 40 ** 2 + 80 ** 2], rtol=0.01)
    np.testing.assert_allclose(v1[0, 0] * area, 2 * np.pi * 60, rtol=0.02)
    np.testing.assert_allclose(v1[1, 0] * area, 2 * np.pi * 90, rtol=0.03)
    np.testing.assert_allclose(v1[2, 0] * area, 4 * (40 + 80), rtol=0.06)  # Crofton: 5% low on axis-aligned edges
    np.testing.assert_array_equal(np.round(v2[:, 0] * area), [1, 0, 2])


def test_minkowski_functionals_scale_with_the_pixel_size_and_see_a_mirrored_field_alike():
    rng = np.random.default_rng(6)
    field = rng.normal(size=(32, 32))
    stripe = np.zeros((32, 32))
    for i in range(4, 28):  # a bar along the antidiagonal, three pixels wide
        stripe[i, 31 - i - 1:31 - i + 2] = 1.0
    thresholds = [-0.5, 0.0, 0.5]
    v0, v1, v2 = minkowski_functionals(np.stack([field, stripe]), thresholds)
    w0, w1, w2 = minkowski_functionals(np.stack([field, stripe]), thresholds, pixel_size=2.0)
    np.testing.assert_allclose(w0, v0)  # an area fraction has no unit
    np.testing.assert_allclose(w1, v1 / 2.0)  # a length per area: 1 / length
    np.testing.assert_allclose(w2, v2 / 4.0)  # a count per area: 1 / length^2
    mirrored = minkowski_functionals(np.stack([field, stripe])[:, :, ::-1], thresholds)
    for functional, of_mirror in zip((v0, v1, v2), mirrored):
        np.testing.assert_allclose(of_mirror, functional, rtol=1e-12)
    v0_at, _, _ = minkowski_functionals(stripe, [1.0])  # {field >= threshold}: the bar's own value is inside
    assert v0_at[0, 0] == pytest.approx(stripe.mean())
    one = minkowski_functionals(stripe, thresholds)  # one field (H, W) is a batch of one
    for functional, of_one in zip((v0, v1, v2), one):
        np.testing.assert_allclose(of_one, functional[1:])


def test_minkowski_is_periodic_a_disk_across_the_corner_is_one_disk():
    size = 64
    y, x = np.mgrid[:size, :size]
    disk = (np.hypot(x - 10, y - 10) < 8).astype(float)
    wrapped = np.roll(disk, (-10, -10), axis=(0, 1))
    for field in (disk, wrapped):
        v0, v1, v2 = minkowski_functionals(field[None], [0.5])
        assert round(v2[0, 0] * size * size) == 1
    np.testing.assert_allclose(minkowski_functionals(wrapped[None], [0.5])[1], minkowski_functionals(disk[None], [0.5])[1])


def smooth_periodic_fields(n, size, seed=0):
    rng = np.random.default_rng(seed)
    k = np.fft.fftfreq(size)
    filter_ = np.exp(-(k[:, None] ** 2 + k[None, :] ** 2) / (2 * 0.05 ** 2))
    return np.fft.ifft2(np.fft.fft2(rng.normal(size=(n, size, size))) * filter_).real


def test_seam_score_is_one_for_periodic_fields_and_larger_for_cut_ones():
    periodic = smooth_periodic_fields(32, 64)
    cut = smooth_periodic_fields(32, 128)[:, :64, :64]
    assert 0.9 < np.median(seam_score(periodic)) < 1.1
    assert np.median(seam_score(cut)) > 1.5


def test_nearest_distance_finds_shifted_copies_and_its_ratio_ignores_smoothness():
    references = smooth_periodic_fields(5, 32, seed=4)
    queries = np.roll(references[[3, 1]], (7, -5), axis=(1, 2))
    nearest, relative = nearest_distances(queries, references)
    np.testing.assert_allclose(nearest, 0, atol=1e-7 * references.std())
    np.testing.assert_allclose(relative, 0, atol=1e-6)
    others = smooth_periodic_fields(2, 32, seed=5)
    nearest, relative = nearest_distances(others, references)
    assert (nearest > 0.1 * others.std()).all() and (relative > 0.5).all()
    # Brute force over all shifts for one pair, and the ratio's denominator, the median over references.
    rms = [min(np.sqrt(np.mean((np.roll(others[0], (i, j), axis=(0, 1)) - reference) ** 2))
               for i in range(32) for j in range(32)) for reference in references]
    np.testing.assert_allclose([nearest[0], relative[0]], [min(rms), min(rms) / np.median(rms)], rtol=1e-9)
    # Shrinking the query toward the mean shrinks the distance, not the ratio, much.
    mean = references.mean()
    shrunk_nearest, shrunk_relative = nearest_distances(mean + 0.5 * (others - mean), references)
    assert (shrunk_nearest < nearest).all() and np.allclose(shrunk_relative, relative, rtol=0.25)


def run_evaluate(*args):
    return run_in_process([sys.executable, "evaluate/power_spectrum.py", *map(str, args)], cwd=ROOT)


def test_evaluate_script_shared_pngs_against_themselves_and_disjoint_halves(tmp_path):
    folder = shared_path("quijote-png-sample")
    result = run_evaluate(folder, folder, "--colormap", "gnuplot", "--out", tmp_path / "same")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "same" / "report.json").read_text())
    assert report["mafd"] == 0.0
    for name in ("power_spectra_comparison", "power_spectrum_ratio", "power_spectrum_correlation", "periodic",
                 "pixel_pdf", "minkowski", "peaks", "bispectrum"):
        assert (tmp_path / "same" / f"{name}.png").stat().st_size > 1000
    halves = [tmp_path / "a", tmp_path / "b"]
    for index, png in enumerate(sorted(folder.glob("*.png"))):
        half = halves[index % 2]
        half.mkdir(exist_ok=True)
        (half / png.name).symlink_to(png)
    result = run_evaluate(*halves, "--colormap", "gnuplot", "--out", tmp_path / "halves")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "halves" / "report.json").read_text())
    assert report["floor"]["low"] <= report["mafd"] <= report["floor"]["high"], report["floor"]
    assert "MAFD / floor" in result.stdout


def test_evaluate_script_errors_are_one_sentence_exit_2_and_write_nothing(tmp_path):
    small, large = tmp_path / "small.npy", tmp_path / "large.npy"
    np.save(small, np.random.default_rng(0).random((4, 16, 16)) + 0.5)
    np.save(large, np.random.default_rng(0).random((4, 32, 32)) + 0.5)
    cases = [
        ((small, large), "the real fields are 16x16 but the generated ones are 32x32"),
        ((small, tmp_path / "missing"), "missing: no such file or folder"),
    ]
    np.savez(tmp_path / "box.npz", fields=np.random.default_rng(1).random((4, 16, 16)) + 0.5, box_size=250.0)
    cases.append(((small, tmp_path / "box.npz"), "box size 250.0 Mpc/h differs from 1000.0 Mpc/h"))
    np.save(tmp_path / "nan.npy", np.where(np.arange(1024).reshape(4, 16, 16) == 700, np.nan, 1.0))
    cases.append(((small, tmp_path / "nan.npy"), "nan.npy[2]: the field contains NaN or infinite values"))
    np.save(tmp_path / "collapsed.npy", np.zeros((4, 16, 16)))
    cases.append(((small, tmp_path / "collapsed.npy"), "collapsed.npy[0]: the field is all zeros (a collapsed sample?)"))
    for arguments, message in cases:
        out = tmp_path / "out"
        result = run_evaluate(*arguments, "--out", out)
        assert result.returncode == 2 and message in result.stderr and result.stderr.count("\n") == 1
        assert not out.exists()


def test_evaluate_without_arguments_takes_the_latest_runs_newest_samples_and_its_test_split(tmp_path):
    data, run = tmp_path / "data", tmp_path / "results" / "run"
    rng = np.random.default_rng(0)
    data.mkdir()
    np.savez(data / "test.npz", fields=rng.random((8, 16, 16)) + 0.5, box_size=500.0)
    (run / "samples").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"data": {"path": str(data)}}))
    np.save(run / "samples.npy", rng.random((4, 16, 16)) + 0.5)  # older than samples/samples.npy
    np.save(run / "samples" / "samples.npy", rng.random((8, 16, 16)) + 0.5)

    def evaluate(*args):
        return run_in_process([sys.executable, ROOT / "evaluate" / "power_spectrum.py", *args], cwd=tmp_path)
    result = evaluate()
    assert result.returncode == 0, result.stderr
    assert f"real: {data / 'test.npz'}\ngenerated: results/run/samples/samples.npy" in result.stdout
    report = json.loads((tmp_path / "evaluation" / "report.json").read_text())
    assert report["sizes"] == {"real": 8, "generated": 8} and report["settings"]["box_size"] == 500.0
    for samples in (run / "samples.npy", run / "samples" / "samples.npy"):
        samples.unlink()
    result = evaluate()
    assert result.returncode == 2 and "results/run: the latest run has no samples.npy" in result.stderr
    result = evaluate("--results_dir", tmp_path / "nowhere")
    assert result.returncode == 2 and "no run folders with a config.json" in result.stderr


def gaussian_fields(n, size, slope, seed):
    """Unit-variance Gaussian fields of power |k|^slope."""
    rng = np.random.default_rng(seed)
    k = np.fft.fftfreq(size, 1 / size)
    kmod = np.sqrt(k[:, None] ** 2 + np.fft.rfftfreq(size, 1 / size)[None, :] ** 2)
    kmod[0, 0] = 1
    fields = np.fft.irfft2(np.fft.rfft2(rng.standard_normal((n, size, size))) * kmod ** (slope / 2), s=(size, size))
    return fields / fields.std()


def test_bispectrum_estimator_equals_the_direct_sum_over_closed_triangles():
    field = gaussian_fields(1, 16, -1.0, 0)[0]
    field = field + 0.3 * field ** 2 - 0.3 * (field ** 2).mean()  # a non-zero bispectrum, delta with negatives
    modes = np.fft.fft2(field)
    k = np.fft.fftfreq(16, 1 / 16).astype(int)
    grid = [(kx, ky) for kx in k for ky in k]

    def in_shell(kx, ky, centre):
        kmod = np.hypot(kx, ky)
        return 0 < kmod and centre - 0.5 <= kmod < centre + 0.5

    for centres in [(4, 4, 4), (1, 4, 4), (2, 3, 4)]:
        total, count = 0.0, 0
        for k1 in grid:
            for k2 in grid:
                k3 = (-k1[0] - k2[0], -k1[1] - k2[1])
                if in_shell(*k1, centres[0]) and in_shell(*k2, centres[1]) and in_shell(*k3, centres[2]):
                    total += (modes[k1] * modes[k2] * modes[k3[0] % 16, k3[1] % 16]).real
                    count += 1
        _, b, _ = bispectrum(field, 100.0, [("test", *centres)])
        np.testing.assert_allclose(b[0, 0], total / count * 100.0 ** 4 / 16 ** 6, rtol=1e-6)  # float32 delta


def test_bispectrum_shells_are_half_open_in_k_and_exclude_the_mean():
    grid = 64  # the default size: shells two fundamentals wide, so integer |k| fall on their edges
    _, indicators = stats.shell_fields(np.zeros((1, grid, grid)), [4, 1], 2)
    kept = np.fft.rfft2(indicators).real > 0.5  # the shells' masks back from their indicator fields
    k = np.hypot(np.fft.fftfreq(grid, 1 / grid)[:, None], np.arange(grid // 2 + 1)[None, :])
    np.testing.assert_array_equal(kept[0], (k >= 3) & (k < 5))  # [centre - width/2, centre + width/2)
    np.testing.assert_array_equal(kept[1], (k > 0) & (k < 2))  # the k = 0 mode is in no shell
    assert kept[0][3, 0] and kept[0][3, 3] and not kept[0][5, 0] and not kept[0][3, 4]
    field = gaussian_fields(1, grid, -1.0, 2)[0]
    _, _, p = bispectrum(field, 250.0, [("equilateral", 8, 8, 8)])
    modes = np.fft.fft2(stats.overdensity(field[None])[0])
    k_full = np.hypot(*np.meshgrid(np.fft.fftfreq(grid, 1 / grid), np.fft.fftfreq(grid, 1 / grid), indexing="ij"))
    shell = (k_full >= 7) & (k_full < 9)  # the side's shell at 64x64: 8 +- 1 fundamentals
    np.testing.assert_allclose(p[0, 0], np.mean(np.abs(modes[shell]) ** 2) * 250.0 ** 2 / grid ** 4, rtol=1e-4)


def test_reduced_bispectrum_is_zero_for_gaussian_fields_and_2_fnl_for_a_local_quadratic_one():
    gaussian = gaussian_fields(400, 32, -1.0, 0)
    triangles, b, p = bispectrum(gaussian, 250.0)
    assert [name.split()[0] for name, *_ in triangles] == ["equilateral"] * 3 + ["squeezed"] * 3
    assert triangles[0][1] == pytest.approx(2 * np.pi / 250.0 * 4)  # k in h/Mpc
    assert np.abs(reduced_bispectrum(b, p)).max() < 0.15
    f_nl = 0.2
    quadratic = gaussian + f_nl * (gaussian ** 2 - (gaussian ** 2).mean())
    q = reduced_bispectrum(*bispectrum(quadratic, 250.0)[1:])
    assert abs(q.mean() - 2 * f_nl) < 0.1 * 2 * f_nl and (q > 0.5 * f_nl).all()


def test_scorecard_statistics_sit_at_their_floors_for_real_sets_and_far_above_for_gaussian_fields():
    real = np.exp(gaussian_fields(256, 32, -1.5, 1))
    same = np.exp(gaussian_fields(256, 32, -1.5, 2))
    gaussian = 1 + 0.5 * gaussian_fields(256, 32, -1.5, 3)  # no skewness: Q = 0, a symmetric PDF
    alike, unlike = (compare(real, other, 250.0, n_draws=20, progress=False)["scorecard"] for other in (same, gaussian))
    assert set(alike["statistics"]) == {"pk_mafd", "log_pk_mafd", "bispectrum", "bispectrum_equilateral",
                                        "bispectrum_squeezed", "peaks", "pixel_pdf", "minkowski", "pk_correlation"}
    for name, row in alike["statistics"].items():
        assert row["over_floor"] < 2.5, name
        assert 0 < row["floor_low"] <= row["floor"] <= row["floor_high"], name
    rows = unlike["statistics"]
    assert rows["bispectrum"]["over_floor"] > 3 and rows["pixel_pdf"]["over_floor"] > 3
    assert rows["bispectrum_equilateral"]["over_floor"] > 3 and rows["minkowski"]["over_floor"] > 3
    assert unlike["worst"] == {"statistic": max(rows, key=lambda name: rows[name]["over_floor"]),
                               "over_floor": max(row["over_floor"] for row in rows.values())}


def clustered_spectra(rng, n_sims, per_sim, between=0.05, within=0.05, bins=40):
    """Per-field 'spectra' 1 + a_s + e: each simulation's offset a_s (spread `between`) shared by its fields."""
    offsets = rng.normal(0, between, (n_sims, 1, bins))
    fields = 1 + offsets + rng.normal(0, within, (n_sims, per_sim, bins))
    return fields.reshape(-1, bins), np.repeat(np.arange(n_sims), per_sim)


def expected_mafd(variance_of_difference):
    """E|x| of a zero-mean Gaussian difference of means, averaged over independent bins of mean 1."""
    return np.sqrt(2 / np.pi * variance_of_difference)


def test_floor_by_simulation_matches_the_analytic_sample_variance_of_clustered_fields():
    rng = np.random.default_rng(0)
    n_sims, per_sim, between, within, n_generated = 48, 8, 0.05, 0.05, 384
    by_simulation, by_field, two_real = [], [], []
    for _ in range(6):
        pk, sims = clustered_spectra(rng, n_sims, per_sim, between, within)
        other, other_sims = clustered_spectra(rng, n_sims, per_sim, between, within)
        by_simulation.append(np.median(mafd_floor(pk, n_generated, n_draws=100, real_sims=sims)[0]))
        by_field.append(np.median(mafd_floor(pk, n_generated, n_draws=100)[0]))
        two_real.append(np.median(mafd_floor(pk, len(other), n_draws=100, real_sims=sims, pk_generated=other,
                                             generated_sims=other_sims)[0]))
    # independent generated fields against a set of n_sims simulations: their means differ by
    # var = (between^2 + within^2) / n_generated + between^2 / n_sims + within^2 / (n_sims per_sim)
    real_mean = between ** 2 / n_sims + within ** 2 / (n_sims * per_sim)
    generated = expected_mafd((between ** 2 + within ** 2) / n_generated + real_mean)
    assert np.median(by_simulation) == pytest.approx(generated, rel=0.1)
    assert np.median(two_real) == pytest.approx(expected_mafd(2 * real_mean), rel=0.1)
    assert np.median(by_field) < 0.6 * generated  # treating slabs as independent: the floor far too small


def test_resampled_simulations_keep_the_variance_of_a_set_of_simulations():
    rng = np.random.default_rng(1)
    pk, sims = clustered_spectra(rng, 4, 6, bins=3)
    draws = floor_draws(lambda generated, real: real.mean(axis=0), [pk], 1, sims, n_draws=4000)
    sim_means = pk.reshape(4, 6, 3).mean(axis=1)
    # the bootstrap over S simulations, rescaled by S / (S - 1): the unbiased variance of a mean of S
    assert draws.var(axis=0) == pytest.approx(sim_means.var(axis=0, ddof=1) / 4, rel=0.1)


def test_floor_draws_keep_each_field_whole_across_its_arrays():
    # a ratio statistic (the reduced bispectrum: B over products of P) needs each drawn field's arrays together
    pk, sims = clustered_spectra(np.random.default_rng(3), 8, 6, bins=5)
    for real_sims in (sims, None):
        draws = floor_draws(lambda b, p, real_b, real_p: np.abs(b - p).max() + np.abs(real_b - real_p).max(),
                            [pk, pk.copy()], 30, real_sims, n_draws=50)
        assert (draws == 0).all()


def test_floor_refuses_a_single_simulation():
    pk, sims = clustered_spectra(np.random.default_rng(2), 1, 10)
    with pytest.raises(ValueError, match="at least 2 simulations"):
        mafd_floor(pk, 10, real_sims=sims)


def test_correlation_difference_finds_a_correlation_the_other_set_lacks():
    rng = np.random.default_rng(0)
    independent = rng.normal(size=(2000, 4))
    correlated = independent.copy()
    correlated[:, 1] = 0.6 * correlated[:, 0] + 0.8 * correlated[:, 1]
    assert correlation_difference(independent, independent) == 0
    assert correlation_difference(correlated, independent) == pytest.approx(0.6, abs=0.05)


def test_mean_difference_counts_only_the_bins_enough_real_fields_reach():
    real = np.zeros((100, 4))
    real[:, 0] = np.where(np.arange(100) % 2, 11.0, 9.0)  # mean and median 10, spread 1
    real[:5, 1] = 1.0  # 5 of 100 fields (OCCUPIED): mean 0.05, spread sqrt(0.05 * 0.95)
    real[:4, 2] = 1.0  # 4 of 100: too few to divide by their spread
    real[:, 3] = 5.0  # no spread at all
    generated = np.zeros((10, 4))
    generated[:, 0] = 10.5
    generated[:, 2] = 3.0
    generated[:, 3] = 9.0
    expected = (0.5 / 1.0 + 0.05 / np.sqrt(0.05 * 0.95)) / 2  # the mean over the two counted bins
    assert mean_difference(generated, real) == pytest.approx(expected, rel=1e-12)


def test_a_floor_is_by_simulation_only_where_fields_name_two_or_more_simulations():
    sims = np.array([3, 3, 7, 7])
    assert simulations_for_floor(None) is None and simulations_for_floor(np.array([2, 2, 2])) is None
    assert simulations_for_floor(sims) is sims
    pk, sims = clustered_spectra(np.random.default_rng(4), 6, 8, bins=5)
    assert np.array_equal(mafd_floor(pk, 12, n_draws=30)[0], mafd_floor(pk, 12, n_draws=30)[0])  # seeded


def test_the_report_and_scorecard_draw_floors_by_simulation_when_the_fields_name_them():
    n_sims, per_sim = 6, 16
    shared = np.repeat(gaussian_fields(n_sims, 32, -2.5, 10), per_sim, axis=0)  # each simulation's large scales
    real = np.exp(0.6 * shared + 0.4 * gaussian_fields(n_sims * per_sim, 32, -1.5, 11))
    other = np.exp(0.6 * np.repeat(gaussian_fields(n_sims, 32, -2.5, 12), per_sim, axis=0)
                   + 0.4 * gaussian_fields(n_sims * per_sim, 32, -1.5, 13))
    sims = np.repeat(np.arange(n_sims), per_sim)
    by_field = compare(real, other, 250.0, n_draws=40, progress=False)
    by_simulation = compare(real, other, 250.0, n_draws=40, progress=False, real_sims=sims)
    two_splits = compare(real, other, 250.0, n_draws=40, progress=False, real_sims=sims, generated_sims=sims + n_sims)
    assert by_field["floor"]["by"] == "field" and by_field["scorecard"]["floor_by"] == "field"
    assert by_simulation["floor"]["by"] == "simulation" and by_simulation["scorecard"]["floor_by"] == "simulation"
    assert by_simulation["floor"]["real_simulations"] == n_sims
    floors = [report["scorecard"]["statistics"]["pk_mafd"]["floor"] for report in (by_field, by_simulation, two_splits)]
    # shared large scales: sets drawn by simulation differ more than sets of independent fields, and two
    # sets of simulations more than a set of simulations and independent fields
    assert floors[0] < floors[1] < floors[2]


def test_floor_draws_redraw_a_second_real_split_with_its_own_number_of_simulations():
    pk, sims = clustered_spectra(np.random.default_rng(6), 5, 4, bins=3)
    other, other_sims = clustered_spectra(np.random.default_rng(7), 3, 4, bins=3)
    sizes = floor_draws(lambda generated, real: (len(generated), len(real)), [pk], len(other), sims, [other],
                        other_sims + 10, n_draws=20)
    assert (sizes == [3 * 4, 5 * 4]).all()  # 3 simulations of 4 fields against 5 of 4


def test_floors_need_two_simulations_and_four_real_fields_and_no_more():
    pk, sims = clustered_spectra(np.random.default_rng(8), 2, 2, bins=3)
    assert len(floor_draws(lambda generated, real: 0.0, [pk], 4, sims, n_draws=5)) == 5  # exactly 2 and 4: enough
    with pytest.raises(ValueError, match="needs at least 4 real fields"):
        floor_draws(lambda generated, real: 0.0, [pk[:3]], 4, None, n_draws=5)


def test_floor_ratios_and_mask_follow_each_bins_own_mean():
    rng = np.random.default_rng(9)
    pk, sims = clustered_spectra(rng, 12, 8, bins=6)
    pk = pk * 10.0 ** np.arange(6)  # bins whose means differ by decades, as P(k) does
    values, ratios = mafd_floor(pk, 96, n_draws=200, real_sims=sims)
    assert ratios.shape == (200, 6) and np.median(ratios, axis=0) == pytest.approx(np.ones(6), abs=0.02)
    noisy = pk.copy()
    noisy[:, 0] *= np.exp(rng.normal(0, 1.0, len(pk)))  # one bin with a huge spread
    masked = mafd_floor(noisy, 96, mask=np.arange(6) > 0, n_draws=200, real_sims=sims)[0]
    unmasked = mafd_floor(noisy, 96, n_draws=200, real_sims=sims)[0]
    assert np.median(masked) == pytest.approx(np.median(values), rel=0.05) and np.median(unmasked) > 2 * np.median(masked)


def test_resampled_simulations_keep_each_bins_variance_whatever_its_mean():
    pk, sims = clustered_spectra(np.random.default_rng(10), 4, 6, bins=3)
    pk = pk * np.array([1.0, 100.0, 1e4])
    draws = floor_draws(lambda generated, real: real.mean(axis=0), [pk], 1, sims, n_draws=4000)
    sim_means = pk.reshape(4, 6, 3).mean(axis=1)
    assert draws.var(axis=0) == pytest.approx(sim_means.var(axis=0, ddof=1) / 4, rel=0.1)


def test_a_statistic_added_to_the_registries_reaches_the_scorecard_the_report_and_its_lines(monkeypatch):
    """CONTRIBUTING's "Add a statistic": a MEASUREMENTS entry, a STATISTICS entry and a SECTIONS entry,
    and nothing else, give the new statistic its scorecard row (distance over floor), its report section
    and its summary line."""
    def variance_of(chunk):
        return dict(pixel_variance=chunk.fields.var(axis=(1, 2))), {}

    def variance_section(real_stats, generated_stats, context):
        return {"real_mean": float(real_stats["pixel_variance"].mean()),
                "generated_mean": float(generated_stats["pixel_variance"].mean())}
    monkeypatch.setitem(stats.MEASUREMENTS, "pixel_variance", variance_of)
    monkeypatch.setitem(stats.STATISTICS, "pixel_variance", stats.Statistic(
        lambda s, mask: [s["pixel_variance"][:, None]], mean_difference, "pixel variance", "pixel_pdf.png"))
    monkeypatch.setitem(stats.SECTIONS, "pixel_variance", stats.Section(
        variance_section, lambda section: [("pixel variance (real / generated)",
                                            f"{section['real_mean']:.3f} / {section['generated_mean']:.3f}")]))
    rng = np.random.default_rng(0)
    real = 1 + 0.1 * rng.standard_normal((16, 16, 16))
    generated = 1 + 0.3 * rng.standard_normal((16, 16, 16))  # nine times the variance
    report = compare(real, generated, 100.0, n_draws=50, progress=False, real_sims=np.repeat(np.arange(8), 2))
    assert report["pixel_variance"]["generated_mean"] == pytest.approx(9 * report["pixel_variance"]["real_mean"],
                                                                      rel=0.1)
    assert report["scorecard"]["statistics"]["pixel_variance"]["over_floor"] > 10
    assert report["scorecard"]["worst"]["statistic"] == "pixel_variance"
    lines = dict(stats.summary_lines(report))
    assert "pixel variance (real / generated)" in lines and "pixel variance distance / floor" in lines


def test_every_statistic_names_a_figure_the_report_draws():
    assert {statistic.figure for statistic in stats.STATISTICS.values()} <= set(plots.FIGURES)


def test_correlation_matrix_of_proportional_and_independent_spectra():
    rng = np.random.default_rng(1)
    amplitude = rng.lognormal(size=(400, 1))  # one amplitude per field scales every bin: correlation 1
    np.testing.assert_allclose(correlation_matrix(amplitude * np.array([1.0, 2.0, 5.0])), np.ones((3, 3)), atol=1e-12)
    independent = correlation_matrix(rng.standard_normal((4000, 3)))
    np.testing.assert_allclose(independent, np.eye(3), atol=0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither bins that do not vary nor one field warn
        assert correlation_matrix(np.ones((5, 2))).tolist() == [[0.0, 0.0], [0.0, 0.0]]  # bins that do not vary
        assert correlation_matrix(np.array([[1.0, 2.0, 3.0]])).tolist() == [[0.0] * 3] * 3  # one field: none
    np.testing.assert_allclose(correlation_matrix(np.array([[1.0, 2.0], [2.0, 1.0]])), [[1.0, -1.0], [-1.0, 1.0]])


def test_field_statistics_show_a_progress_bar_only_when_asked(capsys):
    fields = np.random.default_rng(3).lognormal(sigma=0.5, size=(3, 16, 16))
    stats.field_statistics(fields, 100.0, np.linspace(-2, 2, 5), chunk=2)
    assert capsys.readouterr().err == ""
    stats.field_statistics(fields, 100.0, np.linspace(-2, 2, 5), chunk=2, progress=True)
    bar = capsys.readouterr().err
    assert re.search(r"(^|\r)statistics: ", bar) and " 2/2 " in bar and re.search(r"(chunk/s|s/chunk)\]", bar)


def test_field_statistics_measure_p_k_of_delta_and_of_its_log_with_the_mass_assignment_asked():
    rng = np.random.default_rng(2)
    fields = rng.lognormal(sigma=0.6, size=(5, 32, 32))
    edges = np.linspace(-2, 2, 11)
    measured = stats.field_statistics(fields, 300.0, edges, MAS="CIC", chunk=2)  # chunks of 2, 2 and 1 merged
    np.testing.assert_allclose(measured["pk"], power_spectrum(fields, 300.0, MAS="CIC")[1], rtol=1e-6)
    logs = stats.log_density(fields)
    np.testing.assert_allclose(measured["log_pk"], power_spectrum(logs, 300.0, MAS="CIC", as_overdensity=False)[1],
                               rtol=1e-6)
    assert not np.allclose(measured["pk"], power_spectrum(fields, 300.0)[1])  # the CIC window is deconvolved


def test_peak_counts_find_strict_periodic_maxima_per_unit_area_in_their_height_bin():
    field = np.zeros((8, 8))
    field[2, 3] = 1.5   # an isolated peak
    field[0, 0] = 2.5   # a peak whose neighbours wrap around both edges
    field[7, 7] = 0.5   # its neighbour across the corner: not a peak
    field[5, 5] = field[5, 6] = 1.2  # a plateau of two equal pixels: neither is strictly above the other
    edges = np.array([0.0, 1.0, 2.0, 3.0])
    counts = stats.peak_counts(field[None], edges, pixel_size=2.0)
    area = (8 * 2.0) ** 2
    np.testing.assert_allclose(counts, [[0.0, 1.0 / area, 1.0 / area]])
    assert stats.peak_counts(np.ones((2, 8, 8)), edges).sum() == 0  # a flat field has no maxima
    rolled = np.roll(field, (3, -2), axis=(0, 1))  # periodic: a shift moves peaks, never makes or loses one
    np.testing.assert_array_equal(stats.peak_counts(rolled[None], edges, pixel_size=2.0), counts)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:  # a pixel with one higher neighbour, in each of the 8 directions, is no peak
                pair = np.zeros((8, 8))
                pair[4, 4], pair[4 + dy, 4 + dx] = 1.5, 2.5
                assert stats.peak_counts(pair[None], edges).tolist() == [[0.0, 0.0, 1.0 / 64]], (dy, dx)


def test_pixel_pdf_is_a_normalised_density_with_the_tails_in_its_end_bins():
    edges = np.array([-1.0, 0.0, 0.5, 2.0])
    logs = np.array([[[-3.0, -0.5], [0.0, 0.25]], [[0.5, 1.9], [2.0, 7.0]]])
    pdf = stats.pixel_pdf(logs, edges)
    # field 0: -3 (below, first bin), -0.5 (first), 0.0 (second: a value on an edge opens the next bin), 0.25
    # field 1: 0.5, 1.9, 2.0 (the last edge) and 7 (above) all in the last bin
    np.testing.assert_allclose(pdf, [[0.5 / 1.0, 0.5 / 0.5, 0.0], [0.0, 0.0, 1.0 / 1.5]])
    np.testing.assert_allclose((pdf * np.diff(edges)).sum(axis=1), 1.0)


def test_pdf_distance_is_the_largest_gap_between_the_pooled_cdfs():
    edges = np.linspace(0.0, 4.0, 5)
    width = np.diff(edges)
    low = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]]) / width  # pooled: half in bin 0, half in bin 1
    high = np.array([[0.0, 0.0, 1.0, 0.0]]) / width
    assert stats.pdf_distance(low, low, edges) == 0.0
    assert stats.pdf_distance(low, high, edges) == pytest.approx(1.0)
    shifted = np.array([[0.0, 1.0, 0.0, 0.0]]) / width
    assert stats.pdf_distance(low, shifted, edges) == pytest.approx(0.5)  # the CDFs differ by 1/2 after bin 0
    uneven = np.array([0.0, 0.5, 2.0, 4.0])  # the density is per unit ln(1+delta): widths weigh it
    density = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]) / np.diff(uneven)
    assert stats.pdf_distance(density, np.array([[0.0, 1.0, 0.0]]) / np.diff(uneven), uneven) == pytest.approx(0.5)


def test_shared_bins_span_the_reference_sets_1_to_99_9_percentiles():
    values = np.arange(1001.0).reshape(1, 1, 1001)  # percentiles of 0..1000 are the values themselves
    edges = stats.shared_bins(values, n_bins=8)
    assert len(edges) == 9
    np.testing.assert_allclose(edges[[0, -1]], [10.0, 999.0])
    np.testing.assert_allclose(np.diff(edges), (999.0 - 10.0) / 8)


def test_triangle_configurations_are_the_documented_equilateral_and_squeezed_sides():
    assert stats.triangle_configurations(64) == [
        ("equilateral k=8", 8, 8, 8), ("equilateral k=16", 16, 16, 16), ("equilateral k=24", 24, 24, 24),
        ("squeezed k=8", 2, 8, 8), ("squeezed k=16", 2, 16, 16), ("squeezed k=24", 2, 24, 24)]
    assert [config[1] for config in stats.triangle_configurations(16)[3:]] == [1, 1, 1]  # the long side is one kF


def test_reduced_bispectrum_divides_the_mean_b_by_the_sum_of_pairwise_power_products():
    b = np.array([[2.0, 10.0], [4.0, 30.0]])  # two fields, two configurations: mean B = 3 and 20
    p = np.array([[[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]], [[3.0, 2.0, 1.0], [3.0, 3.0, 3.0]]])  # mean P = 2, 2, 2 and 2, 2, 2
    np.testing.assert_allclose(reduced_bispectrum(b, p), [3.0 / 12.0, 20.0 / 12.0])
    p_sides = np.array([[[1.0, 2.0, 4.0]]])  # P1 P2 + P2 P3 + P1 P3 = 2 + 8 + 4
    np.testing.assert_allclose(reduced_bispectrum(np.array([[7.0]]), p_sides), [0.5])
    assert stats.q_distance(b, p, b, p) == 0.0
    assert stats.q_distance(2 * b, p, b, p) == pytest.approx((3.0 / 12.0 + 20.0 / 12.0) / 2)


def test_one_point_statistics_use_the_bin_centres_and_the_pixel_area_in_mpc_per_h():
    rng = np.random.default_rng(4)
    fields = rng.lognormal(sigma=0.5, size=(3, 16, 16))
    logs = stats.log_density(fields)
    edges = np.linspace(-1.5, 1.5, 7)
    box_size = 80.0  # 5 Mpc/h pixels
    per_field, shared = stats.one_point_of(stats.Chunk(fields, logs, box_size, edges, "None"))
    centres = np.array([-1.25, -0.75, -0.25, 0.25, 0.75, 1.25])
    np.testing.assert_allclose(shared["thresholds"], centres)
    v0, v1, v2 = minkowski_functionals(logs, centres, 5.0)
    np.testing.assert_allclose(per_field["v0"], v0)
    np.testing.assert_allclose(per_field["v1"], v1)
    np.testing.assert_allclose(per_field["v2"], v2)
    np.testing.assert_allclose(per_field["peaks"], stats.peak_counts(logs, edges, 5.0))
    np.testing.assert_allclose(per_field["pdf"], stats.pixel_pdf(logs, edges))
    np.testing.assert_allclose(per_field["log_mean"], logs.mean(axis=(1, 2)))
    np.testing.assert_allclose(per_field["log_square"], (logs ** 2).mean(axis=(1, 2)))
    np.testing.assert_allclose(per_field["seam"], seam_score(logs))
