"""Field sets larger than memory: a folder of memory-mapped .npy shards with an index, read one
field at a time (the training loader is cosmodiff.loader).

A shard set folder holds `index.json` (format, box size, field side, parameter names, and per shard
its file, field count and its sources as [name, fields] runs) and per shard `shard-NNNNN.npy`
(N, H, W) float32 with `shard-NNNNN.meta.npz` (`params` (N, P), `sim_index` (N,), -1 where unknown). A shard holds whole sources, so a
conversion killed between shards resumes at the first source no shard holds (cosmodiff.prepare).
"""
import json
from pathlib import Path

import numpy as np

from cosmodiff.atomic import atomic_path, atomic_write_text
from cosmodiff.ranges import COUNT, POSITIVE, checked_numbers
from cosmodiff.fields import DEFAULT_BOX_SIZE, FieldError, FieldSet, check_parts_agree

INDEX = "index.json"
FORMAT = 1


def is_shard_set(path):
    return (Path(path) / INDEX).is_file()


INDEX_RANGES = {"format": COUNT, "box_size": POSITIVE, "shards.n_fields": COUNT, "shards.sources": COUNT}


def read_index(folder):
    path = Path(folder) / INDEX
    try:
        index = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise FieldError(f"{path}: unreadable shard index ({error})") from None
    if index.get("format", 0) > FORMAT:
        raise FieldError(f"{path}: written by a newer version (shard format {index['format']}); upgrade cosmodiff")
    return checked_numbers(index, INDEX_RANGES, path, FieldError)


def write_index(folder, index):
    """index.json, atomically: the shards it lists are complete."""
    atomic_write_text(Path(folder) / INDEX, json.dumps(index, indent=1))


def write_shard(folder, number, fields, runs, params=None, sim_index=None):
    """One shard, its fields (N, H, W) and metadata each written to a temporary name first; returns its
    index entry. runs: [source name, number of fields] in order."""
    name, folder = f"shard-{number:05d}", Path(folder)
    with atomic_path(folder / f"{name}.npy") as temporary:
        np.save(temporary, np.asarray(fields, np.float32))
    with atomic_path(folder / f"{name}.meta.npz") as temporary:
        np.savez(temporary, params=np.zeros((len(fields), 0)) if params is None else np.asarray(params, np.float64),
                 sim_index=np.full(len(fields), -1) if sim_index is None else np.asarray(sim_index, np.int64))
    return dict(file=f"{name}.npy", n_fields=len(fields), sources=[[str(source), int(count)] for source, count in runs])


class ShardSources:
    """Each field's source name ("file[i]" for the i-th field of a file of several), made when asked from
    the index's runs, so a million fields do not hold a million strings."""

    def __init__(self, runs):
        self.names = [name for name, _ in runs]
        self.ends = np.cumsum([count for _, count in runs])

    def __len__(self):
        return int(self.ends[-1])

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            raise IndexError(index)
        run = int(np.searchsorted(self.ends, index, side="right"))
        start = int(self.ends[run - 1]) if run else 0
        return self.names[run] if self.ends[run] - start == 1 else f"{self.names[run]}[{index - start}]"

    def __iter__(self):
        return (self[index] for index in range(len(self)))


class ShardedFields:
    """The fields of all shards as one read-only (N, H, W) array-like, memory-mapped: indexing reads
    only the fields asked for."""

    def __init__(self, paths):
        self.arrays = [np.load(path, mmap_mode="r") for path in paths]
        self.offsets = np.cumsum([0] + [len(array) for array in self.arrays])
        self.shape = (int(self.offsets[-1]), *self.arrays[0].shape[1:])

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, index):
        if np.ndim(index) == 0:
            shard = int(np.searchsorted(self.offsets, index, side="right")) - 1
            return np.array(self.arrays[shard][index - self.offsets[shard]])
        return np.stack([self[int(i)] for i in np.asarray(index).ravel()])


def open_shards(folder, box_size=None):
    """A shard set as a FieldSet whose fields stay on disk (parameters and indices in memory)."""
    folder = Path(folder)
    index = read_index(folder)
    if not index["shards"]:
        raise FieldError(f"{folder / INDEX}: lists no shards; run `python -m cosmodiff.prepare` to completion")
    metas = []
    for shard in index["shards"]:
        try:
            with np.load(folder / shard["file"].replace(".npy", ".meta.npz")) as meta:
                metas.append({key: meta[key] for key in meta.files})
        except (OSError, ValueError) as error:
            raise FieldError(f"{folder / shard['file']}: its metadata cannot be read ({error})") from None
    fields = ShardedFields([folder / shard["file"] for shard in index["shards"]])
    params = np.concatenate([meta["params"] for meta in metas])
    sim_index = np.concatenate([meta["sim_index"] for meta in metas])
    return check_parts_agree(FieldSet(
        fields=fields, box_size=float(box_size or index.get("box_size") or DEFAULT_BOX_SIZE),
        box_size_assumed=box_size is None and index.get("box_size") is None,
        params=params if params.shape[1] else None, param_names=index.get("param_names", []),
        sources=ShardSources([run for shard in index["shards"] for run in shard["sources"]]),
        sim_index=sim_index if (sim_index >= 0).all() else None), folder)
