"""A pixel-space Diffusion Transformer (Peebles & Xie 2023) for one-channel periodic fields.

Patch embedding, fixed 2D sin-cos position embedding, transformer blocks with adaLN-Zero
conditioning on the noise level, a final adaLN layer and unpatchify; no learned sigma. The position
embedding uses only whole-number frequencies of 2 pi / (patches per side), so it is periodic on
the torus like the data. Called as every network here: forward(x, noise_level, cond=None).

With conv_channels > 0 the transformer sits between a convolutional stem and head at full
resolution, all circularly padded: the stem's features feed the patch embedding, and the head
convolves the unpatchified tokens together with the stem's features (a U-ViT long skip), so pixels
on either side of a patch edge, or of the field's border, are computed from each other and the
patch grid leaves no seams. conv_channels = 0 is Peebles & Xie's DiT (run folders of it load as
they were).
"""
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cosmodiff.models.conditioning import ConditionEmbedding, check_unconditional


def periodic_position_embedding(hidden_size, grid):
    """(grid*grid, hidden_size) sin-cos embedding with integer frequencies 1 .. grid/2 - 1 per axis
    (at grid/2 the sine vanishes on every patch)."""
    n_freq = hidden_size // 4
    frequencies = np.round(np.geomspace(1, max(1, grid // 2 - 1), n_freq))
    positions = np.arange(grid)
    angles = 2 * np.pi * positions[:, None] * frequencies[None, :] / grid  # (grid, n_freq)
    per_axis = np.concatenate([np.sin(angles), np.cos(angles)], axis=1)  # (grid, hidden/2)
    rows = np.repeat(per_axis, grid, axis=0)
    columns = np.tile(per_axis, (grid, 1))
    return torch.from_numpy(np.concatenate([rows, columns], axis=1)).float()


def modulate(x, shift, scale):
    return x * (1 + scale[:, None]) + shift[:, None]


class TimestepEmbedder(nn.Module):
    """Sinusoidal embedding of the formulation's noise input (a timestep-like number, 0-1000 for vp), then an MLP."""

    def __init__(self, hidden_size, frequency_size=256):
        super().__init__()
        self.frequency_size = frequency_size
        self.mlp = nn.Sequential(nn.Linear(frequency_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size))

    def forward(self, t):
        half = self.frequency_size // 2
        frequencies = torch.exp(-math.log(10000) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        angles = t.float()[:, None] * frequencies[None]
        return self.mlp(torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1))


class Attention(nn.Module):
    def __init__(self, hidden_size, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, x):
        batch, tokens, channels = x.shape
        q, k, v = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, channels))


class DiTBlock(nn.Module):
    """Self-attention and MLP, each modulated (shift, scale) and gated by the conditioning: adaLN-Zero."""

    def __init__(self, hidden_size, num_heads, mlp_ratio=4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        hidden_mlp = int(hidden_size * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(hidden_size, hidden_mlp), nn.GELU(approximate="tanh"),
                                 nn.Linear(hidden_mlp, hidden_size))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))

    def forward(self, x, c):
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate_msa[:, None] * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        return x + gate_mlp[:, None] * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


class FinalLayer(nn.Module):
    def __init__(self, hidden_size, patch_size, out_channels):
        super().__init__()
        self.norm = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x, c):
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm(x), shift, scale))


def circular_conv(in_channels, out_channels):
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, padding_mode="circular")


class DiT(nn.Module):
    channels = 1

    def __init__(self, image_size, patch_size, hidden_size, depth, num_heads, mlp_ratio=4.0, cond_dim=0,
                 conv_channels=0):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image size {image_size} is not a multiple of the patch size {patch_size}")
        self.patch_size = patch_size
        self.grid = image_size // patch_size
        self.out_dim = conv_channels or 1  # what the tokens unpatchify to: the head's input, or the output
        if conv_channels:
            self.stem = nn.Sequential(circular_conv(self.channels, conv_channels), nn.GELU(),
                                      circular_conv(conv_channels, conv_channels))
            self.head = nn.Sequential(circular_conv(2 * conv_channels, conv_channels), nn.GELU(),
                                      circular_conv(conv_channels, self.channels))
        self.conv_channels = conv_channels
        self.x_embedder = nn.Conv2d(conv_channels or self.channels, hidden_size, kernel_size=patch_size,
                                    stride=patch_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.c_embedder = ConditionEmbedding(cond_dim, hidden_size) if cond_dim else None  # added to adaLN's input
        self.register_buffer("pos_embed", periodic_position_embedding(hidden_size, self.grid)[None], persistent=False)
        self.blocks = nn.ModuleList([DiTBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth)])
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_dim)
        self.initialize_weights()

    def initialize_weights(self):
        """DiT's initialisation: Xavier linears, zeroed adaLN modulations and output, so a fresh DiT outputs 0."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        weight = self.x_embedder.weight.data
        nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))
        nn.init.zeros_(self.x_embedder.bias)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        for layer in (self.final_layer.adaLN_modulation[-1], self.final_layer.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        if self.conv_channels:
            nn.init.zeros_(self.head[-1].weight)
            nn.init.zeros_(self.head[-1].bias)

    def unpatchify(self, x):
        """(B, T, p*p*C) tokens -> (B, C, H, W)."""
        batch, p, grid = x.shape[0], self.patch_size, self.grid
        x = x.reshape(batch, grid, grid, p, p, self.out_dim)
        return torch.einsum("bhwpqc->bchpwq", x).reshape(batch, self.out_dim, grid * p, grid * p)

    def forward(self, x, noise_level, cond=None):
        features = self.stem(x) if self.conv_channels else x
        x = self.x_embedder(features).flatten(2).transpose(1, 2) + self.pos_embed
        c = self.t_embedder(noise_level)
        if self.c_embedder is None:
            check_unconditional(cond)
        else:
            c = c + self.c_embedder(cond, len(x))
        for block in self.blocks:
            x = block(x, c)
        out = self.unpatchify(self.final_layer(x, c))
        return self.head(torch.cat([out, features], dim=1)) if self.conv_channels else out
