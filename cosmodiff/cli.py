"""What every entry script shares on its command line: a parser whose errors are one line, numeric
flag types that refuse non-finite and out-of-range values at parse time (exit status 2, one sentence
naming the flag and the range), and the checks that an output can be written before any work starts.

Each type keeps its range (`low`, `high`, open or closed), so a test can read every flag's declared
range back and try values just outside it.
"""
import argparse
import json
import math
import os
import sys
from pathlib import Path


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser whose errors are the project's one line, `error: argument --flag: ...`, exit 2."""

    def error(self, message):
        self.exit(2, f"error: {message}\n")


class Number:
    """An argparse type: an int or a finite float inside a range; `low`/`high` None means unbounded,
    `open_low`/`open_high` exclude the end point."""

    def __init__(self, kind, low=None, high=None, open_low=False, open_high=False):
        self.kind, self.low, self.high, self.open_low, self.open_high = kind, low, high, open_low, open_high
        self.__name__ = self.describe()  # argparse names the type by it in its messages

    def describe(self):
        noun = "an integer" if self.kind is int else "a number"
        if self.low is not None and self.high is not None:
            return f"{noun} in {'(' if self.open_low else '['}{self.low:g}, {self.high:g}{')' if self.open_high else ']'}"
        if self.low is not None:
            return f"{noun} {'>' if self.open_low else '>='} {self.low:g}"
        if self.high is not None:
            return f"{noun} {'<' if self.open_high else '<='} {self.high:g}"
        return f"a finite {'integer' if self.kind is int else 'number'}"

    def __call__(self, text):
        try:
            value = self.kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got '{text}'") from None
        if not math.isfinite(value) or not self.contains(value):
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {text}")
        return value

    def contains(self, value):
        above = self.low is None or (value > self.low if self.open_low else value >= self.low)
        below = self.high is None or (value < self.high if self.open_high else value <= self.high)
        return above and below

    def outside(self):
        """Values just outside the range (the test's probes)."""
        step = 1 if self.kind is int else 1e-6 * max(1.0, abs(self.low or 0), abs(self.high or 0))
        probes = []
        if self.low is not None:
            probes.append(self.low if self.open_low else self.low - step)
        if self.high is not None:
            probes.append(self.high if self.open_high else self.high + step)
        return probes


COUNT = Number(int, 1)  # sizes, steps, samples: at least one
INDEX = Number(int, 0)  # seeds, first indices, worker counts: zero or more
INTEGER = Number(int)
FINITE = Number(float)
POSITIVE = Number(float, 0, open_low=True)  # learning rates, lengths, spreads
NON_NEGATIVE = Number(float, 0)
FRACTION = Number(float, 0, 1)  # probabilities and decays
REDSHIFT = Number(float, 0, 1100)  # from today back to recombination
# Classifier-free guidance D_u + W (D_c - D_u): 0 is the unconditional estimate, 1 the conditional one;
# a negative W pushes away from the condition, and far beyond 1 the extrapolation leaves the data.
GUIDANCE = Number(float, 0, 10)


def numbers_in(value, key=""):
    """(dotted key, number) of every number in nested dicts and lists; a list's entries share its key."""
    if isinstance(value, dict):
        for name, item in value.items():
            yield from numbers_in(item, f"{key}.{name}" if key else str(name))
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from numbers_in(item, key)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield key, value


def checked_numbers(values, ranges, source, error=ValueError):
    """Refuse a value read back (a run folder's config, an index) that the flags that wrote it would have
    refused: each number inside its key's range (ranges: dotted key -> Number; 'parent.*' covers a
    parent's other keys), any other number finite. Raises `error` naming the source, key, value and range."""
    for key, value in numbers_in(values):
        kind = ranges.get(key) or ranges.get(key.rsplit(".", 1)[0] + ".*") or FINITE
        if not (math.isfinite(value) and kind.contains(value)) or (kind.kind is int and value != int(value)):
            raise error(f"{source}: '{key}' is {value}; it must be {kind.describe()}")
    return values


def folder_name(text):
    """An argparse type: a name joined to a folder (--run_name, --name), which must stay inside it."""
    if not text or text in (".", "..") or "/" in text or "\\" in text or os.sep in text:
        raise argparse.ArgumentTypeError(f"must be a folder name without a path separator or '..', got '{text}'")
    return text


def device_name(text):
    """An argparse type: a torch device, e.g. cpu, cuda, cuda:1."""
    import torch  # here, so the scripts that take no device do not load torch to parse their flags
    try:
        return torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"must be a torch device such as cpu, cuda or cuda:1, got '{text}'") from None


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


def finite_json(value, what):
    """value as indented JSON, refused when any number in it is NaN or infinite (nothing is written then)."""
    try:
        return json.dumps(value, indent=1, allow_nan=False)
    except ValueError:
        raise ValueError(f"{what} holds NaN or infinity; nothing was written") from None


def exit_on(errors, main, args):
    """main(args), with an error of the given kinds, or an operating-system error (a read-only folder, a
    name too long), as one line `error: ...` on stderr and exit status 2; Ctrl-C as one line and exit
    status 130, the shell's for an interrupt."""
    try:
        return main(args)
    except errors as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except OSError as error:
        print(f"error: {error.filename or 'a file'}: {error.strerror or error}", file=sys.stderr)
        sys.exit(2)
