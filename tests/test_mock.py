import runpy
import sys

import matplotlib
import numpy as np
import pytest

from conftest import ROOT, run_in_process
from cosmodiff.fields import block_average, load_fields
from cosmodiff.mock import linear_power, lpt_density, make_mock_set, wavenumbers
from cosmodiff.parameters import QUIJOTE_FIDUCIAL
from cosmodiff.stats import seam_score


def measured_over_linear(redshift, seeds, grid=64, box_size=1000.0, k_max=0.05):
    """Mode-averaged P_mock / P_lin for 0 < k < k_max (CIC window deconvolved) and its sample-variance sigma.

    Each independent mode's |delta_k|^2 / P is exponentially distributed with mean 1 and variance 1.
    """
    power, _ = linear_power(QUIJOTE_FIDUCIAL, redshift)
    kx, ky, kz = wavenumbers(grid, box_size)
    k = np.sqrt(kx ** 2 + ky ** 2 + kz ** 2)
    k_nyquist = np.pi * grid / box_size
    window = (np.sinc(kx / (2 * k_nyquist)) * np.sinc(ky / (2 * k_nyquist)) * np.sinc(kz / (2 * k_nyquist))) ** 2
    selected = (k > 0) & (k < k_max) & (kz > 0)  # independent half-space modes
    ratios = []
    for seed in seeds:
        density = lpt_density(QUIJOTE_FIDUCIAL, grid, box_size, np.random.default_rng(seed), redshift)
        measured = np.abs(np.fft.rfftn(density - 1)) ** 2 * box_size ** 3 / grid ** 6 / window ** 2
        ratios.append(measured[selected] / power(k[selected]))
    ratios = np.concatenate(ratios)
    return ratios.mean(), 1 / np.sqrt(ratios.size)


def test_large_scale_power_follows_colossus_linear_theory():
    ratio, sigma = measured_over_linear(redshift=2.0, seeds=[0, 1])
    assert abs(ratio - 1) < 3 * sigma, (ratio, sigma)


def test_z0_large_scales_within_sample_variance_plus_lpt_damping():
    ratio, sigma = measured_over_linear(redshift=0.0, seeds=[0, 1])
    assert 1 - 0.06 - 3 * sigma < ratio < 1 + 3 * sigma, (ratio, sigma)


def test_mock_fields_have_mean_one_are_periodic_and_deterministic():
    fieldset = make_mock_set(1, grid=64, box_size=250.0, slab_thickness=4, image_size=32, seed=5, progress=False, method="2lpt")
    assert fieldset.fields.shape == (48, 32, 32) and fieldset.fields.dtype == np.float32
    np.testing.assert_allclose(fieldset.fields.mean(axis=(1, 2)), 1.0, rtol=1e-6)
    assert (fieldset.fields > 0).all()
    scores = seam_score(np.log(fieldset.fields))
    assert 0.85 < np.median(scores) < 1.15
    again = make_mock_set(1, grid=64, box_size=250.0, slab_thickness=4, image_size=32, seed=5, progress=False, method="2lpt")
    np.testing.assert_array_equal(again.fields, fieldset.fields)
    other = make_mock_set(1, grid=64, box_size=250.0, slab_thickness=4, image_size=32, seed=6, progress=False, method="2lpt")
    assert not np.allclose(other.fields, fieldset.fields)


def test_simulations_depend_only_on_seed_and_index_so_splits_are_disjoint():
    both = make_mock_set(2, grid=32, image_size=32, progress=False, method="2lpt")
    second = make_mock_set(1, grid=32, image_size=32, first_sim=1, progress=False, method="2lpt")
    np.testing.assert_array_equal(both.fields[both.sim_index == 1], second.fields)
    assert set(second.sim_index) == {1}


def test_latin_hypercube_draws_one_cosmology_per_simulation_in_quijote_ranges():
    fieldset = make_mock_set(4, grid=32, image_size=32, latin_hypercube=True, progress=False, method="2lpt")
    per_sim = fieldset.params[::len(fieldset) // 4]
    omega_m, sigma_8 = per_sim[:, 0], per_sim[:, 4]
    assert ((0.1 <= omega_m) & (omega_m <= 0.5)).all() and ((0.6 <= sigma_8) & (sigma_8 <= 1.0)).all()
    assert sorted(np.floor((omega_m - 0.1) / 0.1).astype(int)) == [0, 1, 2, 3]  # one per stratum
    assert fieldset.param_names == ["Omega_m", "Omega_b", "h", "n_s", "sigma_8"]


def test_command_line_writes_a_set_load_fields_reads(tmp_path):
    out = tmp_path / "m.npz"
    result = run_in_process([sys.executable, "-m", "cosmodiff.mock", "--out", out, "--n_sims", 2, "--grid", 64], cwd=ROOT)
    assert result.returncode == 0, result.stderr
    fieldset = load_fields(out)
    assert fieldset.fields.shape == (2 * 3 * 16, 64, 64) and fieldset.box_size == 250.0
    np.testing.assert_array_equal(np.unique(np.load(out)["sim_index"]), [0, 1])


def test_particle_mesh_mocks_collapse_further_than_2lpt_from_the_same_initial_conditions():
    lpt = make_mock_set(1, grid=32, box_size=250.0, image_size=32, slab_thickness=2, progress=False, method="2lpt")
    pm = make_mock_set(1, grid=32, box_size=250.0, image_size=32, slab_thickness=2, progress=False, method="pm",
                       pm_steps=5)
    assert pm.fields.shape == lpt.fields.shape and np.isfinite(pm.fields).all() and (pm.fields >= 0).all()
    assert pm.fields.std() > 1.05 * lpt.fields.std() and pm.fields.max() > lpt.fields.max()
    large_scales = [block_average(fields, 8).ravel() for fields in (lpt.fields, pm.fields)]
    assert np.corrcoef(*large_scales)[0, 1] > 0.8  # the same phases: gravity moved the same structures


def test_mock_validation_renders_slabs_as_the_quijote_pngs_and_recovers_their_scale(tmp_path):
    from PIL import Image

    validation = runpy.run_path(str(ROOT / "benchmarks" / "mock_validation.py"))
    fields = np.exp(np.random.default_rng(0).normal(0, 1.2, (2, 32, 32)))
    fields /= fields.mean()
    scale = 0.06
    for index, field in enumerate(fields):  # as the shared Quijote slices were made: cmap(x, bytes=True), RGBA PNG
        rgba = matplotlib.colormaps["gnuplot"](np.clip(scale * field, 0, 1), bytes=True)
        Image.fromarray(rgba, "RGBA").save(tmp_path / f"{index}_mean_density.png")
    read_back = load_fields(tmp_path, colormap="gnuplot").fields
    rendered = validation["rendered_as_png"](fields, scale)
    assert np.array_equal(rendered, read_back)
    recovered = validation["png_scale"](fields, rendered.mean())
    assert abs(recovered / scale - 1) < 1e-3
    levels = validation["level_statistics"](rendered)
    assert np.isclose(sum(levels["level_fraction"]), 1)
    assert levels["clipped_fraction"] == np.mean(scale * fields >= 255 / 256)  # the top entry
    assert abs(levels["quantiles"]["0.5"] - np.median(fields) * scale / rendered.mean()) < 1 / 255 / rendered.mean()


def test_simulations_run_by_several_workers_give_the_fields_of_one():
    options = dict(grid=32, image_size=32, latin_hypercube=True, seed=5, first_sim=1, progress=False, slabs_per_sim=4)
    one, two = make_mock_set(3, **options), make_mock_set(3, workers=2, **options)
    np.testing.assert_array_equal(one.fields, two.fields)
    np.testing.assert_array_equal(one.params, two.params)
    np.testing.assert_array_equal(one.sim_index, [1] * 4 + [2] * 4 + [3] * 4)


def test_the_npe_split_reads_the_conditional_simulations_and_numbers_its_own_after_them(tmp_path, monkeypatch):
    from functools import partial

    from cosmodiff import mock
    from cosmodiff.fields import save_fields

    small = partial(make_mock_set, grid=16, image_size=16)
    conditional = small(2, seed=1, latin_hypercube=True, method="pm", slabs_per_sim=2, progress=False)
    save_fields(tmp_path / "train.npz", conditional)
    monkeypatch.setitem(mock.SPLIT_FOLDERS, "conditional-nonlinear", tmp_path)
    monkeypatch.setattr(mock, "make_mock_set", small)
    monkeypatch.setattr(mock, "CONDITIONAL_NONLINEAR_SIMS", 2)
    monkeypatch.setattr(mock, "CONDITIONAL_NONLINEAR_SLABS", 2)
    monkeypatch.setattr(mock, "NPE_NONLINEAR_SIMS", 5)
    fieldset = mock.npe_train_set()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["train.npz"]  # no other conditional file is made
    np.testing.assert_array_equal(fieldset.fields[:4], conditional.fields)
    assert list(fieldset.sim_index) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    own = small(3, seed=mock.NPE_NONLINEAR_SEED, latin_hypercube=True, first_sim=2, method="pm", slabs_per_sim=2,
                progress=False)
    np.testing.assert_array_equal(fieldset.fields[4:], own.fields)
    assert mock.NPE_NONLINEAR_SEED not in {mock.DEFAULT_SEED, mock.CONDITIONAL_SEED, *mock.INFERENCE_SEEDS.values()}
    assert len({tuple(row) for row in fieldset.params[::2, [0, 4]]}) == 5


def test_the_holdout_split_has_its_own_latin_hypercube_and_several_simulations_per_point(monkeypatch):
    from functools import partial

    from cosmodiff import mock
    from cosmodiff.parameters import LATIN_HYPERCUBE_RANGES

    monkeypatch.setattr(mock, "make_mock_set", partial(make_mock_set, grid=16, image_size=16, progress=False))
    monkeypatch.setattr(mock, "HOLDOUT_POINTS", 5)
    monkeypatch.setattr(mock, "CONDITIONAL_NONLINEAR_SLABS", 2)
    fieldset = mock.SPLITS["conditional-nonlinear-holdout"]["test"]()
    per_point = mock.CONDITIONAL_SIMS_PER_POINT
    assert list(fieldset.sim_index) == [sim for sim in range(5 * per_point) for _ in range(2)]
    names = fieldset.param_names
    points = fieldset.params[:, [names.index("Omega_m"), names.index("sigma_8")]]
    by_simulation = points[::2]
    for point in range(5):  # the same cosmology for each of a point's simulations, another at the next point
        assert np.ptp(by_simulation[point * per_point:(point + 1) * per_point], axis=0).max() == 0
    distinct = by_simulation[::per_point]
    for column, (low, high) in enumerate(LATIN_HYPERCUBE_RANGES.values()):  # one point in each fifth of each range
        assert sorted(np.floor((distinct[:, column] - low) / (high - low) * 5).astype(int)) == [0, 1, 2, 3, 4]
    assert mock.HOLDOUT_SEED not in {mock.DEFAULT_SEED, mock.CONDITIONAL_SEED, mock.NPE_NONLINEAR_SEED,
                                     mock.FLOOR_CHECK_SEED, *mock.INFERENCE_SEEDS.values()}


def test_the_command_line_runs_one_simulation_on_one_thread(tmp_path):
    import subprocess

    code = ("import torch; from cosmodiff.mock import __main__ as mock; torch.set_num_threads(2); "
            f"mock.main(['--out', r'{tmp_path / 'one.npz'}', '--n_sims', '1', '--grid', '16', '--image_size', '16', "
            "'--workers', '1']); print(torch.get_num_threads())")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={key: value for key, value in __import__("os").environ.items() if key != "COSMODIFF_THREADS"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "1" and len(load_fields(tmp_path / "one.npz")) == 12


def test_a_data_path_naming_a_split_folder_makes_the_split_there_on_first_use(tmp_path, monkeypatch):
    from cosmodiff import data, mock
    from cosmodiff.fields import FieldError

    small = make_mock_set(1, grid=16, image_size=16, progress=False, method="2lpt")
    folder = tmp_path / "tiny-split"
    monkeypatch.setattr(data, "DATA_FOLDER", tmp_path)
    monkeypatch.setitem(mock.SPLITS, "tiny-split", {"train": lambda workers: small, "test": lambda workers: small})
    monkeypatch.setitem(mock.SPLIT_FOLDERS, "tiny-split", folder)
    fieldset = data.open_data(folder)
    assert sorted(path.name for path in folder.iterdir()) == ["test.npz", "train.npz"]
    np.testing.assert_allclose(fieldset.fields, small.fields, rtol=1e-6)
    monkeypatch.setattr(data, "DATA_FOLDER", tmp_path / "elsewhere")  # outside the data folder nothing is made
    with pytest.raises(FieldError):
        data.open_data(tmp_path / "missing")
    assert not (tmp_path / "missing").exists()
