"""Power-spectrum speed: fields/s of cosmodiff.stats.power_spectrum against Pylians3 Pk_plane
(single thread, as the earlier work called it) on the same 512x512 fields, in one run, plus the
largest relative difference between the two.

    pip install Pylians        # benchmark-only dependency; it builds in about 2 minutes
    python benchmarks/power_spectrum_speed.py [--n_fields 64] [--size 512]

Fields: the shared Quijote sample when ../shared is present, else lognormal mock fields.
"""
import argparse
import sys
import time

import numpy as np

from cosmodiff.cli import ArgumentParser, COUNT, POSITIVE
from cosmodiff.fields import load_fields
from cosmodiff.stats import overdensity, power_spectrum
from cosmodiff.repository import ROOT


def test_fields(n_fields, size):
    shared = ROOT.parent / "shared" / "quijote-png-sample"
    if shared.exists() and size == 512:
        fields = load_fields(shared, colormap="gnuplot").fields
    else:
        fields = np.exp(np.random.default_rng(0).normal(size=(16, size, size))).astype(np.float32)
    return np.concatenate([fields] * int(np.ceil(n_fields / len(fields))))[:n_fields]


def best_of(repeats, function):
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return min(times), result


def main(args):
    try:
        import Pk_library as PKL
    except ImportError:
        sys.exit("Pylians is not installed: `pip install Pylians` (benchmark-only; it builds in about 2 minutes).")
    delta = overdensity(test_fields(args.n_fields, args.size)).astype(np.float32)
    ours_time, (k, pk, n_modes) = best_of(args.repeats, lambda: power_spectrum(delta, args.box_size, args.MAS))

    def pylians():
        return [PKL.Pk_plane(field, args.box_size, args.MAS, 1, False) for field in delta]

    pylians_time, results = best_of(args.repeats, pylians)
    reference = np.stack([result.Pk for result in results])
    difference = float(np.abs(pk / reference - 1).max())
    k_difference = float(np.abs(k / results[0].k - 1).max())
    ours_rate, pylians_rate = len(delta) / ours_time, len(delta) / pylians_time
    print(f"{len(delta)} fields of {args.size}x{args.size}, MAS={args.MAS}")
    print(f"cosmodiff power_spectrum: {ours_rate:8.1f} fields/s")
    print(f"Pylians Pk_plane (1 thread): {pylians_rate:5.1f} fields/s")
    print(f"ratio: {ours_rate / pylians_rate:.2f}x; largest relative difference P {difference:.2e}, k {k_difference:.2e}")


if __name__ == "__main__":
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n_fields", type=COUNT, default=64)
    parser.add_argument("--size", type=COUNT, default=512)
    parser.add_argument("--box_size", type=POSITIVE, default=1000.0)
    parser.add_argument("--MAS", default="None")
    parser.add_argument("--repeats", type=COUNT, default=3)
    main(parser.parse_args())
