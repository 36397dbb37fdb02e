"""The diffusion formulations (vp, edm, flow) behind one interface, and the samplers written against it.

    formulation = build_formulation(config["diffusion"])
    loss = formulation.loss(network, x0, cond)                      # training
    x0_hat = formulation.denoise(network, y, sigma, cond)             # the preconditioned denoiser
    fields = sample(formulation, network, (1, 64, 64), range(16), seed, x0_range, "heun", 18)
"""
from cosmodiff.diffusion.formulations import FORMULATIONS, build_formulation
from cosmodiff.diffusion.samplers import (DEFAULT_SAMPLER, GRIDS, SAMPLERS, network_evaluations, noise_levels,
                                         parse_setting, sample, sampler_steps)

__all__ = ["DEFAULT_SAMPLER", "FORMULATIONS", "GRIDS", "SAMPLERS", "noise_levels", "build_formulation", "network_evaluations", "parse_setting", "sample",
           "sampler_steps"]
