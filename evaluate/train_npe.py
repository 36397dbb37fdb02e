"""Train the learned baselines: neural posterior estimation (sbi's NPE, cosmodiff/inference/npe.py) of the
parameters from a field's summary (--summary field: a CNN on the field; power_spectrum: its ln P(k)),
on the same training data a conditional diffusion run uses, under a flat prior on the training set's
ranges (the diffusion run's prior).

    python evaluate/train_npe.py [--data_path train_data/conditional] [--condition Omega_m,sigma_8] \
        [--summary field] [--max_epochs 200] [--out results/npe]
    python evaluate/infer.py FIELDS --npe results/npe --method npe [--checkpoint RUN --method elbo,power_spectrum,npe]
    python evaluate/infer.py FIELDS --npe_power_spectrum results/npe-pk --method npe_power_spectrum
    python evaluate/train_npe.py --data_path train_data/conditional-nonlinear --emulator RUN \
        [--emulated_cosmologies 2000] [--emulated_fields N] [--emulator_steps 10] [--out results/npe-emulated]

--emulator RUN trains on fields the conditional run samples instead of the data's (cosmodiff.emulate):
at the data's cosmologies with as many fields at each as the data has, or, with
--emulated_cosmologies M, at M points of a Latin hypercube over the run's training ranges with the
data's number of fields spread over them (--emulated_fields N: about N fields in all, the same number
at each cosmology; --emulator_steps, --emulator_guidance: the sampler's steps and guidance). The emulated set is written to --out as emulated.npz, and
config.json records the emulator, the cosmologies and the CPU-seconds per emulated field.

Writes config.json (the networks' settings, the prior, the data, epochs and seconds),
model.safetensors and logs/ (sbi's TensorBoard log of the losses) to --out. Early stopping holds
out a random tenth of the training pairs (sbi's).
"""
import argparse
import time
from pathlib import Path

import numpy as np
import torch

from cosmodiff.api import load
from cosmodiff.cli import ArgumentParser, COUNT, GUIDANCE, INDEX, POSITIVE, add_settings, exit_on, writable_folder
from cosmodiff.checkpoint import CheckpointError, output_lock
from cosmodiff.condition import DEFAULT_GUIDANCE, Condition, fields_by_point, parameter_values
from cosmodiff.diffusion.samplers import DEFAULT_SAMPLER
from cosmodiff.emulate import emulated_set, latin_hypercube
from cosmodiff.errors import FieldError
from cosmodiff.launch import set_threads
from cosmodiff.mock import SPLIT_FOLDERS
from cosmodiff.inference.npe import SUMMARIES, save_npe, train_npe
from cosmodiff.data import open_data
from cosmodiff.fields import save_fields


def emulated_training_set(args, fieldset, names):
    """The emulator's fields in place of the data's (at the data's cosmologies, or on a Latin hypercube of
    --emulated_cosmologies points over the run's ranges), written to --out/emulated.npz; the prior's
    bounds (the run's training ranges); and what config.json records of the emulation."""
    emulator = load(args.emulator)
    if emulator.condition is None or emulator.condition.names != names:
        raise ValueError(f"--emulator {args.emulator}: conditioned on "
                         f"{', '.join(emulator.condition.names) if emulator.condition else 'nothing'}; the NPE infers "
                         f"{', '.join(names)} (--condition), which the emulator must be conditioned on, in that order")
    low, high = emulator.condition.low, emulator.condition.high
    if args.emulated_cosmologies:
        points = latin_hypercube(args.emulated_cosmologies, low, high, seed=args.seed)
    else:
        points = np.array(list(fields_by_point(fieldset, names, args.data_path)))
    fields_per_point = max(1, round((args.emulated_fields or len(fieldset)) / len(points)))
    started = time.process_time()
    emulated = emulated_set(emulator, points, fields_per_point, guidance=args.emulator_guidance,
                            steps=args.emulator_steps, seed=args.seed)
    cpu_seconds = time.process_time() - started
    save_fields(Path(args.out) / "emulated.npz", emulated)
    print(f"Emulated {len(emulated)} fields at {len(points)} cosmologies ({cpu_seconds / len(emulated):.2f} "
          "CPU-s per field)")
    return emulated, low, high, dict(emulator=str(args.emulator), emulated_cosmologies=len(points),
                                     fields_per_cosmology=fields_per_point, emulator_steps=args.emulator_steps,
                                     emulator_guidance=(DEFAULT_GUIDANCE if args.emulator_guidance is None
                                                        else args.emulator_guidance),
                                     emulation_cpu_seconds=cpu_seconds,
                                     cpu_seconds_per_emulated_field=cpu_seconds / len(emulated))


def main(args):
    set_threads(torch.get_num_threads())
    writable_folder(args.out, "--out")
    with output_lock(args.out, "NPE training"):
        train(args)


def train(args):
    """The NPE of the arguments, written to --out (held by main)."""
    fieldset = open_data(args.data_path, args.image_size, colormap=args.colormap, slab_thickness=args.slab_thickness,
                         box_size=args.box_size, mesh=args.mesh, params_file=args.params_file)
    names = [name.strip() for name in args.condition.split(",") if name.strip()]
    condition = Condition.fit(fieldset, names)
    emulation = {}
    if args.emulator:
        fieldset, condition.low, condition.high, emulation = emulated_training_set(args, fieldset, names)
    theta = parameter_values(fieldset, names, args.data_path)
    inputs = SUMMARIES[args.summary].inputs(fieldset.fields, fieldset.box_size)
    network = SUMMARIES[args.summary].network
    started = time.time()
    estimator, epochs = train_npe(inputs, theta, condition.low, condition.high, Path(args.out) / "logs", network,
                                  seed=args.seed, batch_size=args.batch_size, lr=args.lr, max_epochs=args.max_epochs,
                                  stop_after_epochs=args.patience)
    seconds = time.time() - started
    save_npe(args.out, estimator, dict(names=names, low=condition.low, high=condition.high,
                                       image_size=fieldset.image_size, box_size=fieldset.box_size,
                                       data_path=str(args.data_path), summary=args.summary,
                                       input_shape=list(inputs.shape[1:]), network=network, fields=len(fieldset),
                                       seed=args.seed, batch_size=args.batch_size, lr=args.lr, epochs=epochs,
                                       patience=args.patience,
                                       train_seconds=seconds, **emulation))
    print(f"NPE trained on {len(fieldset)} fields for {epochs} epochs ({seconds / 60:.1f} min); written: {args.out}")


def build_parser():
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_settings(parser, ["data"])
    parser.set_defaults(data_path=str(SPLIT_FOLDERS["conditional"]))
    parser.add_argument("--condition", default="Omega_m,sigma_8", help="the parameters to infer (comma-separated)")
    parser.add_argument("--summary", choices=list(SUMMARIES), default="field",
                        help="what the NPE reads: the field (a CNN) or its ln P(k)")
    parser.add_argument("--max_epochs", type=COUNT, default=200)
    parser.add_argument("--patience", type=COUNT, default=10, help="epochs without a better validation loss before stopping")
    parser.add_argument("--batch_size", type=COUNT, default=128)
    parser.add_argument("--lr", type=POSITIVE, default=5e-4)
    parser.add_argument("--seed", type=INDEX, default=0)
    parser.add_argument("--out", default="results/npe")
    parser.add_argument("--emulator", default=None, help="a conditional run folder: train on its fields instead of "
                        "the data's")
    parser.add_argument("--emulated_cosmologies", type=COUNT, default=None, help="with --emulator: this many "
                        "cosmologies on a Latin hypercube over the run's ranges (default: the data's cosmologies)")
    parser.add_argument("--emulated_fields", type=COUNT, default=None, help="with --emulator: about this many fields "
                        "in all, the same number at each cosmology (default: as many as the data has)")
    parser.add_argument("--emulator_steps", type=COUNT, default=None, help="with --emulator: its sampler's steps "
                        f"({DEFAULT_SAMPLER}; default: its default steps)")
    parser.add_argument("--emulator_guidance", type=GUIDANCE, default=None, help="with --emulator: its classifier-free "
                        f"guidance weight W (default {DEFAULT_GUIDANCE:g}; 1: the conditional model alone)")
    return parser


if __name__ == "__main__":
    exit_on((CheckpointError, FieldError, ValueError), main, build_parser().parse_args())
