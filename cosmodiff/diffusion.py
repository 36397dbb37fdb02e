"""Noise schedule, training loss and samplers (DDPM, DDIM, DPM-Solver++), all from one GaussianDiffusion.

denoising-diffusion-pytorch's GaussianDiffusion gives the schedule, the loss and the per-step
predictions. Its sampling loops clamp x0 to [-1, 1] and draw all noise from the global RNG for the
whole batch, so the loops here re-run its DDPM and DDIM updates on x0 clamped to the transform's
`x0_range` (model space is standardised, not squeezed into [-1, 1]) with noise drawn per sample from
(seed, sample index): the same seed gives the same fields whatever the batch size or the number of
processes. DPM-Solver++(2M) is diffusers' DPMSolverMultistepScheduler on this diffusion's betas,
fed the same clamped x0.
"""
import numpy as np
import torch
from denoising_diffusion_pytorch import GaussianDiffusion
from tqdm import tqdm

DEFAULT_STEPS = {"ddpm": None, "ddim": 50, "dpm++": 20, "dpm++sde": 20}  # None: all training timesteps


def build_diffusion(model, image_size, timesteps=1000, objective="pred_v", beta_schedule="sigmoid"):
    """GaussianDiffusion on model-space data already in [-1, 1] (auto_normalize off)."""
    return GaussianDiffusion(model, image_size=image_size, timesteps=timesteps, objective=objective,
                             beta_schedule=beta_schedule, auto_normalize=False)


def per_sample_noise(generators, shape, device):
    """One standard-normal draw of `shape` per sample, each from its own generator."""
    return torch.stack([torch.randn(shape, generator=g) for g in generators]).to(device)


def denoise(diffusion, x, t, x0_range):
    """The network's clean-field estimate clamped to x0_range, and the noise it implies, at timestep t."""
    times = torch.full((len(x),), int(t), device=x.device, dtype=torch.long)
    x_start = diffusion.model_predictions(x, times).pred_x_start.clamp(*x0_range)
    return x_start, diffusion.predict_noise_from_start(x, times, x_start)


def ddpm_loop(diffusion, x, generators, steps, x0_range):
    for t in tqdm(reversed(range(diffusion.num_timesteps)), total=diffusion.num_timesteps, desc="ddpm", leave=False):
        x_start, _ = denoise(diffusion, x, t, x0_range)
        times = torch.full((len(x),), t, device=x.device, dtype=torch.long)
        mean, _, log_variance = diffusion.q_posterior(x_start, x, times)
        noise = per_sample_noise(generators, x.shape[1:], x.device) if t > 0 else 0.0
        x = mean + (0.5 * log_variance).exp() * noise
    return x


def ddim_loop(diffusion, x, generators, steps, x0_range):
    """Deterministic DDIM (eta = 0) on the library's time pairs and clamped predictions."""
    times = torch.linspace(-1, diffusion.num_timesteps - 1, steps=steps + 1).int().tolist()[::-1]
    for time, time_next in tqdm(list(zip(times[:-1], times[1:])), desc="ddim", leave=False):
        x_start, pred_noise = denoise(diffusion, x, time, x0_range)
        if time_next < 0:
            return x_start
        alpha_next = diffusion.alphas_cumprod[time_next]
        x = x_start * alpha_next.sqrt() + (1 - alpha_next).sqrt() * pred_noise
    return x


def dpm_solver_loop(diffusion, x, generators, steps, x0_range, stochastic=False):
    """DPM-Solver++(2M), or its SDE variant, which re-injects per-sample noise at every step."""
    from diffusers import DPMSolverMultistepScheduler

    scheduler = DPMSolverMultistepScheduler(
        num_train_timesteps=diffusion.num_timesteps, trained_betas=diffusion.betas.double().cpu().numpy(),
        prediction_type="sample", algorithm_type="sde-dpmsolver++" if stochastic else "dpmsolver++", solver_order=2)
    scheduler.set_timesteps(steps, device=x.device)
    for t in tqdm(scheduler.timesteps, desc="dpm++sde" if stochastic else "dpm++", leave=False):
        x_start, _ = denoise(diffusion, x, t, x0_range)
        noise = per_sample_noise(generators, x.shape[1:], x.device) if stochastic else None
        x = scheduler.step(x_start, t, x, variance_noise=noise).prev_sample
    return x


def dpm_solver_sde_loop(diffusion, x, generators, steps, x0_range):
    return dpm_solver_loop(diffusion, x, generators, steps, x0_range, stochastic=True)


SAMPLERS = {"ddpm": ddpm_loop, "ddim": ddim_loop, "dpm++": dpm_solver_loop, "dpm++sde": dpm_solver_sde_loop}


def sampler_steps(diffusion, sampler, steps):
    """The number of steps a sampler runs; DDPM always runs every training timestep."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler '{sampler}'; choose one of {', '.join(SAMPLERS)}")
    if sampler == "ddpm":
        if steps not in (None, diffusion.num_timesteps):
            raise ValueError(f"ddpm runs all {diffusion.num_timesteps} training timesteps; use ddim or dpm++ for {steps} steps")
        return diffusion.num_timesteps
    steps = steps or DEFAULT_STEPS[sampler]
    if not 1 <= steps <= diffusion.num_timesteps:
        raise ValueError(f"steps must be between 1 and {diffusion.num_timesteps}, got {steps}")
    return steps


@torch.inference_mode()
def sample(diffusion, sample_indices, seed, x0_range, sampler="ddim", steps=None):
    """Model-space samples (B, 1, H, W) for the given global sample indices, with every predicted
    clean field clamped to x0_range (the transform's); sample i's noise comes from a generator seeded
    with (seed, i) alone."""
    steps = sampler_steps(diffusion, sampler, steps)
    generators = [torch.Generator().manual_seed(int(np.random.SeedSequence([seed, i]).generate_state(1)[0]))
                  for i in sample_indices]
    height, width = diffusion.image_size
    device = diffusion.betas.device
    x = per_sample_noise(generators, (diffusion.channels, height, width), device)
    return SAMPLERS[sampler](diffusion, x, generators, steps, x0_range)
