"""Model registry: a preset name -> constructor and keyword arguments, stored in a run's config.json."""
import inspect

import torch

from cosmodiff.models.dit import DiT
from cosmodiff.models.unet import PeriodicUnet

MODELS = {
    # CPU default: trains the default 64x64 data on 2 CPU cores in minutes.
    "unet": (PeriodicUnet, dict(dim=16, dim_mults=(1, 2, 4, 8), attn_heads=2, attn_dim_head=16)),
    # Twice the default's width (about 4x its parameters and compute): the model-size ablation.
    "unet-m": (PeriodicUnet, dict(dim=32, dim_mults=(1, 2, 4, 8), attn_heads=4, attn_dim_head=16)),
    # The default with full (not linear) attention at 16x16 as well as 8x8: capacity where the
    # long modes meet the collapsed small scales that the squeezed bispectrum measures.
    "unet-attn16": (PeriodicUnet, dict(dim=16, dim_mults=(1, 2, 4, 8), attn_heads=2, attn_dim_head=16,
                                       full_attn=(False, False, True, True))),
    # The earlier work's network: 512x512 fields, flash attention where available.
    "unet-paper": (PeriodicUnet, dict(dim=32, dim_mults=(1, 2, 4, 4, 8), flash_attn=True)),
    # DiT presets in DiT's naming (size/patch), between a circular convolutional stem and head
    # (conv_channels; DiT/README.md); XS is small enough to train on 2 CPU cores.
    "dit-xs/4": (DiT, dict(patch_size=4, hidden_size=128, depth=4, num_heads=4, conv_channels=16)),
    "dit-xs/2": (DiT, dict(patch_size=2, hidden_size=128, depth=4, num_heads=4, conv_channels=16)),
    "dit-s/4": (DiT, dict(patch_size=4, hidden_size=384, depth=12, num_heads=6, conv_channels=32)),
    "dit-s/2": (DiT, dict(patch_size=2, hidden_size=384, depth=12, num_heads=6, conv_channels=32)),
    "dit-b/4": (DiT, dict(patch_size=4, hidden_size=768, depth=12, num_heads=12, conv_channels=32)),
    "dit-b/2": (DiT, dict(patch_size=2, hidden_size=768, depth=12, num_heads=12, conv_channels=32)),
}


def model_kwargs(name, image_size):
    """A preset's full keyword arguments for one image size (stored in config.json to rebuild the model)."""
    if name not in MODELS:
        raise ValueError(f"unknown model '{name}'; choose one of {', '.join(MODELS)}")
    constructor, preset = MODELS[name]
    needs_size = "image_size" in inspect.signature(constructor).parameters
    return dict(preset, **({"image_size": image_size} if needs_size else {}))


def build_model(name, kwargs):
    """The network of a registry entry from its stored keyword arguments.

    Weights are laid out channels-last, which makes the default UNet's CPU training step faster
    (benchmarks/train_throughput.py).
    """
    if name not in MODELS:
        raise ValueError(f"unknown model '{name}'; choose one of {', '.join(MODELS)}")
    return MODELS[name][0](**kwargs).to(memory_format=torch.channels_last)
