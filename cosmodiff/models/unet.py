"""denoising-diffusion-pytorch's Unet on one channel with circular padding: periodic fields in, periodic out.

Every padded convolution wraps around (padding_mode='circular'); downsampling is a pixel unshuffle
and attention is permutation-equivariant, so the network commutes exactly with periodic shifts by
multiples of its downsampling factor. Its parameters keep the library's names, so run folders
trained on the plain Unet load unchanged.
"""
from denoising_diffusion_pytorch import Unet
from torch import nn


def make_periodic(module):
    """Switch every zero-padded convolution of a module to circular padding, in place."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d) and any(layer.padding):
            layer.padding_mode = "circular"
    return module


class PeriodicUnet(Unet):
    """The library's Unet called the way every network here is: forward(x, noise_level, cond=None)."""

    def __init__(self, **kwargs):
        super().__init__(channels=1, **kwargs)
        make_periodic(self)

    def forward(self, x, noise_level, cond=None):
        if cond is not None:
            raise ValueError("this network was built without a condition; it takes cond=None")
        return super().forward(x, noise_level)
