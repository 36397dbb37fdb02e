"""Error budget of one checkpoint: how much of its MAFD is the sampler's, how much the network's,
and how large the sample-variance floor is, in delta space and in log space (P(k) of ln(1 + delta)),
overall and per k band; and the reduced bispectrum, peak counts, pixel PDF and P(k) correlation
matrix of each solve against the real fields, next to their floors (`cosmodiff.stats.compare`).

    python benchmarks/error_budget.py RUN [--sampler dpm++:20:log] [--reference dpm++3m:40:log]
                                          [--check_reference] [--num_samples 384]

What each error means, and the one-point statistics beside them: cosmodiff.error_budget, whose
`measure` this script calls. Writes OUT/error_budget.json and OUT/error_budget.png (OUT:
RUN/error_budget by default); solved fields are kept in OUT and reused when their settings match.
"""
import argparse

from cosmodiff.cli import ArgumentParser, COUNT, INDEX
from cosmodiff.error_budget import measure


def main(args):
    return measure(args.run, args.sampler, args.reference, args.out, args.test, args.num_samples, args.seed,
                   args.batch_size, args.check_reference, args.check_samples, args.results, args.recipe)


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="run folder")
    parser.add_argument("--sampler", default="dpm++:20:log", help="sampler:steps[:grid] whose error is measured")
    parser.add_argument("--reference", default="dpm++3m:40:log", help="sampler:steps[:grid] of the reference solve")
    parser.add_argument("--check_reference", action="store_true", help="also solve at twice the reference's steps")
    parser.add_argument("--check_samples", type=COUNT, default=None,
                        help="fields the doubled reference solves (the first of the reference's; default: all)")
    parser.add_argument("--test", default=None, help="real fields (default: the test.npz next to the run's "
                        "training data, else the default test split)")
    parser.add_argument("--num_samples", type=COUNT, default=None, help="default: as many as the real fields")
    parser.add_argument("--seed", type=INDEX, default=0)
    parser.add_argument("--batch_size", type=COUNT, default=64)
    parser.add_argument("--out", default=None, help="default: RUN/error_budget")
    parser.add_argument("--results", default=None, help="also add the budget's rows to this file, e.g. "
                        "benchmarks/results/fidelity.json")
    parser.add_argument("--recipe", default=None, help="the recipe's name in those rows (default: the run folder's)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
