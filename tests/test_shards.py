"""Shard sets: cosmodiff.prepare converts any field set, resumes after a kill, and training streams
the shards to the same losses as the fields held in memory."""
import json
import sys

import numpy as np
import pytest

from conftest import losses, run_in_process, train_command
from cosmodiff.condition import join_params
from cosmodiff.fields import FieldError, load_fields
from cosmodiff.loader import StepBatches
from cosmodiff.shards import open_shards


def prepare(src, out, *args):
    return run_in_process([sys.executable, "-m", "cosmodiff.prepare", str(src), "--out", str(out), *map(str, args)])


@pytest.fixture
def quijote_tree(tmp_path):
    """Quijote's layout: LH/<index>/ with a stack of 32x32 fields per simulation, and the parameter table."""
    rng = np.random.default_rng(0)
    for sim in range(5):
        (tmp_path / "LH" / str(sim)).mkdir(parents=True)
        np.save(tmp_path / "LH" / str(sim) / "fields.npy", rng.lognormal(0, 0.5, (3 + sim, 32, 32)).astype(np.float32))
    (tmp_path / "params.txt").write_text("".join(f"{0.1 + 0.05 * s} 0.05 0.7 0.96 {0.6 + 0.1 * s}\n" for s in range(5)))
    return tmp_path


def test_prepare_writes_the_field_set_as_shards_and_resumes_after_a_kill(quijote_tree):
    tree = quijote_tree
    result = prepare(tree / "LH", tree / "shards", "--shard_size", "8", "--params_file", tree / "params.txt")
    assert result.returncode == 0, result.stderr
    index = json.loads((tree / "shards" / "index.json").read_text())
    assert [shard["n_fields"] for shard in index["shards"]] == [3 + 4 + 5, 6 + 7]  # whole sources, >= 8 each
    shards = open_shards(tree / "shards")
    expected = join_params(load_fields(tree / "LH"), tree / "params.txt")
    np.testing.assert_array_equal(shards.fields[np.arange(len(expected))], expected.fields)
    np.testing.assert_array_equal(shards.params, expected.params)
    assert shards.sim_index.tolist() == expected.sim_index.tolist() and shards.param_names == expected.param_names
    assert list(shards.sources) == expected.sources  # tmp_path is already a resolved path
    assert shards.fields.shape == (25, 32, 32) and shards.fields[24].shape == (32, 32)

    killed = dict(index, shards=index["shards"][:1])  # as after a kill between the two shards
    (tree / "resumed").mkdir()
    (tree / "resumed" / "index.json").write_text(json.dumps(killed))
    for name in ("shard-00000.npy", "shard-00000.meta.npz"):
        (tree / "resumed" / name).write_bytes((tree / "shards" / name).read_bytes())
    (tree / "resumed" / "shard-00001.tmp.npy").write_bytes(b"half a shard")
    (tree / "LH" / "0" / "fields.npy").unlink()  # the first shard's sources are not read again
    result = prepare(tree / "LH", tree / "resumed", "--shard_size", "8", "--params_file", tree / "params.txt")
    assert result.returncode == 0, result.stderr
    resumed = open_shards(tree / "resumed")
    np.testing.assert_array_equal(resumed.fields[np.arange(25)], shards.fields[np.arange(25)])
    assert json.loads((tree / "resumed" / "index.json").read_text())["shards"] == index["shards"]


def test_prepare_refuses_other_settings_and_mixed_fields(quijote_tree):
    tree = quijote_tree
    assert prepare(tree / "LH", tree / "shards").returncode == 0
    result = prepare(tree / "LH", tree / "shards", "--box_size", "500")
    assert result.returncode == 2 and "holds a conversion made with other settings" in result.stderr
    np.save(tree / "LH" / "4" / "fields.npy", np.ones((2, 16, 16), np.float32))
    result = prepare(tree / "LH", tree / "mixed")
    assert result.returncode == 2 and "LH/4/fields.npy: its fields" in result.stderr and "differ from the set's" in result.stderr
    with pytest.raises(FieldError, match="no such file or folder"):
        from cosmodiff.prepare import sources_of
        sources_of(tree / "nowhere")


def test_training_streams_shards_to_the_losses_of_fields_in_memory(quijote_tree):
    tree = quijote_tree
    assert prepare(tree / "LH", tree / "shards", "--shard_size", "4").returncode == 0
    for name, data, workers in (("memory", tree / "LH", "0"), ("streamed", tree / "shards", "2")):
        result = run_in_process(train_command(data, tree / "results", "--train_steps", "3", "--run_name", name,
                                              "--num_workers", workers, "--val_samples", "0"))
        assert result.returncode == 0, result.stderr
    assert losses(tree / "results" / "streamed") == losses(tree / "results" / "memory")
    config = json.loads((tree / "results" / "streamed" / "config.json").read_text())
    assert config["data"]["n_fields"] == 25


def test_step_batches_are_the_global_batch_split_over_processes_and_keyed_by_step():
    one = iter(StepBatches(100, 8, seed=3))
    halves = [iter(StepBatches(100, 8, seed=3, rank=rank, world_size=2)) for rank in (0, 1)]
    for _ in range(3):
        assert next(one) == next(halves[0]) + next(halves[1])
    later = iter(StepBatches(100, 8, seed=3, start=2))
    fresh = iter(StepBatches(100, 8, seed=3))
    next(fresh), next(fresh)
    assert next(later) == next(fresh) and next(later) != next(iter(StepBatches(100, 8, seed=4, start=3)))
