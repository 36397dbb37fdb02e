"""Rows measured over the floors of random halves, re-expressed over the floors by simulation.

A fidelity row keeps each statistic as a distance over its floor. The floor of random halves of the
test split (every field taken as independent; seed 0, as the rows drew it) is recomputed on the same
test split, which gives back the row's distance; that distance over the floor by simulation
(`cosmodiff.stats.floor_draws`, the real set redrawn by simulation) is the row's honest ratio. The
distances are the rows' own: only the floor changes. Rows gain `honest` (the ratios over the floors by
simulation) and `floor_conversion` (old floor / honest floor) in benchmarks/results/fidelity.json.

    python -m cosmodiff.mock --split 2lpt --out train_data     # the 2LPT rows' test split, if wanted
    python benchmarks/refloor.py [--results benchmarks/results/fidelity.json]
"""
import argparse
import json
from pathlib import Path

import numpy as np

from cosmodiff import stats
from cosmodiff.atomic import atomic_write_text
from cosmodiff.error_budget import band_masks
from cosmodiff.fields import load_fields
from cosmodiff.repository import ROOT

TEST_SPLITS = {"train_data/nonlinear": "train_data/nonlinear/test.npz", "train_data/large-nonlinear":
               "train_data/nonlinear/test.npz", "train_data": "train_data/test.npz", "train_data/large": "train_data/test.npz"}


def halves_floor(distance, arrays, n_generated, n_splits, seed=0):
    """The retired floor, as the rows drew it: the median distance between disjoint random halves of the
    real set (fields taken as independent), scaled to n_generated against every real field."""
    rng = np.random.default_rng(seed)
    n_real = len(arrays[0])
    size = min(n_generated, n_real // 2)
    scale = np.sqrt((1 / n_generated + 1 / n_real) / (2 / size))
    values = []
    for _ in range(n_splits):
        order = rng.permutation(n_real)
        values.append(distance(*(a[order[:size]] for a in arrays), *(a[order[size:2 * size]] for a in arrays)))
    return float(np.median(values)) * scale


def mean_difference_all_bins(generated, real):
    """The rows' peak and PDF distance: every bin with a spread (stats.mean_difference also drops bins
    that few fields reach)."""
    spread = real.std(axis=0)
    valid = spread > 0
    return float((np.abs(generated.mean(axis=0) - real.mean(axis=0))[valid] / spread[valid]).mean())


def conversions(test_path, n_generated):
    """Per quantity of a row: (old floor, floor by simulation) on one test split."""
    real = load_fields(test_path)
    sample = real.fields[np.random.default_rng(0).permutation(len(real))[:64]]
    edges = stats.shared_bins(stats.log_density(sample))
    statistics = stats.field_statistics(real.fields, real.box_size, edges)
    sims = stats.simulations_for_floor(real.sim_index)
    masks = band_masks(statistics["k"], real.box_size, real.image_size)

    def both(distance, arrays, n_splits):
        honest = np.median(stats.floor_draws(distance, arrays, n_generated, sims, n_draws=n_splits))
        return halves_floor(distance, arrays, n_generated, n_splits), float(honest)

    floors = {}
    for space, key in (("delta", "pk"), ("log", "log_pk")):
        for band, mask in masks.items():
            floors[f"{space} {band}"] = both(lambda a, b, mask=mask: stats.mafd(a, b, mask), [statistics[key]], 500)
    floors["bispectrum"] = both(stats.q_distance, [statistics["b"], statistics["p"]], 200)
    floors["peaks"] = both(mean_difference_all_bins, [statistics["peaks"]], 200)
    floors["pixel_pdf"] = both(mean_difference_all_bins, [statistics["pdf"]], 200)
    mask = masks["all"]
    floors["pk_correlation"] = both(stats.correlation_difference, [statistics["pk"][:, mask]], 200)
    return floors


def honest_row(row, floors):
    """A row's ratios over the floors by simulation, from its ratios over the old floors."""
    factor = {name: old / honest for name, (old, honest) in floors.items()}
    honest = dict(mafd_over_floor=row["mafd_over_floor"] * factor["delta all"],
                  log_mafd_over_floor=row["log_mafd_over_floor"] * factor["log all"],
                  band_mafd_over_floor={band: value * factor[f"delta {band}"]
                                        for band, value in row["band_mafd_over_floor"].items()})
    if row.get("beyond_over_floor"):
        honest["beyond_over_floor"] = {name: value * factor[name] for name, value in row["beyond_over_floor"].items()}
    return honest, factor


def main(args):
    rows = json.loads(Path(args.results).read_text())
    cache = {}
    for row in rows:
        if row.get("floor_by") or row.get("data") not in TEST_SPLITS or not (ROOT / TEST_SPLITS[row["data"]]).exists():
            continue  # measured over floors by simulation already, or its test split is not made here
        key = (TEST_SPLITS[row["data"]], row["n_generated"])
        if key not in cache:
            cache[key] = conversions(ROOT / key[0], row["n_generated"])
        row["honest"], row["floor_conversion"] = honest_row(row, cache[key])
    atomic_write_text(args.results, json.dumps(rows, indent=1))
    for (path, n_generated), floors in cache.items():
        print(f"{path}, {n_generated} generated: old floor / floor by simulation")
        for name, (old, honest) in floors.items():
            print(f"  {name}: {old:.4g} / {honest:.4g} = {old / honest:.2f}")
    print(f"Written: {args.results}")


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "fidelity.json"))
    return parser


if __name__ == "__main__":
    main(build_parser().parse_args())
