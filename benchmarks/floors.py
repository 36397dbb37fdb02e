"""Floors that hold: the sample-variance floors of the scorecard (`cosmodiff.stats.floor_draws`)
checked on simulations that no floor, model or test split has seen (the floor-check split: fiducial
particle-mesh simulations of their own seed, made on first use).

Three checks, each over --pairs random draws, every statistic of `cosmodiff.stats.STATISTICS`:
- real v real: two disjoint sets of --sims_per_set simulations (every slab, as the default test
  split), the distance between them over the floor drawn from the two sets by simulation; beside it,
  the floor that takes every field as independent (random halves: the floors' old definition);
- independent v real: one slab from each simulation outside a real set of --sims_per_set simulations
  (independent fields, as a perfect generator's) against that set, over its floor by simulation;
- independent v many simulations: one slab from each simulation outside a real set of
  --many_sims simulations with 384 / --many_sims evenly spaced slabs each (the floor-check test
  file's layout: more simulations, fewer slabs each, a tighter floor) against that set.
A floor holds when the median distance over floor is 1 within 10%.

    python benchmarks/floors.py [--pairs 120] [--sims_per_set 4] [--many_sims 16] [--results benchmarks/results/floors.json]
"""
import argparse
import json

import numpy as np
from tqdm import tqdm

from cosmodiff import stats
from cosmodiff.atomic import atomic_write_text
from cosmodiff.fields import load_fields
from cosmodiff.mock import SPLIT_FOLDERS, ensure_split
from cosmodiff.repository import ROOT

PER_FIELD = ("pk", "log_pk", "pdf", "v0", "v1", "v2", "b", "p", "peaks", "seam", "log_mean", "log_square")
TOLERANCE = 0.1  # a floor holds when the median distance over floor is within 10% of 1


def subset(statistics, indices):
    """field_statistics' dict of the fields at indices."""
    return {key: value[indices] if key in PER_FIELD else value for key, value in statistics.items()}


def ratios(card):
    """Distance over floor of each statistic of a scorecard."""
    return {name: row["over_floor"] for name, row in card["statistics"].items()}


def summary(check, draws, description):
    """Per statistic: the median distance over floor across draws, its 5-95% range, and whether it holds."""
    rows = []
    for statistic in draws[0]:
        values = np.array([draw[statistic] for draw in draws])
        spread = stats.summarise(values)
        rows.append(dict(check=check, description=description, statistic=statistic, draws=len(values),
                         median_over_floor=spread["median"], low=spread["low"], high=spread["high"],
                         holds=bool(abs(spread["median"] - 1) <= TOLERANCE)))
    return rows


def main(args):
    folder = SPLIT_FOLDERS["floor-check"]
    ensure_split(folder, "floor-check")
    pool = load_fields(folder / "simulations.npz")
    box_size = pool.box_size
    sample = pool.fields[np.random.default_rng(0).permutation(len(pool))[:64]]
    edges = stats.shared_bins(stats.log_density(sample))
    pool_stats = stats.field_statistics(pool.fields, box_size, edges, progress=True)
    mask = stats.nyquist_mask(pool_stats["k"], box_size, pool.image_size)
    sims = np.unique(pool.sim_index)
    members = {sim: np.flatnonzero(pool.sim_index == sim) for sim in sims}
    rng = np.random.default_rng(args.seed)
    draws = {"real v real": [], "real v real, fields as independent": [], "independent v real": [],
             "independent v many simulations": []}
    slabs = len(members[sims[0]])
    spaced = np.arange(0, slabs, slabs // (384 // args.many_sims))[:384 // args.many_sims]
    for _ in tqdm(range(args.pairs), desc="pairs", unit="pair"):
        chosen = rng.permutation(sims)
        set_a = np.concatenate([members[sim] for sim in chosen[:args.sims_per_set]])
        set_b = np.concatenate([members[sim] for sim in chosen[args.sims_per_set:2 * args.sims_per_set]])
        one_each = np.array([rng.choice(members[sim]) for sim in chosen[args.sims_per_set:]])
        real_a, real_b = subset(pool_stats, set_a), subset(pool_stats, set_b)
        card = stats.scorecard(real_a, real_b, mask, pool.sim_index[set_a], pool.sim_index[set_b], args.draws)
        draws["real v real"].append(ratios(card))
        draws["real v real, fields as independent"].append(ratios(stats.scorecard(real_a, real_b, mask, None, None,
                                                                                  args.draws)))
        draws["independent v real"].append(ratios(stats.scorecard(real_a, subset(pool_stats, one_each), mask,
                                                                  pool.sim_index[set_a], None, args.draws)))
        chosen = rng.permutation(sims)
        many = np.concatenate([members[sim][spaced] for sim in chosen[:args.many_sims]])
        others = np.array([rng.choice(members[sim]) for sim in chosen[args.many_sims:]])
        draws["independent v many simulations"].append(ratios(stats.scorecard(
            subset(pool_stats, many), subset(pool_stats, others), mask, pool.sim_index[many], None, args.draws)))
    descriptions = {
        "real v real": f"two disjoint sets of {args.sims_per_set} simulations (every slab), floor by simulation",
        "real v real, fields as independent": "the same pairs, floor from fields taken as independent (old floors)",
        "independent v real": f"one slab from each other simulation against {args.sims_per_set} simulations",
        "independent v many simulations": (f"one slab from each other simulation against {args.many_sims} "
                                           f"simulations of {len(spaced)} slabs each"),
    }
    rows = [row for check, values in draws.items() for row in summary(check, values, descriptions[check])]
    for row in rows:
        row.update(sims_per_set=args.sims_per_set, n_draws=args.draws, pool_simulations=len(sims))
    atomic_write_text(args.results, json.dumps(rows, indent=1))
    print("| check | " + " | ".join(draws["real v real"][0]) + " |")
    print("| --- |" + " --- |" * len(draws["real v real"][0]))
    for check in draws:
        cells = [f"{row['median_over_floor']:.2f} [{row['low']:.2f}, {row['high']:.2f}]" for row in rows
                 if row["check"] == check]
        print(f"| {check} | " + " | ".join(cells) + " |")
    print(f"Written: {args.results}")


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=120, help="random draws of each check")
    parser.add_argument("--sims_per_set", type=int, default=4, help="simulations in each real set")
    parser.add_argument("--many_sims", type=int, default=16, help="simulations in the last check's real set")
    parser.add_argument("--draws", type=int, default=100, help="draws of each floor")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "floors.json"))
    return parser


if __name__ == "__main__":
    main(build_parser().parse_args())
