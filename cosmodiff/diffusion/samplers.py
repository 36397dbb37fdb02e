"""Samplers written once against a formulation's denoiser, on a grid of noise levels.

The state is the noisy field y = x0 + sigma noise (the formulations' common view), started at the
grid's top level from per-sample noise times the formulation's prior spread. Every clean-field
estimate is clamped to the transform's x0_range. Each update is one of two first-order steps
applied to an estimate of the clean field:

- deterministic (DDIM, Song et al. 2021; Euler on the probability-flow ODE in this view):
  y' = D + (sigma'/sigma) (y - D);
- ancestral (DDPM's posterior, Ho et al. 2020): y' = D + r^2 (y - D) + sigma' sqrt(1 - r^2) z,
  r = sigma'/sigma.

DPM-Solver++(2M) (Lu et al. 2022) feeds them the multistep second-order estimate
D + (D - D_prev) h / (2 h_prev), h = ln(sigma / sigma'), first order on the first and last step:
deterministic for `dpm++`, ancestral for `dpm++sde`. `heun` is EDM's Algorithm 2 (optional churn).
`unipc` is UniPC's predictor-corrector (Zhao et al. 2023), third order, no extra evaluations.
We write these rather than use diffusers' schedulers because one implementation then serves vp,
edm and flow with the same clamp and per-sample noise; for vp they match diffusers' and
denoising-diffusion-pytorch's results (tests and the run-folder regression test).

Sample i's noise comes from a generator seeded with (seed, i) alone, so a seed gives the same
fields for any batch size or number of processes.
"""
import math
from typing import Callable, NamedTuple, Optional

import numpy as np
import torch
from tqdm import tqdm



def deterministic(y, denoised, sigma, sigma_next, noise):
    return denoised + (sigma_next / sigma) * (y - denoised)


def ancestral(y, denoised, sigma, sigma_next, noise):
    ratio = (sigma_next / sigma) ** 2
    return denoised + ratio * (y - denoised) + sigma_next * math.sqrt(1 - ratio) * noise()


def extrapolated(denoised, history, step):
    """The multistep estimate of the clean field over a step of h = step in ln(1/sigma), from this
    step's estimate and the earlier ones in history ((h, estimate) of each earlier step, newest
    last). One earlier step: DPM-Solver++(2M)'s D + (D - D_1) h / (2 h_1); two: the third-order
    DPM-Solver++(3M) correction (Lu et al. 2022), written as the estimate the deterministic update
    needs to take the same step."""
    if not history:
        return denoised
    previous_step, previous = history[-1]
    if len(history) == 1:
        return denoised + (denoised - previous) * step / (2 * previous_step)
    earlier_step, earlier = history[-2]
    r0, r1 = previous_step / step, earlier_step / step
    slope_now, slope_before = (denoised - previous) / r0, (previous - earlier) / r1
    first = slope_now + (slope_now - slope_before) * r0 / (r0 + r1)
    second = (slope_now - slope_before) / (r0 + r1)
    decay = -math.expm1(-step)  # 1 - sigma'/sigma
    phi_2 = 1 - decay / step
    phi_3 = phi_2 / step - 0.5
    return denoised + (phi_2 * first - phi_3 * second) / decay


def multistep(denoiser, y, sigmas, draw, update, order):
    """A one-evaluation-per-step sampler of the given order (1: DDIM/DDPM; 2, 3: DPM-Solver++ 2M, 3M),
    first order on the last step, which lands on the estimate."""
    history = []
    pairs = list(zip(sigmas[:-1].tolist(), sigmas[1:].tolist()))
    for sigma, sigma_next in tqdm(pairs, leave=False, desc="sampling"):
        denoised = denoiser(y, sigma)
        if sigma_next == 0:
            return denoised
        step = math.log(sigma / sigma_next)
        y = update(y, extrapolated(denoised, history[len(history) - order + 1:] if order > 1 else [], step),
                   sigma, sigma_next, draw)
        history.append((step, denoised))
    return y


def unipc_coefficients(step, points):
    """UniPC's (Zhao et al. 2023, B(h) = expm1, data prediction) parts of a step of h = step in
    ln(1/sigma) from the newest of points ((lambda, estimate), newest last): B(h), the differences
    to the earlier estimates over their scaled distances, and the predictor's and corrector's weights
    on them (the corrector's last weight is the new estimate's)."""
    order = len(points)
    lambda_0, estimate_0 = points[-1]
    ratios = [(lambda_k - lambda_0) / step for lambda_k, _ in points[:-1]] + [1.0]
    differences = [(estimate_k - estimate_0) / ratio for (_, estimate_k), ratio in zip(points[:-1], ratios)]
    hh = -step
    b_h = math.expm1(hh)
    phi, factorial, b = b_h / hh - 1, 1, []
    for i in range(1, order + 1):
        b.append(phi * factorial / b_h)
        factorial *= i + 1
        phi = phi / hh - 1 / factorial
    powers = np.array([[ratio ** i for ratio in ratios] for i in range(order)])
    if order <= 2:
        predictor = [0.5] * (order - 1)
    else:
        predictor = list(np.linalg.solve(powers[:-1, :-1], b[:-1]))
    corrector = [0.5] if order == 1 else list(np.linalg.solve(powers, b))
    return b_h, differences, predictor, corrector


def unipc(denoiser, y, sigmas, draw, order=3):
    """UniPC (Zhao et al. 2023), one evaluation per step: each new estimate first corrects the step
    just taken (UniC, from the same evaluation), then the multistep predictor (UniP) of up to `order`
    takes the next; lower orders while the history is short, and the last step lands on the estimate."""
    history, taken = [], None
    pairs = list(zip(sigmas[:-1].tolist(), sigmas[1:].tolist()))
    for sigma, sigma_next in tqdm(pairs, leave=False, desc="unipc"):
        denoised = denoiser(y, sigma)
        if taken is not None:
            base, b_h, differences, weights, estimate_0 = taken
            y = base - b_h * (sum(w * d for w, d in zip(weights[:-1], differences))
                              + weights[-1] * (denoised - estimate_0))
        if sigma_next == 0:
            return denoised
        history = (history + [(-math.log(sigma), denoised)])[-order:]
        step = math.log(sigma / sigma_next)
        b_h, differences, predictor, corrector = unipc_coefficients(step, history)
        base = deterministic(y, denoised, sigma, sigma_next, None)
        taken = base, b_h, differences, corrector, denoised
        y = base - b_h * sum(w * d for w, d in zip(predictor, differences))  # the first step: DDIM
    return y


def heun(denoiser, y, sigmas, draw, churn=0.0, churn_range=(0.05, 50.0)):
    """EDM's second-order sampler; churn > 0 adds noise back on levels inside churn_range (Algorithm 2)."""
    steps = len(sigmas) - 1
    pairs = list(zip(sigmas[:-1].tolist(), sigmas[1:].tolist()))
    for sigma, sigma_next in tqdm(pairs, leave=False, desc="heun"):
        gamma = min(churn / steps, math.sqrt(2) - 1) if churn_range[0] <= sigma <= churn_range[1] else 0.0
        if gamma > 0:
            raised = sigma * (1 + gamma)
            y = y + math.sqrt(raised ** 2 - sigma ** 2) * draw()
            sigma = raised
        denoised = denoiser(y, sigma)
        if sigma_next == 0:  # the Euler step to sigma = 0 lands on the estimate
            return denoised
        slope = (y - denoised) / sigma
        euler = y + (sigma_next - sigma) * slope
        y = y + (sigma_next - sigma) * (slope + (euler - denoiser(euler, sigma_next)) / sigma_next) / 2
    return y


GRIDS = ("time", "ddim", "karras", "log", "every")  # Formulation.<name>_grid; vp's `every` is DDPM's chain


class Sampler(NamedTuple):
    """A sampler: the loop that solves from noise and its keyword arguments, the grid and step count
    it takes when none is named, and how many network evaluations each step costs."""
    grid: str
    loop: Callable
    settings: dict
    default_steps: Optional[int]  # None: every training timestep (ddpm)
    evaluations_per_step: int
    whole_chain: bool = False  # steps through every training timestep: a formulation with a chain (vp)
    takes_churn: bool = False  # EDM's S_churn, noise added back per step


SAMPLERS = {
    "ddpm": Sampler("every", multistep, dict(update=ancestral, order=1), None, 1, whole_chain=True),
    "ddim": Sampler("ddim", multistep, dict(update=deterministic, order=1), 50, 1),
    "euler": Sampler("karras", multistep, dict(update=deterministic, order=1), 50, 1),
    "heun": Sampler("karras", heun, {}, 18, 2, takes_churn=True),
    "dpm++": Sampler("time", multistep, dict(update=deterministic, order=2), 20, 1),
    "dpm++sde": Sampler("time", multistep, dict(update=ancestral, order=2), 20, 1),
    "dpm++3m": Sampler("log", multistep, dict(update=deterministic, order=3), 20, 1),
    "unipc": Sampler("log", unipc, dict(order=3), 20, 1),
}
DEFAULT_SAMPLER = "unipc"  # what generate_images.py, cosmodiff.sample and evaluate/cosmology.py sample with


def noise_levels(formulation, sampler, steps, grid=None):
    """The sampler's grid of `steps` noise levels (its default grid unless one is named), then 0."""
    whole_chain = SAMPLERS[sampler].whole_chain
    if whole_chain and grid not in (None, "every"):
        raise ValueError(f"{sampler} steps through every training timestep; it takes no grid")
    grid = grid or SAMPLERS[sampler].grid
    if grid not in GRIDS or (grid == "every" and not whole_chain):
        raise ValueError(f"unknown grid '{grid}'; choose one of {', '.join(GRIDS[:-1])}")
    return getattr(formulation, f"{grid}_grid")(steps)


def sampler_steps(formulation, sampler, steps):
    """The number of steps a sampler runs; a whole-chain sampler (vp's DDPM) runs every training timestep."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler '{sampler}'; choose one of {', '.join(SAMPLERS)}")
    if SAMPLERS[sampler].whole_chain:
        if formulation.chain_steps is None:
            raise ValueError(f"{sampler} is vp's sampler; for {formulation.name} use dpm++sde (ancestral) or heun")
        if steps not in (None, formulation.chain_steps):
            raise ValueError(f"{sampler} runs all {formulation.chain_steps} training timesteps; use ddim or dpm++ "
                             f"for {steps} steps")
        return formulation.chain_steps
    steps = steps or SAMPLERS[sampler].default_steps
    if not 1 <= steps <= formulation.max_steps:
        raise ValueError(f"steps must be between 1 and {formulation.max_steps}, got {steps}")
    return steps


def network_evaluations(sampler, steps, guidance=1.0):
    """Network evaluations per sample: Heun's last step is a single Euler step; guidance doubles each."""
    per_step = SAMPLERS[sampler].evaluations_per_step
    return (steps * per_step - (per_step - 1)) * (1 if guidance == 1 else 2)


def per_sample_noise(generators, shape, device):
    """One standard-normal draw of `shape` per sample, each from its own generator."""
    return torch.stack([torch.randn(shape, generator=g) for g in generators]).to(device)


@torch.inference_mode()
def sample(formulation, network, shape, sample_indices, seed, x0_range, sampler=DEFAULT_SAMPLER, steps=None, cond=None,
           churn=0.0, grid=None, guidance=1.0):
    """Model-space samples (B, *shape) for the given global sample indices, every clean-field estimate
    clamped to x0_range; churn is heun's; grid names the noise-level grid (default: the sampler's).

    cond (B, P) conditions each sample; guidance W != 1 is classifier-free guidance, the estimate
    D_uncond + W (D_cond - D_uncond) (W = 1: the conditional estimate alone, W = 0: the unconditional).
    """
    steps = sampler_steps(formulation, sampler, steps)
    if guidance != 1 and cond is None:
        raise ValueError("guidance needs a condition; give the parameters to sample at")
    if churn and not SAMPLERS[sampler].takes_churn:
        raise ValueError(f"churn is heun's; {sampler} takes none")
    if cond is not None and not torch.isfinite(cond).all():
        raise ValueError("a condition holds NaN or infinity; a conditional sample takes finite parameters (the "
                         "null condition is chosen by sampling without one)")
    options = dict(churn=churn) if SAMPLERS[sampler].takes_churn else {}
    loop, settings = SAMPLERS[sampler].loop, SAMPLERS[sampler].settings
    sigmas = noise_levels(formulation, sampler, steps, grid)
    generators = [torch.Generator().manual_seed(int(np.random.SeedSequence([seed, i]).generate_state(1)[0]))
                  for i in sample_indices]
    device = next(network.parameters(), torch.empty(0)).device
    y = per_sample_noise(generators, shape, device) * formulation.prior_std(sigmas[0].item())

    def denoiser(y, sigma):
        estimate = formulation.denoise(network, y, sigma, cond)
        if guidance != 1:
            unconditional = formulation.denoise(network, y, sigma, None)
            estimate = unconditional + guidance * (estimate - unconditional)
        return estimate.clamp(*x0_range)

    def draw():
        return per_sample_noise(generators, shape, device)

    fields = loop(denoiser, y, sigmas, draw, **settings, **options)
    finite = torch.isfinite(fields).flatten(1).all(dim=1)
    if not finite.all():
        index = list(sample_indices)[int((~finite).nonzero()[0, 0])]
        raise ValueError(f"sample {index} of seed {seed} is not finite: the network returned NaN or infinity")
    return fields


def parse_setting(text):
    """'sampler:steps[:grid]' (the benchmarks' way of naming a solve) -> (sampler, steps, grid or None)."""
    sampler, steps, grid = (text + "::").split(":")[:3]
    if sampler not in SAMPLERS or not steps.isdigit() or int(steps) < 1 or (grid and grid not in GRIDS):
        raise ValueError(f"'{text}': a sampler setting is sampler:steps[:grid] with a sampler of "
                         f"{', '.join(SAMPLERS)}, steps >= 1 and a grid of {', '.join(GRIDS[:-1])}")
    return sampler, int(steps), grid or None
