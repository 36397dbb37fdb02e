"""denoising-diffusion-pytorch's Unet on one channel with circular padding: periodic fields in, periodic out.

Every padded convolution wraps around (padding_mode='circular'); downsampling is a pixel unshuffle
and attention is permutation-equivariant, so the network commutes exactly with periodic shifts by
multiples of its downsampling factor.
"""
from denoising_diffusion_pytorch import Unet
from torch import nn


def make_periodic(module):
    """Switch every zero-padded convolution of a module to circular padding, in place."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d) and any(layer.padding):
            layer.padding_mode = "circular"
    return module


def periodic_unet(**kwargs):
    return make_periodic(Unet(channels=1, **kwargs))
