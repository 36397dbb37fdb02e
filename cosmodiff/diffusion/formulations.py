"""The diffusion formulations (vp, edm, flow) in one form, so that one loss and one set of samplers serve all.

Every formulation is written in the noise-level view of Karras et al. 2022 (EDM, Table 1): a noisy
field is y = x0 + sigma * noise at noise level sigma, and the clean-field estimate (the denoiser) is

    D(y, sigma, cond) = c_skip(sigma) y + c_out(sigma) F(c_in(sigma) y, c_noise(sigma), cond)

with F the network. The formulations differ only in these four coefficients, in the noise levels
drawn for training with their loss weight, and in the noise-level grids they sample on:

- vp: the earlier work's DDPM (Ho et al. 2020) on denoising-diffusion-pytorch's discrete schedules
  (sigmoid by default) with v-, noise- or x0-prediction; the network's input is the scaled field
  sqrt(alpha_bar) (x0 + sigma noise) and c_noise the (fractional) training timestep. The loss is that
  library's GaussianDiffusion.p_losses, so run folders trained before this module keep their meaning.
- edm: Karras et al. 2022, sigma_data the model space's spread, ln sigma ~ N(P_mean, P_std^2), EDM's
  loss weight (unit weight on the network's own target).
- flow: rectified flow / the linear interpolant x_t = (1 - t) x0 + t noise with a velocity target
  noise - x0 and logit-normal t (Esser et al. 2024); sigma = t / (1 - t).

edm and flow, trained on continuous noise levels, give the network EDM's c_noise = ln(sigma) / 4 (for
flow ln sigma = logit t): a few radians of the time embeddings' top frequency over the range.
Scaled to 0-1000 like vp's timesteps, the top frequencies turn into noise over a continuous range
(the README's formulation study measured what that cost). vp's network saw only whole timesteps, so
its grids are snapped to them (`VP.snap`).
"""
import math

import numpy as np
import torch
from denoising_diffusion_pytorch.denoising_diffusion_pytorch import (cosine_beta_schedule, linear_beta_schedule,
                                                                     sigmoid_beta_schedule)

from cosmodiff.ranges import FINITE, POSITIVE, Number

BETA_SCHEDULES = {"sigmoid": sigmoid_beta_schedule, "cosine": cosine_beta_schedule, "linear": linear_beta_schedule}


def karras_grid(sigma_min, sigma_max, steps, rho=7.0):
    """EDM's noise levels: `steps` levels from sigma_max to sigma_min, uniform in sigma^(1/rho), then 0."""
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    inverse_min, inverse_max = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (inverse_max + ramp * (inverse_min - inverse_max)) ** rho
    return torch.cat([sigmas, torch.zeros(1, dtype=torch.float64)])


def squared_error(error, k_power=0.0):
    """Each field's mean squared error (B,); with k_power its modes weighted by max(|k|, 1)^k_power,
    normalised to a mean weight of 1, so that a white error costs the same at any k_power (Parseval)."""
    if not k_power:
        return (error ** 2).mean(dim=(1, 2, 3))
    size = error.shape[-1]
    k = torch.fft.fftfreq(size, 1 / size, device=error.device)
    weight = (k[:, None] ** 2 + k[None, :] ** 2).sqrt().clamp(min=1) ** k_power
    modes = torch.fft.fft2(error, norm="ortho")
    return ((weight / weight.mean()) * modes.abs() ** 2).mean(dim=(1, 2, 3))


class Formulation:
    """What every formulation provides; subclasses set the coefficients and the training noise levels."""

    name = None
    flags = {}  # train.py's flags of the formulation: name -> argparse options (help says what it sets)
    chain_steps = None  # the training timesteps of a discrete chain (vp), which DDPM steps through
    max_steps = 10000  # the most steps a sampler may take

    @classmethod
    def from_settings(cls, settings):
        """The formulation a new run trains with, from its TrainConfig (cosmodiff.config: train.py's flags)."""
        return cls(**{name: getattr(settings, name) for name in cls.flags})

    def settings(self):
        """The constructor's arguments and the name: what config.json stores to rebuild it."""
        raise NotImplementedError

    def precondition(self, sigma):
        """(c_skip, c_out, c_in, c_noise) for float64 noise levels sigma (B,)."""
        raise NotImplementedError

    def training_sigmas(self, batch, device):
        """Noise levels (B,) drawn for training and the loss weight (B,) on the network's target."""
        raise NotImplementedError

    def prior_std(self, sigma):
        """The spread of y at the grid's top noise level that sampling starts from."""
        raise NotImplementedError

    def time_grid(self, steps):
        """`steps` noise levels uniform in the formulation's own time, then 0."""
        raise NotImplementedError

    def ddim_grid(self, steps):
        """The levels DDIM steps through: the time grid unless the formulation has its own."""
        return self.time_grid(steps)

    def karras_grid(self, steps):
        """EDM's rho = 7 levels between the formulation's extremes (at most EDM's sigma_max of 80)."""
        return self.snap(karras_grid(self.sigma_min, min(self.sigma_max, 80.0), steps))

    def log_grid(self, steps):
        """Levels uniform in ln sigma between the formulation's extremes (at most 80), then 0: DPM-Solver's
        logSNR spacing. With an exact denoiser it keeps the power of low-spread (small-scale) modes that
        the time and rho = 7 grids lose or overshoot (benchmarks/sampler_accuracy.py)."""
        top = min(self.sigma_max, 80.0)
        sigmas = torch.logspace(math.log10(top), math.log10(self.sigma_min), steps, dtype=torch.float64)
        return self.snap(torch.cat([sigmas, torch.zeros(1, dtype=torch.float64)]))

    def snap(self, sigmas):
        """A grid the network can be asked about as it is (vp moves it to its training timesteps)."""
        return sigmas

    def denoise(self, network, y, sigma, cond=None):
        """The clean-field estimate at noise level sigma (a float or a (B,) tensor), unclamped."""
        sigma = torch.as_tensor(sigma, dtype=torch.float64, device=y.device).expand(len(y))
        c_skip, c_out, c_in, c_noise = (c.to(y.dtype).view(-1, 1, 1, 1) for c in self.precondition(sigma))
        return c_skip * y + c_out * network(c_in * y, c_noise.flatten(), cond)

    def loss(self, network, x0, cond=None, k_power=0.0):
        """The formulation's training loss on a batch of clean fields (B, C, H, W); k_power > 0 weights
        each Fourier mode of the error by |k|^k_power (Schanz, List & Hahn 2023's filter-boosted loss)."""
        sigma, weight = self.training_sigmas(len(x0), x0.device)
        c_skip, c_out, c_in, c_noise = self.precondition(sigma)
        noise = torch.randn_like(x0)
        # Input and target as combinations of x0 and noise, with coefficients in float64: forming
        # y = x0 + sigma noise first loses x0 in float32 at the largest sigmas.
        def combine(a, b):
            return a.to(x0.dtype).view(-1, 1, 1, 1) * x0 + b.to(x0.dtype).view(-1, 1, 1, 1) * noise
        network_input = combine(c_in, c_in * sigma)
        target = combine((1 - c_skip) / c_out, -c_skip * sigma / c_out)
        out = network(network_input, c_noise.to(x0.dtype), cond)
        per_field = squared_error(out.float() - target, k_power)
        return (weight.to(per_field.dtype) * per_field).mean()


class VP(Formulation):
    name = "vp"
    flags = {"timesteps": dict(type=Number(int, 2, 10000), default=1000, help="training timesteps"),
             "objective": dict(default="pred_v", choices=["pred_v", "pred_noise", "pred_x0"], help="the target"),
             "beta_schedule": dict(default="sigmoid", choices=list(BETA_SCHEDULES), help="the noise schedule"),
             "min_snr_gamma": dict(type=POSITIVE, default=None,
                                   help="Min-SNR-gamma loss weighting, the x0-space weight clipped at gamma (e.g. 5)")}

    def __init__(self, timesteps=1000, objective="pred_v", beta_schedule="sigmoid", min_snr_gamma=None):
        if beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"unknown beta schedule '{beta_schedule}'; choose one of {', '.join(BETA_SCHEDULES)}")
        if objective not in ("pred_v", "pred_noise", "pred_x0"):
            raise ValueError(f"unknown objective '{objective}'; choose pred_v, pred_noise or pred_x0")
        self.timesteps, self.objective, self.beta_schedule = timesteps, objective, beta_schedule
        self.min_snr_gamma = min_snr_gamma
        alphas_cumprod = torch.cumprod(1 - BETA_SCHEDULES[beta_schedule](timesteps), dim=0)
        self.sigmas = ((1 - alphas_cumprod) / alphas_cumprod).sqrt()  # float64, increasing with the timestep
        self.log_sigmas = self.sigmas.log()
        snr = 1 / self.sigmas ** 2
        # Min-SNR-gamma (Hang et al. 2023): the x0-space weight snr clipped at gamma, so the low-noise
        # levels, easy to denoise, stop dominating the gradient (the library's min_snr_loss_weight)
        clipped = snr.clamp(max=min_snr_gamma) if min_snr_gamma else snr
        self.loss_weights = {"pred_noise": clipped / snr, "pred_x0": clipped, "pred_v": clipped / (snr + 1)}[objective]
        self.sigma_min, self.sigma_max = self.sigmas[0].item(), self.sigmas[-1].item()
        self.chain_steps = self.max_steps = timesteps  # a grid snaps to the training timesteps

    def settings(self):
        settings = dict(formulation=self.name, timesteps=self.timesteps, objective=self.objective,
                        beta_schedule=self.beta_schedule)
        if self.min_snr_gamma:  # stored only when set: runs without it keep their config as it was
            settings["min_snr_gamma"] = self.min_snr_gamma
        return settings

    def timestep(self, sigma):
        """The fractional training timestep of a noise level: linear in ln sigma between table entries
        (exact at them), clamped to the table."""
        log_sigma = sigma.clamp(self.sigma_min, self.sigma_max).log()
        table = self.log_sigmas.to(sigma.device)
        upper = torch.searchsorted(table, log_sigma).clamp(1, self.timesteps - 1)
        fraction = (log_sigma - table[upper - 1]) / (table[upper] - table[upper - 1])
        return upper - 1 + fraction

    def precondition(self, sigma):
        scale = 1 / (1 + sigma ** 2).sqrt()  # sqrt(alpha_bar)
        c_skip, c_out = {"pred_v": (scale ** 2, -sigma * scale), "pred_noise": (torch.ones_like(sigma), -sigma),
                         "pred_x0": (torch.zeros_like(sigma), torch.ones_like(sigma))}[self.objective]
        return c_skip, c_out, scale, self.timestep(sigma)

    def training_sigmas(self, batch, device):
        steps = torch.randint(0, self.timesteps, (batch,), device=device)
        return self.sigmas.to(device)[steps], self.loss_weights.to(device)[steps]

    def prior_std(self, sigma):
        return math.sqrt(1 + sigma ** 2)  # x_T ~ N(0, 1) in the scaled field

    def time_grid(self, steps):
        """Timesteps linspace(0, T - 1, steps + 1) rounded, the highest `steps` of them, then the clean
        field: diffusers' "linspace" spacing, which the earlier DPM-Solver++ sampled on."""
        times = torch.from_numpy(np.linspace(0, self.timesteps - 1, steps + 1).round()[::-1][:-1].copy()).long()
        return torch.cat([self.sigmas[times], torch.zeros(1, dtype=torch.float64)])

    def ddim_grid(self, steps):
        """DDIM's time pairs as denoising-diffusion-pytorch spaces them: timesteps
        linspace(-1, T - 1, steps + 1) truncated, where -1 is the clean field."""
        times = torch.linspace(-1, self.timesteps - 1, steps=steps + 1).int().flip(0)
        return torch.cat([self.sigmas[times[:-1]], torch.zeros(1, dtype=torch.float64)])

    def snap(self, sigmas):
        """Each level moved to the nearest (in ln sigma) training timestep's; levels that land on the same
        timestep are one (fewer steps than asked only where the table is coarse)."""
        nearest = (self.log_sigmas[None] - sigmas[:-1, None].log()).abs().argmin(dim=1)
        return torch.cat([self.sigmas[nearest.unique()].flip(0), sigmas[-1:]])

    def every_grid(self, steps=None):
        """Every training timestep's noise level, the highest first, then 0: the DDPM chain."""
        return torch.cat([self.sigmas.flip(0), torch.zeros(1, dtype=torch.float64)])


class EDM(Formulation):
    name = "edm"
    flags = {"p_mean": dict(type=FINITE, default=-1.2, help="mean of ln sigma in training"),
             "p_std": dict(type=POSITIVE, default=1.2, help="spread of ln sigma in training")}

    def __init__(self, sigma_data=0.5, p_mean=-1.2, p_std=1.2, sigma_min=0.002, sigma_max=80.0):
        self.sigma_data, self.p_mean, self.p_std = sigma_data, p_mean, p_std
        self.sigma_min, self.sigma_max = sigma_min, sigma_max

    @classmethod
    def from_settings(cls, settings):
        """sigma_data is the model space's spread, --data_std."""
        return cls(sigma_data=settings.data_std, **{name: getattr(settings, name) for name in cls.flags})

    def settings(self):
        return dict(formulation=self.name, sigma_data=self.sigma_data, p_mean=self.p_mean, p_std=self.p_std,
                    sigma_min=self.sigma_min, sigma_max=self.sigma_max)

    def precondition(self, sigma):
        total = (sigma ** 2 + self.sigma_data ** 2).sqrt()
        return self.sigma_data ** 2 / total ** 2, sigma * self.sigma_data / total, 1 / total, sigma.log() / 4

    def training_sigmas(self, batch, device):
        sigma = (self.p_mean + self.p_std * torch.randn(batch, device=device, dtype=torch.float64)).exp()
        return sigma, torch.ones_like(sigma)  # lambda(sigma) c_out^2 = 1: EDM's weight

    def prior_std(self, sigma):
        return sigma

    def time_grid(self, steps):
        return karras_grid(self.sigma_min, self.sigma_max, steps)


class Flow(Formulation):
    name = "flow"
    flags = {"logit_mean": dict(type=FINITE, default=0.0, help="location of logit(t) in training"),
             "logit_std": dict(type=POSITIVE, default=1.0, help="spread of logit(t) in training")}
    T_MAX = 0.999  # sampling starts here: t = 1 is sigma = infinity, where the noise-level view has no field

    def __init__(self, logit_mean=0.0, logit_std=1.0):
        self.logit_mean, self.logit_std = logit_mean, logit_std
        self.sigma_min, self.sigma_max = 1e-3, self.T_MAX / (1 - self.T_MAX)

    def settings(self):
        return dict(formulation=self.name, logit_mean=self.logit_mean, logit_std=self.logit_std)

    def precondition(self, sigma):
        t = sigma / (1 + sigma)
        return 1 - t, -t, 1 - t, sigma.log() / 4

    def training_sigmas(self, batch, device):
        logit = self.logit_mean + self.logit_std * torch.randn(batch, device=device, dtype=torch.float64)
        sigma = logit.exp()  # t / (1 - t) for t = sigmoid(logit)
        return sigma, torch.ones_like(sigma)

    def prior_std(self, sigma):
        return sigma  # EDM's: the field's share of y is negligible at the top level (1 + sigma overshot by 1/sigma)

    def time_grid(self, steps):
        t = self.T_MAX * torch.linspace(1, 0, steps + 1, dtype=torch.float64)
        return t / (1 - t)


FORMULATIONS = {"vp": VP, "edm": EDM, "flow": Flow}


def build_formulation(settings):
    """A formulation from the `diffusion` settings of config.json; folders written before formulations
    existed hold vp's settings without a name."""
    settings = dict(settings)
    name = settings.pop("formulation", "vp")
    if name not in FORMULATIONS:
        raise ValueError(f"unknown formulation '{name}'; choose one of {', '.join(FORMULATIONS)}")
    return FORMULATIONS[name](**settings)
