"""The training data pipeline, for any field set (in memory or a shard set read field by field).

Training draws every step's global batch with replacement from a generator keyed by (seed, micro-
batch) and gives each process its slice: the batches are the same for any number of processes and
after a resume, and DataLoader workers may read ahead without touching the training RNG. (accelerate's
prepared DataLoader shards finite epochs; this sampler is endless, so it splits the batch itself.)
"""
import itertools

import numpy as np
import torch

from cosmodiff.fields import block_average


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
