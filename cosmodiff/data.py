"""The one entry point from a data path to a field set: a named split's folder (made on first use),
a folder holding a split's .npz files, a shard set (cosmodiff.prepare), or any file or folder
cosmodiff.fields reads; with parameters joined from a table and fields fitted to the model's size."""
from pathlib import Path

from cosmodiff.condition import join_params
from cosmodiff.fields import DEFAULT_MESH, fit_image_size, load_fields
from cosmodiff.repository import DATA_FOLDER
from cosmodiff.shards import is_shard_set, open_shards


def split_file(path, file="train"):
    """The file a data path means: a split folder's <file>.npz (the default splits made first), else
    the path itself."""
    path = Path(path)
    resolved = path.resolve()
    if resolved.is_relative_to(DATA_FOLDER.resolve()):
        from cosmodiff import mock  # the N-body code loads only where the repository's own splits may be made

        for name, folder in mock.SPLIT_FOLDERS.items():
            if resolved == folder:
                mock.ensure_split(path, name)
    return path / f"{file}.npz" if (path / f"{file}.npz").exists() else path


def open_data(path, image_size=None, file="train", colormap=None, slab_thickness=None, box_size=None,
              mesh=DEFAULT_MESH, params_file=None):
    """A field set with its box size (Mpc/h) and parameters from any data path (split_file's <file> of a
    split folder): a shard set is streamed from disk, anything else loaded; params_file joins each
    simulation's parameters (Quijote's latin_hypercube_params.txt); image_size block-averages larger
    fields to it. colormap, slab_thickness and mesh are how PNGs, cubes and snapshots are read."""
    path = split_file(path, file)
    if is_shard_set(path):
        fieldset = open_shards(path, box_size=box_size)
    else:
        fieldset = load_fields(path, colormap=colormap, slab_thickness=slab_thickness, box_size=box_size, mesh=mesh)
    if params_file:
        fieldset = join_params(fieldset, params_file)
    return fit_image_size(fieldset, image_size) if image_size else fieldset
