"""Model registry: a preset name -> constructor and keyword arguments, stored in a run's config.json."""
import inspect

from cosmodiff.models.unet import periodic_unet

MODELS = {
    # CPU default: trains the default 64x64 data on 2 CPU cores in minutes.
    "unet": (periodic_unet, dict(dim=16, dim_mults=(1, 2, 4, 8), attn_heads=2, attn_dim_head=16)),
    # The earlier work's network: 512x512 fields, flash attention where available.
    "unet-paper": (periodic_unet, dict(dim=32, dim_mults=(1, 2, 4, 4, 8), flash_attn=True)),
}


def model_kwargs(name, image_size):
    """A preset's full keyword arguments for one image size (stored in config.json to rebuild the model)."""
    if name not in MODELS:
        raise ValueError(f"unknown model '{name}'; choose one of {', '.join(MODELS)}")
    constructor, preset = MODELS[name]
    needs_size = "image_size" in inspect.signature(constructor).parameters
    return dict(preset, **({"image_size": image_size} if needs_size else {}))


def build_model(name, kwargs):
    """The network of a registry entry from its stored keyword arguments."""
    if name not in MODELS:
        raise ValueError(f"unknown model '{name}'; choose one of {', '.join(MODELS)}")
    return MODELS[name][0](**kwargs)
