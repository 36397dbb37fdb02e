"""Physical units <-> model space, exactly invertible, and periodic augmentation of training batches.

Model space is log density standardised to a fixed spread, `data_std` (0.5 as in EDM, Karras et
al. 2022, by default). The spread matters: the noise schedule is laid out for data of that scale,
and a smaller one drowns the low-amplitude small scales early in the forward process, where few-step
samplers spend few steps. The samplers clamp each predicted clean field x0 to the training set's
model-space range widened by HEADROOM of its width on both sides (`x0_range`): fields a little
beyond the training extremes stay reachable, and the clamp only cuts what is far outside anything
seen in training.
"""
from dataclasses import asdict, dataclass

import numpy as np
import torch

DATA_STD = 0.5
HEADROOM = 0.05


@dataclass
class LogTransform:
    """x = data_std * (log(rho / scale + eps) - log_mean) / log_std, rho = f + offset (offset 1 for
    overdensity fields).

    Zeros are honest: eps is half the smallest positive rho / scale of the training set (the data's
    own resolution floor), so an empty pixel maps to log(eps) and inverts back to exactly 0 up to
    float rounding, which `inverse` clamps at 0.
    """
    offset: float
    scale: float
    eps: float
    log_mean: float
    log_std: float
    data_std: float
    x_min: float
    x_max: float

    @classmethod
    def fit(cls, fields, data_std=DATA_STD):
        fields = np.asarray(fields, np.float64)
        offset = 1.0 if fields.min() < 0 else 0.0
        rho = fields + offset
        scale = float(rho.mean())
        positive = rho[rho > 0]
        eps = 0.5 * float(positive.min()) / scale if positive.size else 1e-6
        logs = np.log(rho / scale + eps)
        log_mean, log_std = float(logs.mean()), float(logs.std()) or 1.0
        low, high = (np.array([logs.min(), logs.max()]) - log_mean) * (data_std / log_std)
        margin = HEADROOM * (high - low)
        return cls(offset=offset, scale=scale, eps=eps, log_mean=log_mean, log_std=log_std, data_std=data_std,
                   x_min=float(low - margin), x_max=float(high + margin))

    @property
    def x0_range(self):
        """The (low, high) clamp the samplers apply to each predicted clean field."""
        return self.x_min, self.x_max

    def forward(self, fields):
        """Physical fields (numpy or torch) -> model space, mean 0 and std data_std on the training set."""
        lib = torch if isinstance(fields, torch.Tensor) else np
        rho = lib.clamp(fields + self.offset, min=0) if lib is torch else np.maximum(fields + self.offset, 0)
        logs = lib.log(rho / self.scale + self.eps)
        return (logs - self.log_mean) * (self.data_std / self.log_std)

    def inverse(self, x):
        """Model space -> physical fields, the exact inverse of forward (densities clamped at >= 0)."""
        lib = torch if isinstance(x, torch.Tensor) else np
        logs = x * (self.log_std / self.data_std) + self.log_mean
        rho = (lib.exp(logs) - self.eps) * self.scale
        rho = lib.clamp(rho, min=0) if lib is torch else np.maximum(rho, 0)
        return rho - self.offset

    def to_dict(self):
        return {"name": "log", **asdict(self)}

    @classmethod
    def from_dict(cls, config):
        return cls(**{key: value for key, value in config.items() if key != "name"})


def augment_periodic(batch, generator=None):
    """Random periodic roll and one of the 8 symmetries of the square, per field of a (B, C, H, W) batch."""
    out = torch.empty_like(batch)
    shifts = torch.randint(0, batch.shape[-1], (len(batch), 2), generator=generator)
    symmetry = torch.randint(0, 8, (len(batch),), generator=generator)
    for i, field in enumerate(batch):
        field = torch.roll(field, shifts=tuple(shifts[i].tolist()), dims=(-2, -1))
        field = torch.rot90(field, k=int(symmetry[i]) % 4, dims=(-2, -1))
        out[i] = field.flip(-1) if symmetry[i] >= 4 else field
    return out
