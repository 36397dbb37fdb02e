"""Compare generated fields with real ones: the scorecard (P(k) MAFD of delta and of ln(1 + delta),
the reduced bispectrum, peaks, the pixel PDF, Minkowski functionals and the P(k) correlation matrix,
each a distance over its sample-variance floor, and the worst of them as the headline), power
spectra, periodic seams (and memorisation with --train). Floors are drawn by simulation where the
real set carries `sim_index` (fields of one simulation share its large-scale modes).

    python evaluate/power_spectrum.py REAL GENERATED [--box_size 1000] [--colormap gnuplot] [--out evaluation]
    python evaluate/power_spectrum.py GENERATED      # against the default test split
    python evaluate/power_spectrum.py                # the latest run's newest samples against its test split

With no arguments GENERATED is the newest samples.npy in the latest run folder under --results_dir
and REAL the test split next to that run's training data (the default data's test.npz for a default
run); with one, REAL is the default test split (made on first use). It prints the files it used.
"""
import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path


from cosmodiff import plots, stats
from cosmodiff.checkpoint import CheckpointError, latest_run, output_lock, read_config
from cosmodiff.cli import ArgumentParser, POSITIVE, finite_json, writable_folder
from cosmodiff.fields import FieldError, load_fields
from cosmodiff.mock import ensure_default_data
from cosmodiff.run import test_split_of



def write_report(report, generated_fields, out):
    """The JSON report and every figure, into a temporary folder first so nothing is half-written."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".evaluation-", dir=out.parent))
    try:
        (staging / "report.json").write_text(json.dumps(report, indent=1))
        for name, draw in plots.FIGURES.items():
            draw(report, staging / name)
        plots.periodic_tiling(generated_fields[0], staging / "periodic.png")
        out.mkdir(parents=True, exist_ok=True)
        for file in staging.iterdir():
            file.replace(out / file.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def summary_table(report):
    lines = stats.summary_lines(report)
    width = max(len(name) for name, _ in lines)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in lines)


def newest_samples(run_dir):
    samples = sorted(Path(run_dir).glob("**/samples.npy"), key=lambda path: path.stat().st_mtime)
    if not samples:
        raise FieldError(f"{run_dir}: the latest run has no samples.npy; make some with `accelerate launch "
                         "UNet-DDPM/generate_images.py` or pass GENERATED")
    return samples[-1]


def fill_inputs(args):
    """The files to compare when the command line names fewer than two."""
    if args.generated is None and args.real is not None:
        args.real, args.generated = None, args.real
    if args.generated is None:
        run_dir = latest_run(args.results_dir)
        args.generated = newest_samples(run_dir)
        args.real = test_split_of(read_config(run_dir))
    if args.real is None:
        _, args.real = ensure_default_data()
    print(f"real: {args.real}\ngenerated: {args.generated}")


def main(args):
    try:
        writable_folder(args.out, "--out")
        fill_inputs(args)
        with output_lock(args.out, "evaluation"):
            report, generated = evaluate(args)
            write_report(report, generated.fields, args.out)
    except (FieldError, CheckpointError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted: nothing written to {args.out}", file=sys.stderr)
        return 130
    print(summary_table(report))
    print(f"Report and figures in {args.out}/")
    return 0


def evaluate(args):
    """The report of args.generated against args.real, and the generated set."""
    real = load_fields(args.real, colormap=args.colormap, box_size=args.box_size)
    generated = load_fields(args.generated, colormap=args.colormap, box_size=args.box_size)
    train = load_fields(args.train, colormap=args.colormap, box_size=args.box_size) if args.train else None
    if generated.box_size_assumed and not real.box_size_assumed:
        generated.box_size = real.box_size  # fields without a box (no samples.json beside them): the real set's
    if real.box_size != generated.box_size:
        raise FieldError(f"{args.generated}: box size {generated.box_size} Mpc/h differs from {real.box_size} "
                         f"Mpc/h of {args.real}; pass --box_size if both are the same box")
    report = stats.compare(real.fields, generated.fields, real.box_size, MAS=args.MAS, k_max=args.k_max,
                           train=None if train is None else train.fields, real_sims=real.sim_index,
                           generated_sims=generated.sim_index)
    finite_json(report, f"the report of {args.generated} against {args.real}")
    report["settings"].update(real=str(args.real), generated=str(args.generated), colormap=args.colormap)
    return report, generated


def build_parser():
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("real", nargs="?", help="real fields: folder of PNG/.npy, .npy or .npz (default: the test split)")
    parser.add_argument("generated", nargs="?", help="generated fields, e.g. a sampler's samples.npy "
                        "(default: the latest run's newest)")
    parser.add_argument("--results_dir", default="results", help="where to look for the latest run")
    parser.add_argument("--box_size", type=POSITIVE, default=None, help="Mpc/h (default: from the data, else 1000)")
    parser.add_argument("--colormap", default=None, help="invert colormapped PNGs, e.g. gnuplot")
    parser.add_argument("--MAS", default="None", choices=list(stats.MAS_ORDER), help="mass-assignment correction")
    parser.add_argument("--k_max", default="nyquist", choices=["nyquist", "all"], help="MAFD bins up to Nyquist, or all as Pylians returns")
    parser.add_argument("--train", default=None, help="training fields, for the memorisation check")
    parser.add_argument("--out", default="evaluation", help="output folder")
    return parser


if __name__ == "__main__":
    sys.exit(main(build_parser().parse_args()))
