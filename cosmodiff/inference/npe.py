"""Neural posterior estimation (NPE): the learned baselines for the diffusion ELBO. sbi's NPE (a masked
autoregressive flow over the parameters) conditioned on a summary of the field, trained on (field,
parameters) pairs of a Latin hypercube under a flat prior on its ranges: a small CNN on ln(1 + delta)
(what a network learns from the whole field), or ln P(k) (what the same method learns from the power
spectrum alone, so a table separates what the field adds from what the method adds). sbi is the
maintained implementation (Greenberg et al. 2019; Tejero-Cantero et al. 2020); what is ours is only
the folder the networks live in: config.json (what builds them, the summary, the prior) and
model.safetensors (their weights), like a diffusion run folder.
"""
import json
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from cosmodiff.atomic import atomic_path, atomic_write_text
from cosmodiff.checkpoint import CheckpointError
from cosmodiff.ranges import COUNT, FINITE, INDEX, NON_NEGATIVE, POSITIVE, checked_numbers
from cosmodiff.inference.likelihoods import log_power_spectra

NPE_KIND = "npe"
FLOW = dict(model="maf", hidden_features=50, num_transforms=5)  # sbi's MAF


def log_density(fields):
    """The network's input: ln(rho / mean(rho)) per field, with empty pixels floored at a tenth of
    the smallest positive value of the set (the 2D fields here are 1 + delta)."""
    rho = np.asarray(fields, np.float64)
    rho = rho / rho.mean(axis=(-2, -1), keepdims=True)
    floor = 0.1 * rho[rho > 0].min()
    return torch.from_numpy(np.log(np.maximum(rho, floor))).float()


class Summary(NamedTuple):
    """What NPE sees of fields (N, H, W) of a box_size Mpc/h box: inputs(fields, box_size) -> (N, ...),
    and the networks' default settings (an "embedding" entry: sbi's CNN on the inputs; none: the flow
    reads the inputs z-scored per entry)."""
    inputs: Callable
    network: dict


SUMMARIES = {
    # four 3x3 convolutions, each halving the side by max-pooling, then two dense layers: small enough
    # to train on one core in minutes
    "field": Summary(lambda fields, box_size: log_density(fields),
                     dict(embedding=dict(out_channels_per_layer=[8, 16, 32, 32], num_conv_layers=4, kernel_size=3,
                                         num_linear_layers=2, num_linear_units=64, output_dim=16), flow=FLOW)),
    "power_spectrum": Summary(lambda fields, box_size: torch.from_numpy(log_power_spectra(fields, box_size)).float(),
                              dict(flow=FLOW)),
}


def summary_of(config):
    """The summary an NPE folder's config names (folders that name none see the field)."""
    return config.get("summary", "field")


def prior(low, high):
    from sbi.utils import BoxUniform

    return BoxUniform(torch.as_tensor(low, dtype=torch.float32), torch.as_tensor(high, dtype=torch.float32))


def density_estimator_builder(network, input_shape):
    from sbi.neural_nets import posterior_nn
    from sbi.neural_nets.embedding_nets import CNNEmbedding

    if "embedding" not in network:
        return posterior_nn(z_score_x="independent", **network["flow"])
    embedding = CNNEmbedding(input_shape=tuple(input_shape), **network["embedding"])
    return posterior_nn(embedding_net=embedding, z_score_x="structured", **network["flow"])


def train_npe(inputs, theta, low, high, log_dir, network, seed=0, batch_size=128, lr=5e-4, max_epochs=200,
              stop_after_epochs=10, progress=True):
    """A trained sbi density estimator q(theta | inputs) (a Summary's inputs (N, ...)) and the number of
    epochs it took; sbi's TensorBoard log goes to log_dir (by default sbi writes it under the working
    directory)."""
    from sbi.inference import NPE
    from sbi.utils.tracking import TensorBoardTracker
    from torch.utils.tensorboard import SummaryWriter

    torch.manual_seed(seed)
    inference = NPE(prior=prior(low, high), density_estimator=density_estimator_builder(network, inputs.shape[1:]),
                    tracker=TensorBoardTracker(SummaryWriter(str(log_dir))), show_progress_bars=progress)
    inference.append_simulations(torch.as_tensor(theta, dtype=torch.float32), inputs)
    estimator = inference.train(training_batch_size=batch_size, learning_rate=lr, max_num_epochs=max_epochs,
                                stop_after_epochs=stop_after_epochs, show_train_summary=False)
    return estimator, inference.summary["epochs_trained"][-1]


def save_npe(folder, estimator, config):
    """config.json and model.safetensors in folder, each written whole or not at all."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "model.safetensors") as path:
        save_file({name: tensor.contiguous() for name, tensor in estimator.state_dict().items()}, str(path))
    atomic_write_text(folder / "config.json", json.dumps(dict(config, kind=NPE_KIND), indent=1))


def is_npe_run(folder):
    config = Path(folder) / "config.json"
    return config.exists() and json.loads(config.read_text()).get("kind") == NPE_KIND


# an NPE folder's config.json numbers -> the ranges of evaluate/train_npe.py's flags and of the data
NPE_RANGES = {"image_size": COUNT, "input_shape": COUNT, "box_size": POSITIVE, "fields": COUNT, "seed": INDEX,
              "batch_size": COUNT, "lr": POSITIVE, "epochs": INDEX, "patience": COUNT, "train_seconds": NON_NEGATIVE,
              "low": FINITE, "high": FINITE}


def load_npe(folder):
    """(sbi DirectPosterior, config) of an NPE folder; a missing or mismatched file is a CheckpointError."""
    from sbi.inference import DirectPosterior

    folder = Path(folder)
    if not is_npe_run(folder) or not (folder / "model.safetensors").exists():
        raise CheckpointError(f"{folder}: not an NPE folder (config.json of kind '{NPE_KIND}' and model.safetensors); "
                              "make one with evaluate/train_npe.py")
    config = json.loads((folder / "config.json").read_text())
    checked_numbers(config, NPE_RANGES, folder / "config.json", CheckpointError)
    if summary_of(config) not in SUMMARIES:
        raise CheckpointError(f"{folder / 'config.json'}: its summary '{summary_of(config)}' is not one of "
                              f"{', '.join(SUMMARIES)}")
    if not all(a < b for a, b in zip(config["low"], config["high"])):
        raise CheckpointError(f"{folder / 'config.json'}: its prior's 'low' must lie below 'high' in every parameter")
    size, low, high = config["image_size"], config["low"], config["high"]
    input_shape = config.get("input_shape", [size, size])  # folders that record none see the field
    builder = density_estimator_builder(config["network"], input_shape)
    # sbi builds a network from a batch (its standardisation); the stored weights then replace everything
    generator = torch.Generator().manual_seed(0)
    estimator = builder(torch.rand(8, len(low), generator=generator), torch.randn(8, *input_shape, generator=generator))
    try:
        estimator.load_state_dict(load_file(str(folder / "model.safetensors")))
    except (RuntimeError, OSError) as error:
        raise CheckpointError(f"{folder / 'model.safetensors'}: does not match its config.json ({error})") from None
    estimator.eval()
    return DirectPosterior(estimator, prior(low, high)), config


def npe_inputs(config, fields):
    """What the NPE of a folder's config reads of fields (N, H, W) of its box."""
    return SUMMARIES[summary_of(config)].inputs(fields, config["box_size"])


def grid_log_posterior(posterior, inputs, points):
    """ln q(theta | inputs) at every grid point (M, P) for every field's summary inputs (N, ...): (N, M).
    One field at a time: sbi runs the summary network once per (theta, field) pair."""
    theta = torch.as_tensor(points, dtype=torch.float32)[:, None]
    with torch.no_grad():
        return np.stack([posterior.log_prob_batched(theta, x=x[None], norm_posterior=False)[:, 0].double().numpy()
                         for x in inputs])
