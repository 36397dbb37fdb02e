"""Gadget HDF5 snapshots: CIC painting against a particle-by-particle reference and analytic
placements, Quijote's multi-file layout, the parameter join and training on them."""

import h5py
import numpy as np
import pytest
import torch

from conftest import run_in_process, train_command
from cosmodiff.condition import join_params
from cosmodiff.fields import FieldError, load_fields
from cosmodiff.nbody import cic_weights, deposit
from cosmodiff.snapshots import read_snapshot


def cic_paint(positions, box_size, mesh):
    """The package's CIC painter on particles (N, 3): particles per node, (mesh, mesh, mesh)."""
    pairs = cic_weights(torch.from_numpy(positions.T.copy()), mesh, box_size)
    return deposit(pairs, torch.zeros(mesh ** 3, dtype=torch.float64)).view(mesh, mesh, mesh).numpy()


def loop_cic(positions, box_size, mesh):
    """CIC one particle at a time, as Pylians' MA: node i at x = i L / mesh, periodic."""
    grid = np.zeros((mesh, mesh, mesh))
    cell = box_size / mesh
    for x, y, z in positions:
        i, j, k = int(x // cell), int(y // cell), int(z // cell)
        u, v, w = x / cell - i, y / cell - j, z / cell - k
        for di, wi in ((0, 1 - u), (1, u)):
            for dj, wj in ((0, 1 - v), (1, v)):
                for dk, wk in ((0, 1 - w), (1, w)):
                    grid[(i + di) % mesh, (j + dj) % mesh, (k + dk) % mesh] += wi * wj * wk
    return grid


def test_cic_matches_the_particle_loop_and_analytic_placements():
    rng = np.random.default_rng(0)
    positions = rng.uniform(0, 50.0, (300, 3))
    positions[:5, 0] = 50.0 - 1e-6  # at the far edge: shares with node 0
    np.testing.assert_allclose(cic_paint(positions, 50.0, 8), loop_cic(positions, 50.0, 8), rtol=1e-10, atol=1e-12)
    on_node = cic_paint(np.array([[2 * 6.25, 6.25, 0.0]]), 50.0, 8)
    assert on_node[2, 1, 0] == 1.0 and on_node.sum() == 1.0
    wrapped = cic_paint(np.array([[50.0 - 6.25 / 4, 0.0, 0.0]]), 50.0, 8)
    assert wrapped[7, 0, 0] == pytest.approx(0.25) and wrapped[0, 0, 0] == pytest.approx(0.75)


def write_snapshot(folder, positions_kpc, box_kpc, parts=2):
    """A Gadget HDF5 snapshot in Quijote's layout (snap_004.N.hdf5, kpc/h), split over parts files."""
    folder.mkdir(parents=True)
    for part, chunk in enumerate(np.array_split(positions_kpc, parts)):
        with h5py.File(folder / f"snap_004.{part}.hdf5", "w") as snapshot:
            header = snapshot.create_group("Header")
            header.attrs.update(BoxSize=box_kpc, NumFilesPerSnapshot=parts, Redshift=0.0,
                                NumPart_ThisFile=np.array([0, len(chunk), 0, 0, 0, 0]))
            snapshot.create_dataset("PartType1/Coordinates", data=chunk.astype(np.float32))


def test_quijote_snapshot_folders_become_fields_with_box_and_parameters(tmp_path):
    rng = np.random.default_rng(1)
    positions = [rng.uniform(0, 1e5, (6000, 3)) for _ in range(2)]
    for sim, pos in enumerate(positions):
        write_snapshot(tmp_path / "LH" / str(sim) / "snapdir_004", pos, 1e5)
    cube, box_size = read_snapshot(tmp_path / "LH" / "0" / "snapdir_004" / "snap_004.0.hdf5", mesh=32)
    assert box_size == pytest.approx(100.0) and cube.sum() == pytest.approx(6000)
    np.testing.assert_allclose(cube, loop_cic(positions[0].astype(np.float32) / 1e3, 100.0, 32), rtol=1e-5, atol=1e-5)

    fields = load_fields(tmp_path / "LH", slab_thickness=8, mesh=32)
    assert fields.fields.shape == (2 * 3 * 4, 32, 32) and fields.box_size == pytest.approx(100.0)
    assert not fields.box_size_assumed and len({s.split("[")[0] for s in fields.sources}) == 2
    np.testing.assert_allclose(fields.fields[0], cube[:8].mean(axis=0), rtol=1e-5)
    (tmp_path / "params.txt").write_text("# Omega_m Omega_b h n_s sigma_8\n0.2 0.05 0.7 0.96 0.7\n0.4 0.04 0.6 0.9 0.9\n")
    joined = join_params(fields, tmp_path / "params.txt")
    assert joined.params[:, [0, 4]].tolist() == [[0.2, 0.7]] * 12 + [[0.4, 0.9]] * 12

    result = run_in_process(train_command(tmp_path / "LH", tmp_path / "results", "--slab_thickness", "8", "--mesh", "32",
                                          "--params_file", tmp_path / "params.txt", "--condition", "Omega_m,sigma_8",
                                          "--train_steps", "2", "--run_name", "run"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "results" / "run" / "model.safetensors").exists()


def test_bad_snapshots_are_one_clear_sentence(tmp_path):
    write_snapshot(tmp_path / "snapdir_004", np.zeros((10, 3)), 1e5, parts=1)
    snapshot = tmp_path / "snapdir_004" / "snap_004.0.hdf5"
    with pytest.raises(FieldError, match="snap_004.0.hdf5: is a particle snapshot; pass slab_thickness"):
        load_fields(snapshot)
    with h5py.File(tmp_path / "other.hdf5", "w") as other:
        other.create_dataset("x", data=np.zeros(3))
    with pytest.raises(FieldError, match="other.hdf5: not a Gadget snapshot"):
        load_fields(tmp_path / "other.hdf5", slab_thickness=4, mesh=16)
    (tmp_path / "broken.hdf5").write_bytes(snapshot.read_bytes()[:300])
    with pytest.raises(FieldError, match="broken.hdf5: cannot read the HDF5 file"):
        load_fields(tmp_path / "broken.hdf5", slab_thickness=4, mesh=16)
