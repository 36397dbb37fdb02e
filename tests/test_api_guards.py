"""The Python API refuses what the command line refuses, in one sentence naming the argument, before
it loads or writes anything; and a run a user trained is never replaced."""
import hashlib
import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import cosmodiff
from cosmodiff.checkpoint import CheckpointError

NO_RUN = "no-such-run"  # the checks come before the run is read: a path that is not there proves it
FAST = settings(max_examples=25, deadline=None)


@FAST
@given(st.integers(max_value=0))
def test_sample_refuses_counts_below_one(count):
    with pytest.raises(ValueError, match=rf"cosmodiff.sample: 'num_samples' is {count}; it must be"):
        cosmodiff.sample(NO_RUN, count)


@FAST
@given(st.one_of(st.floats(max_value=0, exclude_max=True), st.floats(min_value=10, exclude_min=True),
                 st.just(float("nan")), st.just(float("inf"))))
def test_sample_refuses_a_guidance_the_command_line_refuses(guidance):
    # guidance 0 (the unconditional estimate) to 10, as generate_images.py --guidance
    with pytest.raises(ValueError, match="cosmodiff.sample: 'guidance' is .*; it must be"):
        cosmodiff.sample(NO_RUN, 1, params={"Omega_m": 0.3}, guidance=guidance)


@FAST
@given(st.one_of(st.lists(st.floats(0.1, 1.0), min_size=1, max_size=3), st.tuples(st.floats(0.1, 1.0)),
                 st.text(min_size=1)))
def test_sample_refuses_params_that_are_not_a_mapping(params):
    with pytest.raises(ValueError, match="'params' must be a dict of parameter values"):
        cosmodiff.sample(NO_RUN, 1, params=params)


@FAST
@given(st.sampled_from(["..", ".", "", "a/b", "../outside", "a\\b", "/abs"]))
def test_train_refuses_run_names_the_command_line_refuses(tmp_path_factory, name):
    results = tmp_path_factory.mktemp("results")
    with pytest.raises(ValueError, match="'run_name' must be a folder name without a path separator"):
        cosmodiff.train(results / "no-data", results_dir=results, run_name=name)
    assert not any(results.iterdir())


def finite_fields(n=4, size=16, seed=0):
    return np.random.default_rng(seed).lognormal(sigma=0.5, size=(n, size, size))


@FAST
@given(st.integers(0, 3), st.integers(0, 15), st.integers(0, 15), st.sampled_from([np.nan, np.inf, -np.inf, -2.0]))
def test_evaluate_and_posterior_refuse_a_field_that_is_not_a_density(index, row, column, bad):
    fields = finite_fields()
    fields[index, row, column] = bad
    message = "NaN or infinite values" if not np.isfinite(bad) else "values below -1"
    with pytest.raises(ValueError, match=rf"the generated fields \(field {index}\): the field (contains|has) {message}"):
        cosmodiff.evaluate(finite_fields(seed=1), fields, 250.0)
    with pytest.raises(ValueError, match=rf"the real fields \(field {index}\): the field (contains|has) {message}"):
        cosmodiff.evaluate(fields, finite_fields(seed=1), 250.0)
    with pytest.raises(ValueError, match=rf"the posterior's fields \(field {index}\): the field (contains|has) {message}"):
        cosmodiff.posterior(fields, {"checkpoint": NO_RUN})


@pytest.mark.parametrize("arguments, message", [
    (dict(models="run"), "models must be a dict of the kind of model -> its folder"),
    (dict(models={"checkpoint": NO_RUN}, methods="elbo,power_spectrum"), "methods must be a list of method names"),
    (dict(models={"checkpoint": NO_RUN}, methods=["power_spectrum"], n_levels=4), "n_levels would be ignored"),
    (dict(models={"checkpoint": NO_RUN}, walkers=8), "walkers would be ignored.*walkers needs mcmc"),
    (dict(models={"checkpoint": NO_RUN}, indices=[0]),
     "indices picks fields of a data path; select an array's fields by slicing it$"),
    (dict(models={"checkpoint": NO_RUN}, methods=["likelihood", "elbo"]),
     r"^method likelihood,elbo \(--method\): choose from elbo, power_spectrum, npe, npe_power_spectrum \(comma-separated\)$"),
    (dict(models={"diffusion": NO_RUN, "flow": NO_RUN}), "unknown kind of model diffusion, flow; the kinds are"),
    (dict(models={"diffusion": NO_RUN}), "unknown kind of model diffusion; the kinds are checkpoint, npe, "
                                         "npe_power_spectrum"),
    (dict(models={"npe": None}, methods=["power_spectrum"]),
     r"give models\['checkpoint'\] \(--checkpoint\), a conditional diffusion run; models\['npe'\] \(--npe\), a folder "
     r"made by evaluate/train_npe.py; or models\['npe_power_spectrum'\] .*: they fix the parameters and their prior"),
    (dict(models={"npe": None}, methods=["elbo"]), r"method elbo \(--method\) needs models\['checkpoint'\] \(--checkpoint\), a conditional diffusion run"),
])
def test_posterior_refuses_arguments_it_would_ignore_or_cannot_use(arguments, message):
    with pytest.raises(ValueError, match=message):
        cosmodiff.posterior(finite_fields(), **arguments)


def test_posterior_names_the_dict_it_wants_and_reads_fine_always_and_walkers_with_mcmc():
    with pytest.raises(ValueError, match=r"^cosmodiff.posterior: models must be a dict of the kind of model -> its "
                                         r"folder, e.g. \{'checkpoint': RUN\}$"):
        cosmodiff.posterior(finite_fields(), "run")
    for accepted in (dict(fine=41), dict(mcmc=10, walkers=8)):  # read, so they pass to the missing run's error
        with pytest.raises(CheckpointError, match=NO_RUN):
            cosmodiff.posterior(finite_fields(), {"checkpoint": NO_RUN}, **accepted)


def test_posterior_defaults_are_infer_pys():
    import inspect
    import runpy

    from conftest import ROOT

    flags = runpy.run_path(str(ROOT / "evaluate" / "infer.py"))["build_parser"]().parse_args(["fields.npz"])
    defaults = {name: value.default for name, value in inspect.signature(cosmodiff.posterior).parameters.items()}
    assert ",".join(defaults["methods"]) == flags.method
    assert (defaults["grid"], defaults["joint"], defaults["mcmc"]) == (flags.grid, flags.joint, flags.mcmc)


def test_posterior_of_a_path_takes_no_truths(tmp_path):
    with pytest.raises(ValueError, match="carries its own truths; truths goes with an array"):
        cosmodiff.posterior(tmp_path / "fields.npz", {"checkpoint": NO_RUN}, truths=[[0.3, 0.8]])


@pytest.mark.parametrize("shape, message", [((4, 16), "fields must be square"), ((4, 16, 24), "fields must be square"),
                                            ((2, 24, 24), "a power of two >= 16"), ((0, 16, 16), "holds no 2D fields"),
                                            ((2, 2, 16, 16), "holds no 2D fields")])
def test_evaluate_refuses_fields_of_the_wrong_shape(shape, message):
    with pytest.raises(ValueError, match=message):
        cosmodiff.evaluate(finite_fields(), np.ones(shape), 250.0)


@pytest.mark.parametrize("box_size", [0.0, -250.0, float("nan")])
def test_evaluate_refuses_a_box_that_is_not_a_length(box_size):
    with pytest.raises(ValueError, match="cosmodiff.evaluate: 'box_size' is"):
        cosmodiff.evaluate(finite_fields(), finite_fields(seed=1), box_size)


def test_training_again_under_a_run_name_that_holds_a_run_is_refused(tmp_path, tiny_data):
    settings = dict(results_dir=tmp_path, run_name="kept", train_steps=2, image_size=32, batch_size=2,
                    val_samples=0, warmup_steps=1, sampling_timesteps=2)
    run_dir = cosmodiff.train(tiny_data, **settings)
    weights = hashlib.sha256((run_dir / "model.safetensors").read_bytes()).hexdigest()
    with pytest.raises(CheckpointError, match="kept: holds a run already; continue it with --resume"):
        cosmodiff.train(tiny_data, **settings)
    assert hashlib.sha256((run_dir / "model.safetensors").read_bytes()).hexdigest() == weights
    # continued as the message says, with no data path: the run's own data and settings, to the new length
    assert cosmodiff.train(resume=str(run_dir), train_steps=3) == run_dir
    assert json.loads((run_dir / "config.json").read_text())["step"] == 3


def test_each_npe_kind_reads_the_summary_train_npe_makes_it_with():
    from cosmodiff.inference.methods import NPE_SUMMARIES
    # docs/usage.md: --npe is evaluate/train_npe.py's NPE on the field, --npe_power_spectrum its --summary power_spectrum
    assert NPE_SUMMARIES == {"npe": "field", "npe_power_spectrum": "power_spectrum"}
