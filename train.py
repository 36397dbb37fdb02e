"""Train a diffusion model (UNet-DDPM or DiT) on 2D density fields and write a run folder.

    accelerate launch train.py                                   # default UNet on the default particle-mesh data
    accelerate launch train.py --model dit-xs/4 --train_steps 50
    accelerate launch train.py --formulation edm                 # vp (default), edm or flow
    accelerate launch train.py --seed 1234 --data_path ./train_data --sampling_timesteps 500
    accelerate launch train.py --resume                          # continue the latest run
    accelerate launch train.py --report_to tensorboard           # also log to RUN/tensorboard

Multi-GPU and multi-node runs are accelerate's configuration (`accelerate config`); on CPU:
ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 train.py
"""
import sys

from cosmodiff.checkpoint import CheckpointError
from cosmodiff.cli import exit_on
from cosmodiff.fields import FieldError
from cosmodiff.train_flags import build_parser, train_settings
from cosmodiff.training import TrainingError, run_training


def main(args):
    """Trains; returns the exit status (cosmodiff.training.run_training)."""
    status, _ = run_training(train_settings(**vars(args)))
    return status


PARSER = build_parser(__doc__)


def parse_args(argv=None):
    return PARSER.parse_args(argv)


if __name__ == "__main__":
    sys.exit(exit_on((FieldError, CheckpointError, TrainingError, ValueError), main, parse_args()))
