"""Field sets larger than memory: a folder of memory-mapped .npy shards with an index, and the
training data pipeline that reads any field set one field at a time.

A shard set folder holds `index.json` (format, box size, field side, parameter names, and per shard
its file, field count and its sources as [name, fields] runs) and per shard `shard-NNNNN.npy`
(N, H, W) float32 with `shard-NNNNN.meta.npz` (`params` (N, P), `sim_index` (N,), -1 where unknown). A shard holds whole sources, so a
conversion killed between shards resumes at the first source no shard holds (cosmodiff.prepare).

Training draws every step's global batch with replacement from a generator keyed by (seed, micro-
batch) and gives each process its slice: the batches are the same for any number of processes and
after a resume, and DataLoader workers may read ahead without touching the training RNG. (accelerate's
prepared DataLoader shards finite epochs; this sampler is endless, so it splits the batch itself.)
"""
import itertools
import json
from pathlib import Path

import numpy as np
import torch

from cosmodiff.atomic import atomic_path, atomic_write_text
from cosmodiff.fields import DEFAULT_BOX_SIZE, FieldError, FieldSet, block_average

INDEX = "index.json"
FORMAT = 1


def is_shard_set(path):
    return (Path(path) / INDEX).is_file()


def read_index(folder):
    path = Path(folder) / INDEX
    try:
        index = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise FieldError(f"{path}: unreadable shard index ({error})") from None
    if index.get("format", 0) > FORMAT:
        raise FieldError(f"{path}: written by a newer version (shard format {index['format']}); upgrade cosmodiff")
    return index


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
    return FieldSet(fields=fields, box_size=float(box_size or index.get("box_size") or DEFAULT_BOX_SIZE),
                    box_size_assumed=box_size is None and index.get("box_size") is None,
                    params=params if params.shape[1] else None, param_names=index.get("param_names", []),
                    sources=ShardSources([run for shard in index["shards"] for run in shard["sources"]]),
                    sim_index=sim_index if (sim_index >= 0).all() else None)


def fitting_sample(fields, image_size, limit=4096):
    """The fields the data transform is fitted on, at the model's side: all of them, or `limit` evenly
    spaced ones of a larger set (its constants are means over millions of pixels either way)."""
    chosen = np.linspace(0, len(fields) - 1, min(limit, len(fields))).round().astype(int)
    return block_average(np.asarray(fields[chosen], np.float32), image_size)


class FieldDataset(torch.utils.data.Dataset):
    """Model-space fields (1, S, S) and their conditions (P,) (empty for an unconditional run), one field
    read, block-averaged to the model's side and transformed at a time."""

    def __init__(self, fields, transform, image_size, conds=None):
        self.fields, self.transform, self.image_size = fields, transform, image_size
        self.conds = torch.zeros(len(fields), 0) if conds is None else conds.cpu()

    def __len__(self):
        return len(self.fields)

    def __getitem__(self, index):
        field = block_average(np.asarray(self.fields[index], np.float32)[None], self.image_size)
        return torch.from_numpy(self.transform.forward(field)).float(), self.conds[index]


class StepBatches(torch.utils.data.Sampler):
    """This process's slice of every micro-batch's global batch, from micro-batch `start` on, endlessly."""

    def __init__(self, n_fields, batch_size, seed, rank=0, world_size=1, start=0):
        self.n_fields, self.batch_size, self.seed, self.start = n_fields, batch_size, seed, start
        local = batch_size // world_size
        self.slice = slice(rank * local, (rank + 1) * local)

    def __iter__(self):
        for micro_batch in itertools.count(self.start):
            key = int(np.random.SeedSequence([self.seed, micro_batch]).generate_state(1)[0])
            chosen = torch.randint(0, self.n_fields, (self.batch_size,), generator=torch.Generator().manual_seed(key))
            yield chosen[self.slice].tolist()


def training_batches(dataset, batch_sampler, num_workers):
    """An endless iterator of (fields (B, 1, S, S), conds (B, P)) for this process, read ahead by
    num_workers DataLoader workers."""
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=batch_sampler, num_workers=num_workers, persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available(),
        generator=torch.Generator())  # its workers' seeds: not from the training RNG, which a resume restores
    return iter(loader)
