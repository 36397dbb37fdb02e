"""Cosmological parameters as the condition of a network: names, standardisation and parsing.

A conditional run stores a Condition in config.json: the parameter names it was trained on, their
training-set mean and spread (the network sees (value - mean) / std) and their training range.
A row of NaN means "no condition": the networks give it their learned null embedding, which is
what condition dropout trains and classifier-free guidance (Ho & Salimans 2022) contrasts with.

Parameter tables (`--params_file`) are whitespace tables, one row per simulation or parameter point,
with an optional '#'-prefixed header naming the columns; without one the columns are Quijote's
latin_hypercube_params.txt: Omega_m Omega_b h n_s sigma_8.
"""
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cosmodiff.fields import FieldError, FieldSet
from cosmodiff.parameters import PARAM_NAMES

QUIJOTE_COLUMNS = PARAM_NAMES  # latin_hypercube_params.txt column order
# Classifier-free guidance of conditional sampling unless --guidance says otherwise: the lowest median
# MAFD / floor over the test cosmologies of W in {1, 1.5, 2, 3} (benchmarks/conditional.py, README).
DEFAULT_GUIDANCE = 2.0


@dataclass
class Condition:
    names: list
    mean: list
    std: list
    low: list
    high: list

    @classmethod
    def fit(cls, fieldset, names):
        """The condition on `names` (a list) fitted on a training set that carries them."""
        values = parameter_values(fieldset, names, f"--condition {','.join(names)}")
        if not np.isfinite(values).all():
            raise FieldError(f"--condition {','.join(names)}: the data's parameters are not all finite")
        spread = values.std(axis=0)
        spread[spread == 0] = 1.0  # a parameter the data never varies: centred, not scaled
        return cls(list(names), values.mean(axis=0).tolist(), spread.tolist(), values.min(axis=0).tolist(),
                   values.max(axis=0).tolist())

    @classmethod
    def from_dict(cls, values):
        return cls(**values)

    def to_dict(self):
        return dict(names=self.names, mean=self.mean, std=self.std, low=self.low, high=self.high)

    def of_fields(self, fieldset):
        """The standardised condition of every field of a set that carries the parameters (N, P)."""
        return self.standardise(parameter_values(fieldset, self.names, (fieldset.sources or ["the data"])[0]))

    def standardise(self, values):
        return torch.from_numpy((np.asarray(values, dtype=np.float64) - self.mean) / self.std).float()

    def points(self, table_names, values, source):
        """Parameter points (R, P) in this condition's order from a table of named columns; unknown or
        missing names and non-finite values are errors, values outside the training range a warning naming it."""
        unknown = [name for name in table_names if name not in self.names]
        missing = [name for name in self.names if name not in table_names]
        if unknown or missing:
            problems = ([f"unknown {', '.join(unknown)}"] if unknown else []) + (
                [f"missing {', '.join(missing)}"] if missing else [])
            raise ValueError(f"{source}: {'; '.join(problems)}; the run is conditioned on {', '.join(self.names)}")
        points = np.asarray(values, dtype=np.float64)[:, [list(table_names).index(name) for name in self.names]]
        if not np.isfinite(points).all():
            row, column = np.argwhere(~np.isfinite(points))[0]
            raise ValueError(f"{source}: {self.names[column]} = {points[row, column]:g} is not a finite number")
        for column, (name, low, high) in enumerate(zip(self.names, self.low, self.high)):
            outside = (points[:, column] < low) | (points[:, column] > high)
            if outside.any():
                warnings.warn(f"{source}: {name} = {points[outside, column][0]:g} is outside the training range "
                              f"[{low:g}, {high:g}]; the model extrapolates there", stacklevel=2)
        return points


def parameter_values(fieldset, names, context):
    """The parameters `names` (N, P) of every field of a set; a FieldError starting with context names
    those the set does not carry."""
    missing = [name for name in names if name not in fieldset.param_names]
    if missing:
        carried = ", ".join(fieldset.param_names) or "no parameters (use --params_file to join them)"
        raise FieldError(f"{context}: {', '.join(missing)} not in the data, which carries {carried}")
    return np.asarray(fieldset.params, dtype=np.float64)[:, [fieldset.param_names.index(name) for name in names]]


def fields_by_point(fieldset, names, context):
    """{parameter tuple: indices of the fields there}, in order of first appearance (values to 1e-6)."""
    points = {}
    for index, row in enumerate(map(tuple, parameter_values(fieldset, names, context).round(6))):
        points.setdefault(row, []).append(index)
    return points


def parse_params(text):
    """'Omega_m=0.3,sigma_8=0.8' -> (names, values (1, P))."""
    names, values = [], []
    for item in filter(None, text.split(",")):
        match = re.fullmatch(r"\s*([A-Za-z_][\w]*)\s*=\s*([^=\s]+)\s*", item)
        if not match:
            raise ValueError(f"--params {text}: '{item}' is not NAME=VALUE")
        try:
            values.append(float(match.group(2)))
        except ValueError:
            raise ValueError(f"--params {text}: {match.group(1)} = '{match.group(2)}' is not a number") from None
        if match.group(1) in names:
            raise ValueError(f"--params {text}: {match.group(1)} is given twice")
        names.append(match.group(1))
    if not names:
        raise ValueError("--params is empty; give NAME=VALUE pairs, e.g. Omega_m=0.3,sigma_8=0.8")
    return names, np.asarray([values])


def read_params_table(path):
    """(names, values (R, P)) of a parameter table; its header, or Quijote's columns without one."""
    path = Path(path)
    if not path.is_file():
        raise FieldError(f"{path}: no such parameter table")
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    header = lines[0].lstrip("#").split() if lines and lines[0].startswith("#") else None
    rows = [line.split() for line in lines if not line.startswith("#")]
    names = header or QUIJOTE_COLUMNS
    if not rows or any(len(row) != len(names) for row in rows):
        raise FieldError(f"{path}: every row must hold {len(names)} values ({' '.join(names)})")
    try:
        return names, np.asarray(rows, dtype=np.float64)
    except ValueError:
        raise FieldError(f"{path}: a value is not a number") from None


def simulation_of(source):
    """The simulation index of a field's file: its folder's name in Quijote's layout (LH/<index>/file,
    LH/<index>/snapdir_XXX/file)."""
    folder = Path(source.split("[")[0]).parent
    if folder.name.startswith("snapdir"):
        folder = folder.parent
    return int(folder.name) if folder.name.isdigit() else None


def join_params(fieldset, params_file):
    """The field set with each field's parameters from the row of its simulation in a parameter table:
    the set's sim_index, or else the simulation folder each file sits in (Quijote's LH/<index>/)."""
    names, table = read_params_table(params_file)
    sims = fieldset.sim_index
    if sims is None:
        sims = [simulation_of(source) for source in fieldset.sources]
        unknown = [source for source, sim in zip(fieldset.sources, sims) if sim is None]
        if unknown:
            raise FieldError(f"{unknown[0]}: cannot tell which simulation it is; put each simulation's files in a "
                             f"folder named by its index (Quijote's layout) or store sim_index in the .npz")
    sims = np.asarray(sims, dtype=np.int64)
    if sims.min() < 0 or sims.max() >= len(table):
        raise FieldError(f"{params_file}: has {len(table)} rows but the data holds simulation {sims.max()}")
    return FieldSet(fields=fieldset.fields, box_size=fieldset.box_size, params=table[sims], param_names=list(names),
                    sources=fieldset.sources, sim_index=sims)
