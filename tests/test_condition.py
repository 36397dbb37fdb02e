"""Conditioning on cosmology: parameter parsing and tables, the join to simulations, conditional
networks and guidance, the conditional data set, and train/generate with a condition end to end."""
import json
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT, run_in_process, train_command
from cosmodiff.condition import DEFAULT_GUIDANCE, Condition, join_params, parse_params, read_params_table
from cosmodiff.diffusion import build_formulation, sample
from cosmodiff.fields import FieldError, FieldSet, load_fields, save_fields
from cosmodiff.mock import QUIJOTE_FIDUCIAL, conditional_test_points, make_mock_set
from cosmodiff.models import build_model, model_kwargs

GENERATE = str(ROOT / "UNet-DDPM" / "generate_images.py")


def test_params_parse_and_their_errors():
    names, values = parse_params("Omega_m=0.3, sigma_8=0.8")
    assert names == ["Omega_m", "sigma_8"] and values.tolist() == [[0.3, 0.8]]
    for text, message in [("Omega_m:0.3", "'Omega_m:0.3' is not NAME=VALUE"), ("Omega_m=abc", "'abc' is not a number"),
                          ("Omega_m=0.3,Omega_m=0.2", "Omega_m is given twice"), ("", "--params is empty")]:
        with pytest.raises(ValueError, match=message):
            parse_params(text)


def test_params_tables_with_a_header_or_quijotes_columns(tmp_path):
    (tmp_path / "points.txt").write_text("# sigma_8 Omega_m\n0.8 0.3\n0.9 0.2\n")
    names, values = read_params_table(tmp_path / "points.txt")
    assert names == ["sigma_8", "Omega_m"] and values.tolist() == [[0.8, 0.3], [0.9, 0.2]]
    (tmp_path / "latin_hypercube_params.txt").write_text("0.1755 0.06681 0.7737 0.8849 0.6641\n"
                                                         "0.2139 0.05557 0.8599 0.9785 0.8619\n")
    names, values = read_params_table(tmp_path / "latin_hypercube_params.txt")
    assert names == ["Omega_m", "Omega_b", "h", "n_s", "sigma_8"] and values[1, 4] == 0.8619
    (tmp_path / "short.txt").write_text("0.3 0.8\n")
    with pytest.raises(FieldError, match="short.txt: every row must hold 5 values"):
        read_params_table(tmp_path / "short.txt")
    with pytest.raises(FieldError, match="no such parameter table"):
        read_params_table(tmp_path / "absent.txt")


def test_params_file_joins_quijote_simulation_folders_to_their_rows(tmp_path):
    """Quijote's layout: LH/<simulation index>/fields, latin_hypercube_params.txt row i = simulation i."""
    table = np.array([[0.1 + 0.1 * i, 0.049, 0.67, 0.96, 0.6 + 0.1 * i] for i in range(3)])
    np.savetxt(tmp_path / "latin_hypercube_params.txt", table)
    for sim, count in [(2, 3), (0, 1)]:
        (tmp_path / "LH" / str(sim)).mkdir(parents=True)
        np.save(tmp_path / "LH" / str(sim) / "fields.npy", np.ones((count, 16, 16), np.float32))
    joined = join_params(load_fields(tmp_path / "LH"), tmp_path / "latin_hypercube_params.txt")
    assert joined.sim_index.tolist() == [0, 2, 2, 2]
    np.testing.assert_allclose(joined.params[:, 4], [0.6, 0.8, 0.8, 0.8])
    np.testing.assert_allclose(joined.params[:, 0], [0.1, 0.3, 0.3, 0.3])
    with pytest.raises(FieldError, match="has 1 rows but the data holds simulation 2"):
        np.savetxt(tmp_path / "one.txt", table[:1])
        join_params(load_fields(tmp_path / "LH"), tmp_path / "one.txt")
    np.save(tmp_path / "loose.npy", np.ones((2, 16, 16), np.float32))
    with pytest.raises(FieldError, match="loose.npy.*cannot tell which simulation"):
        join_params(load_fields(tmp_path / "loose.npy"), tmp_path / "latin_hypercube_params.txt")


def fields_with(params, names):
    return FieldSet(fields=np.ones((len(params), 16, 16), np.float32), params=np.asarray(params, float),
                    param_names=names)


def test_condition_is_standardised_on_the_training_set_and_checks_points():
    condition = Condition.fit(fields_with([[0.1, 0.6, 1.0], [0.5, 1.0, 1.0]], ["Omega_m", "sigma_8", "h"]),
                              ["Omega_m", "sigma_8"])
    assert condition.mean == pytest.approx([0.3, 0.8]) and condition.std == pytest.approx([0.2, 0.2])
    torch.testing.assert_close(condition.standardise([[0.5, 0.6]]), torch.tensor([[1.0, -1.0]]))
    points = condition.points(["sigma_8", "Omega_m"], [[0.7, 0.2]], "--params")
    assert points.tolist() == [[0.2, 0.7]]
    with pytest.raises(ValueError, match="--params: unknown w0; missing sigma_8; the run is conditioned on Omega_m, sigma_8"):
        condition.points(["Omega_m", "w0"], [[0.3, -1]], "--params")
    with pytest.warns(UserWarning, match="Omega_m = 0.7 is outside the training range \\[0.1, 0.5\\]"):
        condition.points(["Omega_m", "sigma_8"], [[0.7, 0.8]], "--params")
    with pytest.raises(FieldError, match="--condition w0: w0 not in the data, which carries Omega_m, sigma_8, h"):
        Condition.fit(fields_with([[0.1, 0.6, 1.0]], ["Omega_m", "sigma_8", "h"]), ["w0"])


@pytest.mark.parametrize("name", ["unet", "dit-xs/4"])
def test_the_condition_changes_the_output_and_nan_rows_are_the_unconditional_one(name):
    torch.manual_seed(0)
    network = build_model(name, dict(model_kwargs(name, 16), cond_dim=2)).eval()
    for parameter in network.parameters():  # a fresh DiT outputs 0 (adaLN-Zero): give it weights
        parameter.data.add_(0.05 * torch.randn_like(parameter))
    x, level = torch.randn(3, 1, 16, 16), torch.tensor([5.0, 50.0, 500.0])
    cond = torch.tensor([[0.0, 1.0], [1.0, 0.0], [float("nan"), float("nan")]])
    with torch.no_grad():
        out, shifted, unconditional = network(x, level, cond), network(x, level, cond + 0.5), network(x, level, None)
    assert (out[:2] - shifted[:2]).abs().amax() > 1e-3
    torch.testing.assert_close(out[2], unconditional[2])
    assert (out[0] - unconditional[0]).abs().amax() > 1e-3
    with pytest.raises(ValueError, match="built without a condition"):
        build_model(name, model_kwargs(name, 16))(x, level, cond)


def test_guidance_one_is_the_conditional_sample_and_zero_the_unconditional():
    torch.manual_seed(0)
    network = build_model("unet", dict(model_kwargs("unet", 16), cond_dim=2)).eval()
    formulation = build_formulation({"formulation": "edm"})
    cond = torch.tensor([[0.5, -0.5], [1.0, 1.0]])

    def draw(**options):
        return sample(formulation, network, (1, 16, 16), [0, 1], 3, (-3, 3), "dpm++", 4, **options)
    plain = draw(cond=cond)
    torch.testing.assert_close(draw(cond=cond, guidance=1.0), plain)
    torch.testing.assert_close(draw(cond=cond, guidance=0.0), draw(cond=None))  # the null condition
    assert (draw(cond=cond, guidance=2.0) - plain).abs().amax() > 1e-4
    with pytest.raises(ValueError, match="guidance needs a condition"):
        draw(guidance=2.0)


def test_conditional_mocks_are_deterministic_for_a_seed_and_carry_their_cosmology():
    def mocks(seed, **options):
        return make_mock_set(2, grid=32, image_size=16, seed=seed, progress=False, method="2lpt", **options)
    first, again, other = mocks(1, latin_hypercube=True), mocks(1, latin_hypercube=True), mocks(2, latin_hypercube=True)
    np.testing.assert_array_equal(first.fields, again.fields)
    np.testing.assert_array_equal(first.params, again.params)
    assert not np.allclose(first.params, other.params)
    omega_m, sigma_8 = first.params[:, 0], first.params[:, 4]
    assert len(set(omega_m)) == 2 and ((0.1 <= omega_m) & (omega_m <= 0.5)).all() and ((0.6 <= sigma_8) & (sigma_8 <= 1)).all()
    point = conditional_test_points()[0]
    placed = mocks(1, cosmologies=[dict(QUIJOTE_FIDUCIAL, **point)] * 2)
    assert placed.params[0, 0] == point["Omega_m"] and placed.params[-1, 4] == point["sigma_8"]
    points = conditional_test_points()
    assert len(points) == 10 and points[-1] == {"Omega_m": 0.3175, "sigma_8": 0.834}
    assert {p["Omega_m"] for p in points[:9]} == {0.14, 0.3, 0.46} and {p["sigma_8"] for p in points[:9]} == {0.64, 0.8, 0.96}


def generate(cwd, *args):
    return run_in_process([sys.executable, GENERATE, *map(str, args)], cwd=cwd)


def test_conditional_training_stores_the_condition(conditional_run):
    config = json.loads((conditional_run / "results" / "run" / "config.json").read_text())
    condition = config["condition"]
    assert condition["names"] == ["Omega_m", "sigma_8"] and config["model"]["kwargs"]["cond_dim"] == 2
    fields = load_fields(conditional_run / "lh.npz")
    assert condition["low"][0] == pytest.approx(fields.params[:, 0].min())
    assert condition["mean"][1] == pytest.approx(fields.params[:, 4].mean())


def test_generate_at_parameter_points_records_every_samples_parameters(conditional_run):
    run = conditional_run / "results" / "run"
    result = generate(conditional_run, "--checkpoint", run, "--num_samples", "2", "--steps", "2",
                      "--params", "Omega_m=0.3,sigma_8=0.8", "--guidance", "1.5", "--out", "one")
    assert result.returncode == 0, result.stderr
    record = json.loads((conditional_run / "one" / "samples.json").read_text())
    assert record["params"] == [[0.3, 0.8]] * 2 and record["guidance"] == 1.5 and record["network_evaluations"] == 4
    (conditional_run / "points.txt").write_text("# sigma_8 Omega_m\n0.7 0.2\n0.9 0.4\n")
    result = generate(conditional_run, "--checkpoint", run, "--num_samples", "2", "--steps", "2", "--params_file",
                      "points.txt", "--out", "many")
    assert result.returncode == 0, result.stderr
    record = json.loads((conditional_run / "many" / "samples.json").read_text())
    assert np.load(conditional_run / "many" / "samples.npy").shape == (4, 32, 32)
    assert record["params"] == [[0.2, 0.7], [0.2, 0.7], [0.4, 0.9], [0.4, 0.9]]
    assert record["guidance"] == DEFAULT_GUIDANCE == 2.0 and record["network_evaluations"] == 4
    assert record["param_names"] == ["Omega_m", "sigma_8"]


def test_conditional_errors(conditional_run, tiny_data, tmp_path):
    run = conditional_run / "results" / "run"
    for args, message in [((), "this run is conditioned on Omega_m, sigma_8: give --params Omega_m=VALUE,sigma_8=VALUE"),
                          (("--params", "Omega_m=0.3,w0=-1"), "unknown w0; missing sigma_8"),
                          (("--params", "Omega_m=0.3,sigma_8=0.8", "--params_file", "x"), "not both")]:
        result = generate(conditional_run, "--checkpoint", run, "--num_samples", "1", "--steps", "2", *args,
                          "--out", tmp_path / "never")
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert not (tmp_path / "never").exists()
    result = generate(conditional_run, "--checkpoint", run, "--num_samples", "1", "--steps", "2", "--params",
                      "Omega_m=0.9,sigma_8=0.8", "--out", tmp_path / "outside")
    assert result.returncode == 0 and "outside the training range" in result.stderr
    result = run_in_process(train_command(tiny_data, tmp_path / "results", "--train_steps", "1", "--condition", "w0"))
    assert result.returncode == 2 and "--condition w0: w0 not in the data, which carries Omega_m" in result.stderr
    assert not (tmp_path / "results").exists()


def test_cosmology_evaluation_per_point_with_response_and_derivatives(conditional_run, tmp_path):
    def at(points, first_sim):
        sets = [make_mock_set(1, grid=32, image_size=32, seed=5, first_sim=first_sim, progress=False,
                              cosmologies=[dict(QUIJOTE_FIDUCIAL, **point)], method="2lpt") for point in points]
        return FieldSet(fields=np.concatenate([s.fields for s in sets]), box_size=sets[0].box_size,
                        params=np.concatenate([s.params for s in sets]), param_names=sets[0].param_names)
    save_fields(tmp_path / "test.npz", at([{"Omega_m": 0.2}, {"Omega_m": 0.3175}], 0))
    save_fields(tmp_path / "derivatives.npz", at([{"Omega_m": 0.2675}, {"Omega_m": 0.3675},
                                                  {"sigma_8": 0.784}, {"sigma_8": 0.884}], 9))
    result = run_in_process([sys.executable, str(ROOT / "evaluate" / "cosmology.py"), str(conditional_run / "results" / "run"),
                             "--test", str(tmp_path / "test.npz"), "--num_samples", "3", "--steps", "2",
                             "--out", str(tmp_path / "out")])
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "out" / "cosmology.json").read_text())
    assert [row["point"] for row in summary["points"]] == [{"Omega_m": 0.2, "sigma_8": 0.834},
                                                          {"Omega_m": 0.3175, "sigma_8": 0.834}]
    assert all(row["n_real"] == 24 and row["n_generated"] == 3 and row["floor"] > 0 for row in summary["points"])
    for row in summary["points"]:  # the scorecard per point: every statistic over its floor, the headline the worst
        assert {"pk_mafd", "bispectrum", "pixel_pdf", "peaks", "pk_correlation"} <= set(row["over_floor"])
        assert row["worst"]["over_floor"] == max(row["over_floor"].values())
        assert row["over_floor"]["pk_mafd"] > 0
    bispectrum = [row["over_floor"]["bispectrum"] for row in summary["points"]]
    assert summary["scorecard"]["bispectrum"] == {"median": pytest.approx(np.median(bispectrum)), "worst": max(bispectrum)}
    assert "| worst / floor |" in (tmp_path / "out" / "cosmology.md").read_text()
    assert set(summary["derivatives"]) == {"Omega_m", "sigma_8"}
    assert summary["derivatives"]["sigma_8"]["step"] == pytest.approx(0.1)
    # the simulations' d ln P / d sigma_8 is linear theory's 2 / sigma_8 on large scales (paired phases)
    derivative = summary["derivatives"]["sigma_8"]
    assert np.median(np.asarray(derivative["real"])[:4]) == pytest.approx(2 / 0.834, rel=0.15)
    assert summary["fisher"] is None  # 3 generated fields per point estimate no covariance of the band's k bins
    assert (tmp_path / "out" / "conditional_response.png").exists() and (tmp_path / "out" / "conditional_derivatives.png").exists()
    unconditional = run_in_process([sys.executable, str(ROOT / "evaluate" / "cosmology.py"), str(tmp_path)])
    assert unconditional.returncode == 2 and "config.json" in unconditional.stderr
