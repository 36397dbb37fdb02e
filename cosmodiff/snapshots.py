"""Gadget HDF5 snapshots (Quijote's `snapdir_XXX/snap_XXX.N.hdf5`) as 3D density cubes.

The dark-matter particles (PartType1) are painted with cloud-in-cell on a periodic mesh in Pylians'
MA convention, the one Quijote's df_m cubes were made with: node i sits at x = i L / mesh and a
particle shares its mass with the 8 nodes around it by the volume overlap. The cube then becomes 2D
fields like any density cube (fields.cube_to_slabs).

Pylians' MAS_library is the reference but needs a compiled build; this vectorised version (np.bincount
per corner, particles in chunks so memory stays bounded for 512^3 particles) is tested against a
particle-by-particle loop and analytic placements instead.
"""
import itertools
import re
from pathlib import Path

import numpy as np

SNAPSHOT_PART = re.compile(r"^(?P<stem>.+)\.(?P<part>\d+)\.(hdf5|h5)$")
KPC_IN_CM = 3.085678e21  # Gadget's default length unit, kpc/h (Quijote's)
CHUNK = 2 ** 21  # particles read and painted at a time


def is_later_part(path):
    """True for part N > 0 of a multi-file snapshot: read with part 0, never alone."""
    match = SNAPSHOT_PART.match(Path(path).name)
    return bool(match) and int(match["part"]) > 0


def snapshot_parts(path):
    """All files of the snapshot a file belongs to, in part order (one file for a single-file snapshot)."""
    path = Path(path)
    match = SNAPSHOT_PART.match(path.name)
    if not match:
        return [path]
    parts = [p for p in path.parent.iterdir() if (m := SNAPSHOT_PART.match(p.name)) and m["stem"] == match["stem"]]
    return sorted(parts, key=lambda p: int(SNAPSHOT_PART.match(p.name)["part"]))


def cic_paint(positions, box_size, mesh, grid=None):
    """Add particles (N, 3) in the box's units to a periodic (mesh, mesh, mesh) float64 cube by CIC
    (a new one when grid is None); callers with many particles pass them in chunks."""
    grid = np.zeros(mesh ** 3) if grid is None else grid.reshape(-1)
    scaled = np.asarray(positions, np.float64) * (mesh / box_size)
    lower = np.floor(scaled)
    upper_weight = scaled - lower
    lower = lower.astype(np.int64) % mesh
    for corner in itertools.product((0, 1), repeat=3):
        weight = np.prod([upper_weight[:, a] if c else 1 - upper_weight[:, a] for a, c in enumerate(corner)], axis=0)
        index = (lower + corner) % mesh
        grid += np.bincount((index[:, 0] * mesh + index[:, 1]) * mesh + index[:, 2], weights=weight, minlength=mesh ** 3)
    return grid.reshape(mesh, mesh, mesh)


def read_snapshot(path, mesh):
    """The CIC density cube (mesh^3, particles per node) of a Gadget HDF5 snapshot and its box size in
    Mpc/h; raises FieldError naming the file for anything that is not one."""
    import h5py

    from cosmodiff.fields import FieldError

    grid, box_size = np.zeros(mesh ** 3), None
    for part in snapshot_parts(path):
        try:
            with h5py.File(part, "r") as snapshot:
                if "Header" not in snapshot or "PartType1/Coordinates" not in snapshot:
                    raise FieldError(f"{part}: not a Gadget snapshot (no Header or PartType1/Coordinates)")
                header = dict(snapshot["Header"].attrs)
                to_mpc = float(np.ravel(header.get("UnitLength_in_cm", KPC_IN_CM))[0]) / (1000 * KPC_IN_CM)
                box_size = float(np.ravel(header["BoxSize"])[0]) * to_mpc
                positions = snapshot["PartType1/Coordinates"]
                for start in range(0, len(positions), CHUNK):
                    cic_paint(positions[start:start + CHUNK] * to_mpc, box_size, mesh, grid)
        except OSError as error:
            raise FieldError(f"{part}: cannot read the HDF5 file (corrupt or truncated: {error})") from None
        except KeyError as error:
            raise FieldError(f"{part}: the snapshot header lacks {error}") from None
    return grid.reshape(mesh, mesh, mesh), box_size
