"""Train the learned baselines: neural posterior estimation (sbi's NPE, cosmodiff/npe.py) of the
parameters from a field's summary (--summary field: a CNN on the field; power_spectrum: its ln P(k)),
on the same training data a conditional diffusion run uses, under a flat prior on the training set's
ranges (the diffusion run's prior).

    python evaluate/train_npe.py [--data_path train_data/conditional] [--condition Omega_m,sigma_8] \
        [--summary field] [--max_epochs 200] [--out results/npe]
    python evaluate/infer.py FIELDS --npe results/npe --method npe [--checkpoint RUN --method elbo,power_spectrum,npe]
    python evaluate/infer.py FIELDS --npe_power_spectrum results/npe-pk --method npe_power_spectrum

Writes config.json (the networks' settings, the prior, the data, epochs and seconds),
model.safetensors and logs/ (sbi's TensorBoard log of the losses) to --out. Early stopping holds
out a random tenth of the training pairs (sbi's).
"""
import argparse
import time
from pathlib import Path

import torch

from cosmodiff.cli import ArgumentParser, COUNT, INDEX, POSITIVE, exit_on, writable_folder
from cosmodiff.checkpoint import CheckpointError
from cosmodiff.condition import Condition, parameter_values
from cosmodiff.errors import FieldError
from cosmodiff.launch import set_threads
from cosmodiff.mock import SPLIT_FOLDERS
from cosmodiff.npe import SUMMARIES, save_npe, train_npe
from cosmodiff.data import open_data
from cosmodiff.train_flags import add_data_flags


def main(args):
    set_threads(torch.get_num_threads())
    writable_folder(args.out, "--out")
    fieldset = open_data(args.data_path, args.image_size, colormap=args.colormap, slab_thickness=args.slab_thickness,
                         box_size=args.box_size, mesh=args.mesh, params_file=args.params_file)
    names = [name.strip() for name in args.condition.split(",") if name.strip()]
    condition = Condition.fit(fieldset, names)
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
                                       train_seconds=seconds))
    print(f"NPE trained on {len(fieldset)} fields for {epochs} epochs ({seconds / 60:.1f} min); written: {args.out}")


def build_parser():
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_flags(parser)
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
    return parser


if __name__ == "__main__":
    exit_on((CheckpointError, FieldError, ValueError), main, build_parser().parse_args())
