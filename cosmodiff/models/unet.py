"""denoising-diffusion-pytorch's Unet on one channel with circular padding: periodic fields in, periodic out.

Every padded convolution wraps around (padding_mode='circular'); downsampling is a pixel unshuffle
and attention is permutation-equivariant, so the network commutes exactly with periodic shifts by
multiples of its downsampling factor. Its parameters keep the library's names, so run folders
trained on the plain Unet load unchanged.
"""
from denoising_diffusion_pytorch import Unet
from torch import nn

from cosmodiff.models.conditioning import ConditionEmbedding, check_unconditional


def make_periodic(module):
    """Switch every zero-padded convolution of a module to circular padding, in place."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d) and any(layer.padding):
            layer.padding_mode = "circular"
    return module


def add_condition(time_mlp, inputs, time):
    """time_mlp's forward hook: the condition embedding of this call (set by PeriodicUnet.forward) added
    to the time embedding. It reads the module it is called with, so copies (EMA) keep their own."""
    return time + time_mlp.condition


class PeriodicUnet(Unet):
    """The library's Unet called the way every network here is: forward(x, noise_level, cond=None).

    With cond_dim > 0 the embedding of the condition (B, cond_dim) is added to the time embedding that
    every residual block receives (a forward hook on the library's time_mlp, so its code stays its own).
    """

    def __init__(self, cond_dim=0, full_attn=None, **kwargs):
        # config.json stores tuples as lists, and the library reads a list as one stage's setting
        super().__init__(channels=1, full_attn=None if full_attn is None else tuple(full_attn), **kwargs)
        make_periodic(self)
        self.cond_embedding = None
        if cond_dim:
            self.cond_embedding = ConditionEmbedding(cond_dim, self.time_mlp[-1].out_features)
            self.time_mlp.register_forward_hook(add_condition)

    def forward(self, x, noise_level, cond=None):
        if self.cond_embedding is None:
            check_unconditional(cond)
        else:
            self.time_mlp.condition = self.cond_embedding(cond, len(x))
        return super().forward(x, noise_level)
