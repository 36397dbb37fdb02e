"""Physical units <-> model space, exactly invertible, and periodic augmentation of training batches.

Model space is log density mapped affinely into [-1, 1]. denoising-diffusion-pytorch clamps the
predicted clean field x0 to [-1, 1] at every sampling step (`model_predictions(clip_x_start=True)`
in DDIM, `p_mean_variance(clip_denoised=True)` in DDPM; our DPM-Solver++ does the same), so a
generated field can never leave [-1, 1]. The transform therefore maps the training set's log range
to [-1 + HEADROOM, 1 - HEADROOM]: fields a little beyond the training extremes stay reachable and
the clamp only cuts what is far outside anything seen in training.
"""
from dataclasses import asdict, dataclass

import numpy as np
import torch

HEADROOM = 0.05


@dataclass
class LogTransform:
    """x = affine(log(rho / scale + eps)), rho = f + offset (offset 1 for overdensity fields).

    Zeros are honest: eps is half the smallest positive rho / scale of the training set (the data's
    own resolution floor), so an empty pixel maps to log(eps) and inverts back to exactly 0 up to
    float rounding, which `inverse` clamps at 0.
    """
    offset: float
    scale: float
    eps: float
    log_min: float
    log_max: float

    @classmethod
    def fit(cls, fields):
        fields = np.asarray(fields, np.float64)
        offset = 1.0 if fields.min() < 0 else 0.0
        rho = fields + offset
        scale = float(rho.mean())
        positive = rho[rho > 0]
        eps = 0.5 * float(positive.min()) / scale if positive.size else 1e-6
        logs = np.log(rho / scale + eps)
        return cls(offset=offset, scale=scale, eps=eps, log_min=float(logs.min()), log_max=float(logs.max()))

    def _slope(self):
        return 2 * (1 - HEADROOM) / (self.log_max - self.log_min)

    def forward(self, fields):
        """Physical fields (numpy or torch) -> model space in [-1 + HEADROOM, 1 - HEADROOM] on the training set."""
        lib = torch if isinstance(fields, torch.Tensor) else np
        rho = lib.clamp(fields + self.offset, min=0) if lib is torch else np.maximum(fields + self.offset, 0)
        logs = lib.log(rho / self.scale + self.eps)
        return (logs - self.log_min) * self._slope() - (1 - HEADROOM)

    def inverse(self, x):
        """Model space -> physical fields, the exact inverse of forward (densities clamped at >= 0)."""
        lib = torch if isinstance(x, torch.Tensor) else np
        logs = (x + (1 - HEADROOM)) / self._slope() + self.log_min
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
