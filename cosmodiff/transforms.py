"""Physical units <-> model space, exactly invertible, and periodic augmentation of training batches.

Model space is log density standardised to a fixed spread, `data_std` (0.5 as in EDM, Karras et
al. 2022, by default). The spread matters: the noise schedule is laid out for data of that scale,
and a smaller one drowns the low-amplitude small scales early in the forward process, where few-step
samplers spend few steps. `log-whitened` also divides each Fourier mode of that field by the
training set's spread at its |k| (equal-SNR diffusion, Falck et al. 2025): white noise then corrupts
every scale at the same rate, where under plain white noise the faint small scales of a red spectrum
drown first. `sqrt` standardises the square root of the density instead: the collapsed peaks, which
the log compresses most, keep more of model space. The samplers clamp each predicted clean field x0
to the training set's model-space range widened by HEADROOM of its width on both sides
(`x0_range`): fields a little beyond the training extremes stay reachable, and the clamp only cuts
what is far outside anything seen in training.
"""
from dataclasses import asdict, dataclass, field as dataclass_field

import numpy as np
import torch

DATA_STD = 0.5
HEADROOM = 0.05


def clamp_range(low, high):
    """(x_min, x_max): the model-space extremes of the training set widened by HEADROOM of their span."""
    margin = HEADROOM * (high - low)
    return float(low - margin), float(high + margin)


def standardisation(values, data_std):
    """Mean and std of the training set's values, and the clamp range of them standardised to data_std."""
    mean, std = float(values.mean()), float(values.std()) or 1.0
    return mean, std, *clamp_range(*(np.array([values.min(), values.max()]) - mean) * (data_std / std))


def densities(fields, offset):
    """rho = fields + offset (numpy or torch), clamped at 0."""
    rho = fields + offset
    return rho.clamp(min=0) if isinstance(rho, torch.Tensor) else np.maximum(rho, 0)


class Transform:
    """What every transform shares: the clamp range of predicted clean fields and a config.json form
    (its dataclass fields and its registry name)."""

    @property
    def x0_range(self):
        """The (low, high) clamp the samplers apply to each predicted clean field."""
        return self.x_min, self.x_max

    def to_dict(self):
        return {"name": self.name, **asdict(self)}

    @classmethod
    def from_dict(cls, config):
        return cls(**{key: value for key, value in config.items() if key != "name"})


@dataclass
class LogTransform(Transform):
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

    name = "log"  # config.json's transform name (a class attribute, not a field)

    @classmethod
    def fit(cls, fields, data_std=DATA_STD):
        fields = np.asarray(fields, np.float64)
        offset = 1.0 if fields.min() < 0 else 0.0
        rho = fields + offset
        scale = float(rho.mean())
        positive = rho[rho > 0]
        eps = 0.5 * float(positive.min()) / scale if positive.size else 1e-6
        logs = np.log(rho / scale + eps)
        log_mean, log_std, x_min, x_max = standardisation(logs, data_std)
        return cls(offset=offset, scale=scale, eps=eps, log_mean=log_mean, log_std=log_std, data_std=data_std,
                   x_min=x_min, x_max=x_max)

    def forward(self, fields):
        """Physical fields (numpy or torch) -> model space, mean 0 and std data_std on the training set."""
        lib = torch if isinstance(fields, torch.Tensor) else np
        logs = lib.log(densities(fields, self.offset) / self.scale + self.eps)
        return (logs - self.log_mean) * (self.data_std / self.log_std)

    def inverse(self, x):
        """Model space -> physical fields, the exact inverse of forward (densities clamped at >= 0)."""
        lib = torch if isinstance(x, torch.Tensor) else np
        logs = x * (self.log_std / self.data_std) + self.log_mean
        return densities((lib.exp(logs) - self.eps) * self.scale, 0) - self.offset


def rfft_wavenumbers(size):
    """|k| of each mode of a (size, size) grid's rfft2, in units of the fundamental."""
    k = np.fft.fftfreq(size, 1 / size)
    return np.sqrt(k[:, None] ** 2 + np.fft.rfftfreq(size, 1 / size)[None, :] ** 2)


def radial_index(size):
    """int(|k|) of each mode of a (size, size) grid's rfft2."""
    return rfft_wavenumbers(size).astype(int)


def radial_filter(fields, gains):
    """Each field's rfft2 modes times gains[int(|k|)]: isotropic, so it commutes with periodic rolls and the
    symmetries of the square, and a filter with no zero gain is inverted by its reciprocal."""
    lib = torch if isinstance(fields, torch.Tensor) else np
    size = fields.shape[-1]
    table = np.asarray(gains, np.float64)[radial_index(size)]
    if lib is torch:
        table = torch.as_tensor(table, dtype=torch.float64 if fields.dtype == torch.float64 else torch.float32,
                                device=fields.device)
    return lib.fft.irfft2(lib.fft.rfft2(fields) * table, s=fields.shape[-2:])


@dataclass
class WhitenedLogTransform(LogTransform):
    """The log transform's field with each mode divided by the training set's spread at its |k| (one
    gain per integer |k| in units of the fundamental, the DC mode sharing |k| = 1's), scaled to data_std:
    every scale of model space has the same power, so white noise drowns them all at the same rate."""
    gains: list = dataclass_field(default_factory=list)

    name = "log-whitened"

    @classmethod
    def fit(cls, fields, data_std=DATA_STD):
        log = LogTransform.fit(fields, data_std)
        logs = log.forward(np.asarray(fields, np.float64))
        size = logs.shape[-1]
        index = radial_index(size)
        power = np.abs(np.fft.rfft2(logs)) ** 2
        mean_power = np.bincount(index.ravel(), weights=power.mean(axis=0).ravel()) / np.bincount(index.ravel())
        mean_power[0] = mean_power[1]
        gains = 1 / np.sqrt(mean_power)
        white = radial_filter(logs, gains)
        gains *= data_std / white.std()
        white *= data_std / white.std()
        x_min, x_max = clamp_range(white.min(), white.max())
        return cls(**dict(asdict(log), x_min=x_min, x_max=x_max), gains=gains.tolist())

    def forward(self, fields):
        return radial_filter(super().forward(fields), self.gains)

    def inverse(self, x):
        return super().inverse(radial_filter(x, 1 / np.asarray(self.gains)))


@dataclass
class SqrtTransform(Transform):
    """x = data_std * (sqrt(rho / scale) - sqrt_mean) / sqrt_std, rho = f + offset (offset 1 for
    overdensity fields): it compresses the collapsed peaks less than the log does, so they keep more of
    model space, while an empty pixel needs no floor (sqrt(0) = 0)."""
    offset: float
    scale: float
    sqrt_mean: float
    sqrt_std: float
    data_std: float
    x_min: float
    x_max: float

    name = "sqrt"

    @classmethod
    def fit(cls, fields, data_std=DATA_STD):
        fields = np.asarray(fields, np.float64)
        offset = 1.0 if fields.min() < 0 else 0.0
        rho = densities(fields, offset)
        scale = float(rho.mean())
        roots = np.sqrt(rho / scale)
        sqrt_mean, sqrt_std, x_min, x_max = standardisation(roots, data_std)
        return cls(offset=offset, scale=scale, sqrt_mean=sqrt_mean, sqrt_std=sqrt_std, data_std=data_std,
                   x_min=x_min, x_max=x_max)

    def forward(self, fields):
        """Physical fields (numpy or torch) -> model space, mean 0 and std data_std on the training set."""
        lib = torch if isinstance(fields, torch.Tensor) else np
        roots = lib.sqrt(densities(fields, self.offset) / self.scale)
        return (roots - self.sqrt_mean) * (self.data_std / self.sqrt_std)

    def inverse(self, x):
        """Model space -> physical fields, the exact inverse of forward (roots clamped at >= 0)."""
        roots = x * (self.sqrt_std / self.data_std) + self.sqrt_mean
        return densities(roots, 0) ** 2 * self.scale - self.offset


TRANSFORMS = {transform.name: transform for transform in (LogTransform, WhitenedLogTransform, SqrtTransform)}


def transform_from_dict(config):
    """The transform a run folder's config.json describes (folders without a name hold the log transform)."""
    name = config.get("name", "log")
    if name not in TRANSFORMS:
        raise ValueError(f"unknown transform '{name}'; choose one of {', '.join(TRANSFORMS)}")
    return TRANSFORMS[name].from_dict(config)


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
