"""What the samplers alone cost: the power error of each formulation's grids and samplers when the
denoiser is exact, for Gaussian fields (the linear-theory limit of the model-space log density).

    python benchmarks/sampler_accuracy.py [--spreads 0.15,0.3,0.7,1.5,3] [--settings "ddim:20 dpm++:20:log ..."] \
        [--results benchmarks/results/sampler_accuracy.json]

For fields whose Fourier modes are Gaussian with spread s, the exact denoiser is y s^2 / (s^2 + sigma^2)
per mode, and any exact sampler returns fields of spread s. What a sampler returns instead is its
discretisation error alone: no network, no training. The model space has spread 0.5 over all
scales; low-power (small-scale) modes have small s, large scales large s (the default data: 0.15 at
Nyquist to 3 at k = 1-2 k_F, per mode of the unitary DFT). Prints the relative power
error (spread ratio squared - 1) per formulation x setting x s, 256 fields of 16x16 white noise each,
and with --results writes the rows there (docs/results.md's table comes from them).
"""
import argparse
import json
from pathlib import Path

import torch

from cosmodiff.cli import ArgumentParser
from cosmodiff.diffusion import FORMULATIONS, build_formulation, network_evaluations, noise_levels, parse_setting
from cosmodiff.diffusion.samplers import SAMPLERS, per_sample_noise
from results_tables import sampler_accuracy


def power_error(formulation, sampler, steps, grid, spread, n_fields=256):
    loop, settings = SAMPLERS[sampler].loop, SAMPLERS[sampler].settings
    sigmas = noise_levels(formulation, sampler, steps, grid)
    generators = [torch.Generator().manual_seed(i) for i in range(n_fields)]
    shape = (1, 16, 16)
    y = per_sample_noise(generators, shape, "cpu").double() * formulation.prior_std(sigmas[0].item())

    def exact_denoiser(y, sigma):
        return y * spread ** 2 / (spread ** 2 + sigma ** 2)

    def draw():
        return per_sample_noise(generators, shape, "cpu").double()
    fields = loop(exact_denoiser, y, sigmas, draw, **settings)
    return (fields.std().item() / spread) ** 2 - 1


def main(args):
    spreads = [float(value) for value in args.spreads.split(",")]
    rows = []
    for name in FORMULATIONS:
        formulation = build_formulation({"formulation": name})
        for setting in args.settings.split():
            sampler, steps, grid = parse_setting(setting)
            if sampler == "ddpm" and name != "vp":
                continue
            errors = [power_error(formulation, sampler, steps, grid, spread) for spread in spreads]
            rows.append(dict(formulation=name, sampler=sampler, steps=steps, grid=grid or SAMPLERS[sampler].grid,
                             nfe=network_evaluations(sampler, steps), power_error=dict(zip(map(str, spreads), errors))))
    record = dict(spreads=spreads, n_fields=256, grid=16, rows=rows)
    print("\n".join(sampler_accuracy(record)))
    if args.results:
        Path(args.results).write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spreads", default="0.15,0.3,0.7,1.5,3",
                        help="per-mode spreads; the default data's run from 0.15 (Nyquist) to 3 (k = 1-2 k_F)")
    parser.add_argument("--settings", help="sampler:steps[:grid] settings",
                        default="ddim:20 euler:20 heun:10 heun:18 heun:10:log dpm++:5 dpm++:10 dpm++:20 "
                                "dpm++:5:log dpm++:10:log dpm++:20:log dpm++sde:20 dpm++sde:20:log")
    parser.add_argument("--results", default=None, help="write the rows to this JSON file")
    main(parser.parse_args())
