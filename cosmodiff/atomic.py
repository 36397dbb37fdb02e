"""Atomic writes: a file appears whole under its name or not at all. It is written under a temporary
name beside its place, <stem>.tmp<suffix> (numpy keeps the suffix it would otherwise add), and then
renamed, which replaces an older file in one step; a kill in between leaves only the temporary. An
output's place is checked before any work starts (writable_folder, writable_file), so a run that
cannot write its result does not compute it first."""
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


def writable_folder(path, flag):
    """Refuse, before any work, an output folder that is a file or that cannot be created or written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path}: is a file, not a folder")
    writable_place(path, flag)


def writable_file(path, flag):
    """Refuse, before any work, an output file whose place is a folder or cannot be written."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {path}: is a folder, not a file")
    writable_place(path.parent, flag, path)


def writable_place(folder, flag, shown=None):
    """The nearest existing folder at or above `folder` must be a folder this process can write in."""
    existing = next(parent for parent in [folder, *folder.parents] if parent.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {shown or folder}: cannot be written ({existing} is not a writable folder)")
