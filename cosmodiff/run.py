"""Run assembly: what a training run is built from its settings (config.TrainConfig: train.py's flags, or a resumed
run's config.json): the field set, the condition, the fidelity check, the network, formulation, EMA
and optimizer, and the config a run folder stores. cosmodiff.training is the loop around it."""
import dataclasses
from pathlib import Path

import torch
from ema_pytorch import EMA

from cosmodiff.checkpoint import FORMAT
from cosmodiff.condition import Condition
from cosmodiff.diffusion import FORMULATIONS, build_formulation
from cosmodiff.data import open_data
from cosmodiff.fields import fit_image_size, load_fields
from cosmodiff.models import build_model, model_kwargs
from cosmodiff.validation import Validation


def training_fields(settings):
    """The training set of the settings: open_data of its data flags."""
    return open_data(settings.data_path, settings.image_size, colormap=settings.colormap,
                     slab_thickness=settings.slab_thickness, box_size=settings.box_size, mesh=settings.mesh,
                     params_file=settings.params_file)


def training_condition(settings, resumed, fieldset):
    """The run's Condition: the resumed run's, one fitted on the training set for --condition, or None."""
    if resumed:
        return Condition.from_dict(resumed["condition"]) if resumed.get("condition") else None
    if not settings.condition:
        return None
    return Condition.fit(fieldset, [name.strip() for name in settings.condition.split(",") if name.strip()])


def validation_set(settings, transform, condition):
    """The in-training fidelity check against --val_path, else the test split next to the training
    data; None with --val_samples 0 or no such split."""
    path = Path(settings.val_path) if settings.val_path else split_test(settings.data_path)
    if not settings.val_samples or path is None:
        return None
    fieldset = fit_image_size(load_fields(path, box_size=settings.box_size), settings.image_size)
    return Validation(fieldset, settings.val_samples, settings.val_sampler, settings.val_steps, transform, condition)


def build_training(settings, accelerator, resumed, fieldset, condition, transform):
    """The network (a resumed run's stored kwargs, else the preset's), formulation, EMA, prepared model
    and optimizer, and the run's config at step 0."""
    kwargs = resumed["model"]["kwargs"] if resumed else model_kwargs(settings.model, settings.image_size)
    if condition and not resumed:
        kwargs["cond_dim"] = len(condition.names)
    network = build_model(settings.model, kwargs)
    formulation = (build_formulation(resumed["diffusion"]) if resumed else
                   FORMULATIONS[settings.formulation].from_settings(settings))  # each formulation reads its own flags
    ema = EMA(network, beta=settings.ema_decay, update_after_step=10, update_every=1, include_online_model=False,
              param_or_buffer_names_no_ema={name for name, _ in network.named_buffers()})
    ema.to(accelerator.device)
    optimizer = torch.optim.AdamW(network.parameters(), lr=settings.lr, weight_decay=0.0)
    model, optimizer = accelerator.prepare(network, optimizer)
    config = dict(format=FORMAT, model={"name": settings.model, "kwargs": kwargs}, diffusion=formulation.settings(),
                  image_size=settings.image_size, box_size=fieldset.box_size, transform=transform.to_dict(),
                  sampling_timesteps=settings.sampling_timesteps, param_names=fieldset.param_names,
                  condition=condition.to_dict() if condition else None,
                  data={"path": str(settings.data_path), "n_fields": len(fieldset)},
                  n_parameters=sum(p.numel() for p in network.parameters()), mixed_precision=accelerator.mixed_precision,
                  num_processes=accelerator.num_processes, train_args=dataclasses.asdict(settings), step=0)
    return network, formulation, ema, model, optimizer, config


def split_test(data_path):
    """The held-out fields next to training data (its split's test.npz), or None."""
    path = Path(data_path) / "test.npz"
    return path if path.is_file() else None


def test_split_of(config):
    """A run's split_test: what the evaluation compares a run with when not told otherwise."""
    data_path = config.get("data", {}).get("path")
    return split_test(data_path) if data_path else None
