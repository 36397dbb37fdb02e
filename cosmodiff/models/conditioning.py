"""The embedding of a cosmology condition that the UNet adds to its time embedding and the DiT to adaLN's."""
import torch
from torch import nn


class ConditionEmbedding(nn.Module):
    """Standardised parameters (B, P) -> (B, dim). Rows with NaN, or cond=None, mean "no condition"
    and get a learned null embedding: what condition dropout trains and classifier-free guidance uses."""

    def __init__(self, n_params, dim):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(n_params, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.null = nn.Parameter(torch.zeros(dim))

    def forward(self, cond, batch):
        if cond is None:
            return self.null.expand(batch, -1)
        dropped = cond.isnan().any(dim=1, keepdim=True)
        return torch.where(dropped, self.null, self.mlp(cond.nan_to_num()))


def check_unconditional(cond):
    if cond is not None:
        raise ValueError("this network was built without a condition; it takes cond=None")
