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
import argparse
import sys

from cosmodiff.checkpoint import CheckpointError
from cosmodiff.cli import ArgumentParser, add_settings, exit_on
from cosmodiff.config import GROUPS, train_config
from cosmodiff.fields import FieldError
from cosmodiff.training import TrainingError, run_training


def main(args):
    """Trains; returns the exit status (cosmodiff.training.run_training)."""
    status, _ = run_training(train_config(**vars(args)))
    return status


PARSER = add_settings(ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter),
                      GROUPS)


def parse_args(argv=None):
    return PARSER.parse_args(argv)


if __name__ == "__main__":
    sys.exit(exit_on((FieldError, CheckpointError, TrainingError, ValueError), main, parse_args()))
