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

from pathlib import Path

from cosmodiff.checkpoint import CheckpointError, latest_run
from cosmodiff.cli import exit_on
from cosmodiff.fields import FieldError
from cosmodiff.launch import accelerated
from cosmodiff.sampling import build_parser, sample_fields


def main(args):
    run_dir = Path(args.checkpoint) if args.checkpoint else latest_run(args.results_dir)
    options = {name: value for name, value in vars(args).items() if name not in ("checkpoint", "results_dir", "out")}
    with accelerated() as accelerator:
        sample_fields(run_dir, Path(args.out) if args.out else run_dir / "samples", accelerator, **options)


def parse_args(argv=None):
    return build_parser(__doc__).parse_args(argv)


if __name__ == "__main__":
    exit_on((CheckpointError, FieldError, ValueError), main, parse_args())
