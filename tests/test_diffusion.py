import math

import pytest
import torch
from denoising_diffusion_pytorch import GaussianDiffusion
from torch import nn

from cosmodiff.diffusion import (FORMULATIONS, GRIDS, SAMPLERS, build_formulation, network_evaluations, noise_levels,
                                 sample)
from conftest import noise_level
from cosmodiff.diffusion.formulations import VP, squared_error
from cosmodiff.diffusion.samplers import deterministic, multistep, unipc

FAST_VP = {"formulation": "vp", "timesteps": 200}


class Oracle(nn.Module):
    """The exact network of a data distribution that is one field x*: the denoiser it yields is x*."""

    def __init__(self, target, formulation):
        super().__init__()
        self.target, self.formulation = target, formulation

    def forward(self, x, c_noise, cond=None):
        c_skip, c_out, c_in, _ = (c.float().view(-1, 1, 1, 1) for c in self.formulation.precondition(
            noise_level(self.formulation, c_noise)))
        return (self.target - c_skip * x / c_in) / c_out


def formulations():
    return [FAST_VP, {"formulation": "vp", "timesteps": 200, "objective": "pred_noise"},
            {"formulation": "edm"}, {"formulation": "flow"}]


@pytest.mark.parametrize("settings", formulations(), ids=lambda s: s.get("objective", s["formulation"]))
@pytest.mark.parametrize("sampler, steps, grid", [("ddpm", None, None), ("ddim", 10, None), ("euler", 10, None),
                                                  ("heun", 6, None), ("dpm++", 10, None), ("dpm++", 5, None),
                                                  ("dpm++sde", 10, None), ("dpm++", 10, "log"), ("heun", 6, "log"),
                                                  ("dpm++3m", 10, None), ("unipc", 10, None)])
def test_every_sampler_recovers_the_field_an_exact_denoiser_describes(settings, sampler, steps, grid):
    formulation = build_formulation(settings)
    if sampler == "ddpm" and formulation.name != "vp":
        pytest.skip("ddpm is vp's sampler")
    target = torch.rand(1, 16, 16) * 4 - 2  # standardised fields reach beyond [-1, 1]
    out = sample(formulation, Oracle(target, formulation), (1, 16, 16), [0, 1], seed=1, x0_range=(-2.2, 2.2),
                 sampler=sampler, steps=steps, grid=grid)
    torch.testing.assert_close(out, target.expand(2, 1, 16, 16), atol=2e-3, rtol=0)


@pytest.mark.parametrize("spread", [0.15, 0.5, 2.0])
def test_multistep_orders_converge_at_their_rates_on_gaussian_data(spread):
    """For Gaussian data of spread s the probability-flow ODE is solved exactly by
    y(0) = y(sigma_0) s / sqrt(s^2 + sigma_0^2); halving the step divides DDIM's error by 2,
    DPM-Solver++(2M)'s by about 4 and (3M)'s by more, and 3M is the most accurate at 20 and 40 steps."""
    def error(order, steps):
        return gaussian_flow_error(lambda denoiser, y, sigmas: multistep(denoiser, y, sigmas, None, deterministic,
                                                                         order), spread, steps)
    ratios = {order: error(order, 20) / error(order, 40) for order in (1, 2, 3)}
    assert 1.8 < ratios[1] < 2.2 and 3.5 < ratios[2] < 4.5 and ratios[3] > 5
    assert error(3, 20) < error(2, 20) < error(1, 20) and error(3, 40) < error(2, 40) / 2


def gaussian_flow_error(solver, spread, steps):
    """The relative error of a solver's y(0) on Gaussian data of spread s, whose probability-flow ODE
    is solved exactly by y(0) = y(sigma_0) s / sqrt(s^2 + sigma_0^2)."""
    formulation = build_formulation({"formulation": "edm"})
    sigmas = noise_levels(formulation, "dpm++", steps, "log")
    out = solver(lambda y, sigma: y * spread ** 2 / (spread ** 2 + sigma ** 2), torch.ones(1, dtype=torch.float64),
                 sigmas)
    return abs(out.item() * math.sqrt(spread ** 2 + sigmas[0].item() ** 2) / spread - 1)


@pytest.mark.parametrize("spread", [0.15, 0.5, 2.0])
def test_unipc_corrector_raises_the_order_by_one_without_extra_evaluations(spread):
    """UniPC of order p converges at order p + 1 (its corrector reuses the next step's evaluation): the
    first-order predictor with the corrector halves to a quarter, the third order to less than a
    sixth, and at 20 steps it is more accurate than DPM-Solver++(3M)."""
    def error(order, steps):
        return gaussian_flow_error(lambda denoiser, y, sigmas: unipc(denoiser, y, sigmas, None, order), spread, steps)
    assert 3.5 < error(1, 20) / error(1, 40) < 4.5 and error(3, 20) / error(3, 40) > 6
    dpm_3m = gaussian_flow_error(lambda denoiser, y, sigmas: multistep(denoiser, y, sigmas, None, deterministic, 3),
                                 spread, 20)
    assert error(3, 20) < dpm_3m / 5


@pytest.mark.parametrize("name", FORMULATIONS)
def test_the_exact_network_has_zero_loss_and_a_fresh_one_does_not(name):
    formulation = build_formulation({"formulation": name})
    target = torch.randn(1, 16, 16) * 0.5
    torch.manual_seed(0)
    assert formulation.loss(Oracle(target, formulation), target.expand(64, 1, 16, 16)) < 1e-6
    assert formulation.loss(Oracle(torch.zeros_like(target), formulation), target.expand(64, 1, 16, 16)) > 1e-2


def test_edm_zero_network_is_the_exact_denoiser_of_gaussian_data_of_spread_sigma_data():
    """For x0 ~ N(0, s^2), E[x0 | x0 + sigma n] = y s^2 / (s^2 + sigma^2): EDM's c_skip with F = 0."""
    formulation = build_formulation({"formulation": "edm", "sigma_data": 0.7})
    y, sigma = torch.randn(3, 1, 8, 8), torch.tensor([0.1, 0.7, 20.0])
    zero = lambda x, c_noise, cond=None: torch.zeros_like(x)  # noqa: E731
    expected = y * 0.49 / (0.49 + sigma.view(-1, 1, 1, 1) ** 2)
    torch.testing.assert_close(formulation.denoise(zero, y, sigma), expected)


def test_flow_network_sees_the_linear_interpolant_and_is_trained_on_the_velocity():
    formulation = build_formulation({"formulation": "flow"})
    x0, noise, t = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8), torch.tensor([0.2, 0.9], dtype=torch.float64)
    seen = {}

    def velocity_network(x, c_noise, cond=None):
        seen["x"], seen["t"] = x, torch.sigmoid(4 * c_noise)
        return noise - x0
    y = x0 + (t / (1 - t)).view(-1, 1, 1, 1).float() * noise
    torch.testing.assert_close(formulation.denoise(velocity_network, y, t / (1 - t)), x0, atol=1e-5, rtol=0)
    torch.testing.assert_close(seen["x"], (1 - t.view(-1, 1, 1, 1).float()) * x0 + t.view(-1, 1, 1, 1).float() * noise)
    torch.testing.assert_close(seen["t"], t.float())


class TimedConv(nn.Module):
    """A small network whose output depends on the field and the (fractional) timestep."""
    channels, out_dim, self_condition = 1, 1, False  # what GaussianDiffusion asks of a network

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x, time, cond=None):
        return self.conv(x) * (1 + time.float().view(-1, 1, 1, 1) / 500)


@pytest.mark.parametrize("objective", ["pred_v", "pred_noise", "pred_x0"])
@pytest.mark.parametrize("min_snr_gamma", [None, 5.0])
def test_vp_denoiser_and_loss_weight_are_denoising_diffusion_pytorchs(objective, min_snr_gamma):
    """vp reproduces the library's GaussianDiffusion it replaced: clean-field predictions and loss weights,
    with and without Min-SNR weighting."""
    torch.manual_seed(0)
    network = TimedConv()
    library = GaussianDiffusion(network, image_size=8, timesteps=1000, objective=objective, auto_normalize=False,
                                min_snr_loss_weight=min_snr_gamma is not None, min_snr_gamma=min_snr_gamma or 5)
    ours = VP(objective=objective, min_snr_gamma=min_snr_gamma)
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([5, 400, 990])
    sigma = ours.sigmas[t]
    with torch.no_grad():
        expected = library.model_predictions(x, t).pred_x_start
        denoised = ours.denoise(network, x * (1 + sigma ** 2).sqrt().float().view(-1, 1, 1, 1), sigma)
    torch.testing.assert_close(denoised, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours.loss_weights.float()[t], library.loss_weight[t])
    top, bottom = library.alphas_cumprod[-1].item(), library.alphas_cumprod[0].item()  # sigma^2 = 1 / alpha_bar - 1
    assert ours.sigma_max == pytest.approx((1 / top - 1) ** 0.5, rel=1e-4)  # the library keeps float32
    assert ours.sigma_min == pytest.approx((1 / bottom - 1) ** 0.5, rel=1e-4)
    assert ("min_snr_gamma" in ours.settings()) == (min_snr_gamma is not None)
    assert build_formulation(ours.settings()).loss_weights.equal(ours.loss_weights)


class WildDenoiser(nn.Module):
    """An untrained network with large outputs: its clean-field estimates leave the range unless clamped."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        torch.nn.init.normal_(self.conv.weight, std=3.0)

    def forward(self, x, c_noise, cond=None):
        return 5 * self.conv(x)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_samples_stay_in_the_x0_range_and_do_not_depend_on_batch_size(sampler):
    torch.manual_seed(0)
    formulation, network = build_formulation({"formulation": "vp", "timesteps": 50}), WildDenoiser()
    steps = None if sampler == "ddpm" else 8

    def draw(indices, seed=7):
        return sample(formulation, network, (1, 16, 16), indices, seed=seed, x0_range=(-2, 1.5), sampler=sampler,
                      steps=steps)
    together = draw([0, 1, 2, 3])
    apart = torch.cat([draw([i]) for i in range(4)])
    assert -2 <= together.min() and together.max() <= 1.5
    torch.testing.assert_close(together, apart, atol=1e-3, rtol=2e-3)  # float rounding of batched convolutions
    assert not torch.allclose(draw([0], seed=8), together[:1])


def test_heun_churn_adds_noise_and_other_samplers_refuse_it():
    formulation, network = build_formulation({"formulation": "edm"}), WildDenoiser()
    plain = sample(formulation, network, (1, 8, 8), [0], 3, (-2, 2), "heun", 6)
    churned = sample(formulation, network, (1, 8, 8), [0], 3, (-2, 2), "heun", 6, churn=10.0)
    assert not torch.allclose(plain, churned)
    with pytest.raises(ValueError, match="churn is heun's"):
        sample(formulation, network, (1, 8, 8), [0], 3, (-2, 2), "ddim", 6, churn=1.0)


def test_network_evaluations_and_step_errors():
    assert network_evaluations("heun", 18) == 35 and network_evaluations("dpm++", 20) == 20
    with pytest.raises(ValueError, match="ddpm is vp's sampler"):
        sample(build_formulation({"formulation": "flow"}), WildDenoiser(), (1, 8, 8), [0], 0, (-1, 1), "ddpm")
    with pytest.raises(ValueError, match="unknown formulation 've'"):
        build_formulation({"formulation": "ve"})


@pytest.mark.parametrize("name", FORMULATIONS)
def test_grids_descend_from_the_top_level_to_zero(name):
    formulation = build_formulation({"formulation": name})
    for sampler in SAMPLERS:
        if sampler == "ddpm" and name != "vp":
            continue
        for grid in ([None] if sampler == "ddpm" else GRIDS[:-1]):
            sigmas = noise_levels(formulation, sampler, 7, grid)
            assert sigmas[-1] == 0 and torch.all(sigmas[1:] < sigmas[:-1]) and math.isfinite(sigmas[0])


def test_vp_grids_land_on_training_timesteps():
    """vp's network saw whole timesteps only: every level a sampler asks it about is one of them."""
    formulation = build_formulation({"formulation": "vp"})
    for sampler in SAMPLERS:
        for grid in ([None] if sampler == "ddpm" else GRIDS[:-1]):
            levels = noise_levels(formulation, sampler, 9 if sampler != "ddpm" else None, grid)[:-1]
            timesteps = formulation.timestep(levels)
            torch.testing.assert_close(timesteps, timesteps.round(), atol=1e-6, rtol=0)


def test_log_grid_is_uniform_in_log_sigma_between_the_extremes():
    formulation = build_formulation({"formulation": "edm"})
    sigmas = noise_levels(formulation, "dpm++", 9, "log")
    assert sigmas[0].item() == pytest.approx(80.0) and sigmas[-2].item() == pytest.approx(0.002)
    steps = sigmas[:-1].log().diff()
    torch.testing.assert_close(steps, torch.full_like(steps, math.log(0.002 / 80) / 8))


def test_grid_errors_name_the_choices():
    formulation = build_formulation({"formulation": "vp", "timesteps": 50})
    with pytest.raises(ValueError, match="unknown grid 'cosine'; choose one of time, ddim, karras, log"):
        sample(formulation, WildDenoiser(), (1, 8, 8), [0], 0, (-1, 1), "dpm++", 4, grid="cosine")
    with pytest.raises(ValueError, match="ddpm steps through every training timestep"):
        sample(formulation, WildDenoiser(), (1, 8, 8), [0], 0, (-1, 1), "ddpm", grid="log")
    with pytest.raises(ValueError, match="unknown beta schedule 'cubic'; choose one of sigmoid, cosine, linear"):
        VP(beta_schedule="cubic")
    with pytest.raises(ValueError, match="unknown objective 'pred_eps'; choose pred_v, pred_noise or pred_x0"):
        VP(objective="pred_eps")


def test_fourier_weighted_loss_keeps_a_white_error_and_weights_small_scales_by_k_power():
    error = torch.randn(64, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(squared_error(error), (error ** 2).mean(dim=(1, 2, 3)))
    assert abs(squared_error(error, 2.0).mean() / squared_error(error).mean() - 1) < 0.02  # mean weight 1
    x = torch.arange(32.0)
    large, small = (torch.cos(2 * math.pi * k * x / 32).expand(1, 1, 32, 32) for k in (1, 8))
    assert squared_error(large) == pytest.approx(squared_error(small))  # the same energy
    assert squared_error(small, 1.0) / squared_error(large, 1.0) == pytest.approx(8.0)

    error = torch.stack([small[0], large[0]])  # per field, with the mean weight of 1 over all modes
    assert squared_error(error, 2.0).shape == (2,)
    assert squared_error(error, 2.0)[0] / squared_error(error, 2.0)[1] == pytest.approx(64.0)  # (8 / 1)^2


def test_the_loss_passes_the_condition_and_weights_modes_only_when_asked():
    seen = []

    def network(x, c_noise, cond=None):  # a uniform offset: an error in the k = 0 mode the weights play down
        seen.append(cond)
        return torch.full_like(x, 3.0)
    generator = torch.Generator().manual_seed(0)
    formulation, x0 = build_formulation({"formulation": "edm"}), 0.5 * torch.randn(8, 1, 16, 16, generator=generator)
    cond = torch.rand(8, 2, generator=generator)
    torch.manual_seed(0)
    plain = formulation.loss(network, x0, cond)
    assert seen[0] is cond
    torch.manual_seed(0)
    assert formulation.loss(network, x0, cond, k_power=0.0) == plain  # the default is the plain squared error
    torch.manual_seed(0)
    assert formulation.loss(network, x0, cond, k_power=2.0) < 0.5 * plain


def test_edm_trains_on_unit_variance_inputs_and_targets_for_data_of_spread_sigma_data():
    """Karras et al. 2022's preconditioning: c_in and c_out make the network's input and its target of
    unit variance at every noise level for data of spread sigma_data, so the zero network's loss is 1."""
    inputs = []

    def zero(x, c_noise, cond=None):
        inputs.append(x)
        return torch.zeros_like(x)
    formulation = build_formulation({"formulation": "edm", "sigma_data": 0.5})
    torch.manual_seed(0)
    x0 = 0.5 * torch.randn(4096, 1, 8, 8)
    assert formulation.loss(zero, x0).item() == pytest.approx(1.0, rel=0.05)
    assert inputs[0].var().item() == pytest.approx(1.0, rel=0.05)


def test_vp_trains_on_every_timestep_from_the_first():
    formulation = VP(timesteps=10)
    torch.manual_seed(0)
    sigmas, weights = formulation.training_sigmas(2000, "cpu")
    assert set(sigmas.tolist()) == set(formulation.sigmas.tolist()) and len(weights) == 2000
