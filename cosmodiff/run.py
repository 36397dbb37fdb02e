"""Run assembly: what a training run is built from its settings (train.py's flags, or a resumed
run's config.json): the field set, the condition, the fidelity check, the network, formulation, EMA
and optimizer, and the config a run folder stores. train.py is the loop around it."""
from pathlib import Path

import torch
from ema_pytorch import EMA

from cosmodiff.checkpoint import FORMAT
from cosmodiff.condition import Condition, join_params
from cosmodiff.diffusion import FORMULATIONS, build_formulation
from cosmodiff.fields import fit_image_size, load_fields
from cosmodiff.mock import SPLIT_FOLDERS, ensure_split
from cosmodiff.models import build_model, model_kwargs
from cosmodiff.shards import is_shard_set, open_shards
from cosmodiff.validation import Validation


def training_fields(args):
    """The training set: a default split (made on first use), a split folder's train.npz, or any field
    set, with each simulation's parameters joined from --params_file."""
    data_path = Path(args.data_path)
    for name, folder in SPLIT_FOLDERS.items():
        if data_path.resolve() == folder:
            ensure_split(data_path, name)
    if (data_path / "train.npz").exists():
        data_path = data_path / "train.npz"
    if is_shard_set(data_path):
        fieldset = open_shards(data_path, box_size=args.box_size)
    else:
        fieldset = load_fields(data_path, colormap=args.colormap, slab_thickness=args.slab_thickness,
                               box_size=args.box_size, mesh=args.mesh)
    if args.params_file:
        fieldset = join_params(fieldset, args.params_file)
    return fit_image_size(fieldset, args.image_size)


def training_condition(args, resumed, fieldset):
    """The run's Condition: the resumed run's, one fitted on the training set for --condition, or None."""
    if resumed:
        return Condition.from_dict(resumed["condition"]) if resumed.get("condition") else None
    if not args.condition:
        return None
    return Condition.fit(fieldset, [name.strip() for name in args.condition.split(",") if name.strip()])


def validation_set(args, transform, condition):
    """The in-training fidelity check against --val_path, else the test split next to the training
    data; None with --val_samples 0 or no such split."""
    path = Path(args.val_path) if args.val_path else split_test(args.data_path)
    if not args.val_samples or path is None:
        return None
    fieldset = fit_image_size(load_fields(path, box_size=args.box_size), args.image_size)
    return Validation(fieldset, args.val_samples, args.val_sampler, args.val_steps, transform, condition)


def build_training(args, accelerator, resumed, fieldset, condition, transform):
    """The network (a resumed run's stored kwargs, else the preset's), formulation, EMA, prepared model
    and optimizer, and the run's config at step 0."""
    kwargs = resumed["model"]["kwargs"] if resumed else model_kwargs(args.model, args.image_size)
    if condition and not resumed:
        kwargs["cond_dim"] = len(condition.names)
    network = build_model(args.model, kwargs)
    formulation = (build_formulation(resumed["diffusion"]) if resumed else
                   FORMULATIONS[args.formulation].from_flags(args))  # each formulation reads its own flags
    ema = EMA(network, beta=args.ema_decay, update_after_step=10, update_every=1, include_online_model=False,
              param_or_buffer_names_no_ema={name for name, _ in network.named_buffers()})
    ema.to(accelerator.device)
    optimizer = torch.optim.AdamW(network.parameters(), lr=args.lr, weight_decay=0.0)
    model, optimizer = accelerator.prepare(network, optimizer)
    config = dict(format=FORMAT, model={"name": args.model, "kwargs": kwargs}, diffusion=formulation.settings(),
                  image_size=args.image_size, box_size=fieldset.box_size, transform=transform.to_dict(),
                  sampling_timesteps=args.sampling_timesteps, param_names=fieldset.param_names,
                  condition=condition.to_dict() if condition else None,
                  data={"path": str(args.data_path), "n_fields": len(fieldset)},
                  n_parameters=sum(p.numel() for p in network.parameters()), mixed_precision=accelerator.mixed_precision,
                  num_processes=accelerator.num_processes, train_args=vars(args), step=0)
    return network, formulation, ema, model, optimizer, config


def split_test(data_path):
    """The held-out fields next to training data (its split's test.npz), or None."""
    path = Path(data_path) / "test.npz"
    return path if path.is_file() else None


def test_split_of(config):
    """A run's split_test: what the evaluation compares a run with when not told otherwise."""
    data_path = config.get("data", {}).get("path")
    return split_test(data_path) if data_path else None
