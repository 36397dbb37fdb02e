"""Convert any field set load_fields reads (PNG folders, stacks, density cubes, Gadget snapshots, a
Quijote LH/<index>/ tree) into a shard set that training streams from disk (cosmodiff.shards).

    python -m cosmodiff.prepare SRC --out DIR [--shard_size 4096] [--slab_thickness K] [--mesh 256] \
        [--colormap NAME] [--box_size L] [--params_file latin_hypercube_params.txt]

Sources (files, or snapshots) are read and validated one at a time and written in shards of at least
--shard_size fields, each holding whole sources, so memory holds about one shard. index.json lists
complete shards only: run the same command again after a kill and it goes on from the first source
no shard holds. Then `accelerate launch train.py --data_path DIR`.
"""
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cosmodiff.checkpoint import output_lock
from cosmodiff.atomic import writable_folder
from cosmodiff.condition import join_params, simulation_of
from cosmodiff.fields import DEFAULT_MESH, FieldError, field_files, load_fields
from cosmodiff.shards import FORMAT, is_shard_set, read_index, write_index, write_shard


def sources_of(src):
    """The files to convert, one source each (a multi-file snapshot by its part 0)."""
    src = Path(src)
    if not src.exists():
        raise FieldError(f"{src}: no such file or folder")
    return [file.resolve() for file in (field_files(src) if src.is_dir() else [src])]


def simulations(fieldset):
    """Each field's simulation index: the set's own, else its Quijote folder's, else -1."""
    if fieldset.sim_index is not None:
        return np.asarray(fieldset.sim_index)
    return np.array([-1 if (sim := simulation_of(source)) is None else sim for source in fieldset.sources])


def describe(fieldset):
    """What every source of one shard set must share."""
    return dict(image_size=fieldset.image_size, box_size=None if fieldset.box_size_assumed else fieldset.box_size,
                param_names=fieldset.param_names)


def prepare(src, out, shard_size=4096, colormap=None, slab_thickness=None, box_size=None, mesh=DEFAULT_MESH,
            params_file=None):
    """The field set src (any load_fields reads) as a shard set in the folder out, about shard_size
    fields a shard; resumes a conversion made with the same settings. colormap, slab_thickness,
    box_size and mesh read the sources as load_fields does; params_file joins their parameters."""
    out = Path(out)
    writable_folder(out, "out")
    settings = dict(source=str(Path(src).resolve()), slab_thickness=slab_thickness, mesh=mesh, colormap=colormap,
                    box_size=box_size, params_file=params_file and str(Path(params_file).resolve()))
    sources = sources_of(src)
    index = read_index(out) if is_shard_set(out) else dict(format=FORMAT, settings=settings, shards=[])
    if index.get("settings") != settings:
        raise FieldError(f"{out}: holds a conversion made with other settings ({index.get('settings')}); "
                         "give another --out")
    with output_lock(out, "conversion"):
        convert(out, index, sources, shard_size, dict(colormap=colormap, slab_thickness=slab_thickness,
                                                     box_size=box_size, mesh=mesh), params_file)


def convert(out, index, sources, shard_size, reading, params_file):
    """The sources not yet in the shard set at out, converted shard by shard (each committed to the
    index); reading: load_fields' options."""
    done = {name for shard in index["shards"] for name, _ in shard["sources"]}
    pending = []

    def flush():
        fields = np.concatenate([fieldset.fields for _, fieldset in pending])
        params = None if not index["param_names"] else np.concatenate([f.params for _, f in pending])
        index["shards"].append(write_shard(out, len(index["shards"]), fields, [(s, len(f)) for s, f in pending],
                                           params, np.concatenate([simulations(f) for _, f in pending])))
        write_index(out, index)
        pending.clear()

    for source in tqdm(sources, desc="prepare", unit="source"):
        if str(source) in done:
            continue
        fieldset = load_fields(source, **reading)
        if params_file:
            fieldset = join_params(fieldset, params_file)
        shared = describe(fieldset)
        index.update({key: value for key, value in shared.items() if key not in index})
        expected = {key: index[key] for key in shared}
        if expected != shared:
            raise FieldError(f"{source}: its fields ({shared}) differ from the set's ({expected}); a shard set has "
                             "one field side, box size and parameter list")
        pending.append((str(source), fieldset))
        if sum(len(f) for _, f in pending) >= shard_size:
            flush()
    if pending:
        flush()
    total = sum(shard["n_fields"] for shard in index["shards"])
    print(f"{out}: {total} fields of {index['image_size']}x{index['image_size']} in {len(index['shards'])} shards "
          f"from {len(sources)} sources; train with `accelerate launch train.py --data_path {out}`")
