"""Gadget HDF5 snapshots (Quijote's `snapdir_XXX/snap_XXX.N.hdf5`) as 3D density cubes.

The dark-matter particles (PartType1) are painted with cloud-in-cell on a periodic mesh in Pylians'
MA convention, the one Quijote's df_m cubes were made with: node i sits at x = i L / mesh and a
particle shares its mass with the 8 nodes around it by the volume overlap. The cube then becomes 2D
fields like any density cube (fields.cube_to_slabs).

Pylians' MAS_library is the reference but needs a compiled build; the package's CIC painter
(cosmodiff.nbody, particles in chunks so memory stays bounded for 512^3 particles) is tested against
a particle-by-particle loop and analytic placements instead.
"""
import re
from pathlib import Path

import numpy as np
import torch

from cosmodiff.errors import FieldError
from cosmodiff.nbody import cic_weights, deposit

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


def read_snapshot(path, mesh):
    """The CIC density cube (mesh^3, particles per node) of a Gadget HDF5 snapshot and its box size in
    Mpc/h; raises FieldError naming the file for anything that is not one."""
    import h5py

    counts, box_size = torch.zeros(mesh ** 3, dtype=torch.float64), None
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
                    chunk = torch.from_numpy(np.asarray(positions[start:start + CHUNK], np.float64).T * to_mpc)
                    deposit(cic_weights(chunk, mesh, box_size), counts)
        except OSError as error:
            raise FieldError(f"{part}: cannot read the HDF5 file (corrupt or truncated: {error})") from None
        except KeyError as error:
            raise FieldError(f"{part}: the snapshot header lacks {error}") from None
    return counts.view(mesh, mesh, mesh).numpy(), box_size
