"""The ranges numbers must lie in, whether they arrive as a command-line flag, a keyword of the Python
API or a value read back from a run folder: each range (`low`, `high`, open or closed) describes itself
in one sentence, refuses non-finite values, and can name the values just outside it (the tests' probes).
As an argparse type a range refuses at parse time; `checked_numbers` applies the same ranges to values
the library is given or reads back, naming the parameter."""
import argparse
import math
import os


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
