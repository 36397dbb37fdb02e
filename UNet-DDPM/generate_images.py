"""Sample density fields from a trained run (any model kind), in physical units.

    accelerate launch UNet-DDPM/generate_images.py --num_samples 20 --seed 42
    accelerate launch UNet-DDPM/generate_images.py --checkpoint results/RUN --sampler dpm++ --steps 20
    accelerate launch UNet-DDPM/generate_images.py --sampler heun --steps 18
    accelerate launch UNet-DDPM/generate_images.py --sampler dpm++ --steps 20 --grid log
    accelerate launch UNet-DDPM/generate_images.py --params Omega_m=0.3,sigma_8=0.8 --guidance 1.5

A conditional run samples --num_samples fields at each parameter point (--params, or every row of
--params_file), point by point. Writes to --out (default RUN/samples): samples.npy (N, H, W), PNG
previews and samples.json (with every sample's parameters). Sample
i's noise is seeded from (seed, i), so a seed gives the same fields whatever the batch size or the
number of processes. Processes take turns at the batches and write each to OUT/parts as it is done;
an interrupted call, run again with the same arguments, keeps those and samples the rest; the main
process merges them into samples.npy one batch at a time, so memory never holds all the samples.
"""
import argparse
from pathlib import Path

from cosmodiff.checkpoint import CheckpointError, latest_run
from cosmodiff.cli import ArgumentParser, COUNT, GUIDANCE, INDEX, NON_NEGATIVE, exit_on
from cosmodiff.condition import DEFAULT_GUIDANCE
from cosmodiff.diffusion import DEFAULT_SAMPLER, GRIDS, SAMPLERS
from cosmodiff.fields import FieldError
from cosmodiff.launch import accelerated
from cosmodiff.sampling import sample_fields


def main(args):
    run_dir = Path(args.checkpoint) if args.checkpoint else latest_run(args.results_dir)
    options = {name: value for name, value in vars(args).items() if name not in ("checkpoint", "results_dir", "out")}
    with accelerated() as accelerator:
        sample_fields(run_dir, Path(args.out) if args.out else run_dir / "samples", accelerator, **options)


def build_parser(description=None):
    """generate_images.py's flags: sample_fields' arguments, and which run folder."""
    parser = ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None, help="run folder (default: the latest under --results_dir)")
    parser.add_argument("--results_dir", default="results")
    parser.add_argument("--num_samples", type=COUNT, default=20, help="fields (a conditional run: per parameter point)")
    parser.add_argument("--params", default=None, help="a conditional run's parameters, e.g. Omega_m=0.3,sigma_8=0.8")
    parser.add_argument("--params_file", default=None,
                        help="parameter points, one per row: a table with a '#' header naming the columns, or "
                             "Quijote's latin_hypercube_params.txt")
    parser.add_argument("--guidance", type=GUIDANCE, default=None,
                        help=f"classifier-free guidance weight W of a conditional run (default {DEFAULT_GUIDANCE:g}; "
                             "1: the conditional model alone)")
    parser.add_argument("--unconditional", action="store_true",
                        help="a conditional run's unconditional fields (its null condition, what guidance contrasts "
                             "with), without --params")
    parser.add_argument("--seed", type=INDEX, default=42)
    parser.add_argument("--sampler", default=DEFAULT_SAMPLER, choices=list(SAMPLERS),
                        help="default unipc (20 steps, log grid): the smallest sampler error per network "
                             "evaluation measured (README, error budget)")
    parser.add_argument("--steps", type=COUNT, default=None,
                        help="sampler steps (default: " + ", ".join(
                            f"{name} {sampler.default_steps or 'every training timestep'}"
                            for name, sampler in SAMPLERS.items()) + ")")
    parser.add_argument("--grid", default=None, choices=GRIDS[:-1],
                        help="noise-level grid (default: the sampler's; log keeps small-scale power best, "
                             "benchmarks/sampler_accuracy.py)")
    parser.add_argument("--churn", type=NON_NEGATIVE, default=0.0, help="heun: EDM's S_churn, noise added back per step")
    parser.add_argument("--batch_size", type=COUNT, default=16)
    parser.add_argument("--colormap", default="gnuplot", help="matplotlib colormap of the PNG previews")
    parser.add_argument("--out", default=None, help="output folder (default: RUN/samples)")
    return parser


def parse_args(argv=None):
    return build_parser(__doc__).parse_args(argv)


if __name__ == "__main__":
    exit_on((CheckpointError, FieldError, ValueError), main, parse_args())
