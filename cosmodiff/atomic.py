"""Atomic writes: a file appears whole under its name or not at all. It is written under a temporary
name beside its place, <stem>.tmp<suffix> (numpy keeps the suffix it would otherwise add), and then
renamed, which replaces an older file in one step; a kill in between leaves only the temporary."""
import os
from contextlib import contextmanager
from pathlib import Path


def temporary_path(path):
    path = Path(path)
    return path.with_name(f"{path.stem}.tmp{path.suffix}")


@contextmanager
def atomic_path(path):
    """The temporary path to write `path` under; renamed onto `path` when the block ends without error."""
    temporary = temporary_path(path)
    yield temporary
    os.replace(temporary, path)


def atomic_write_text(path, text):
    with atomic_path(path) as temporary:
        temporary.write_text(text)
