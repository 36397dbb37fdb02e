"""Posteriors over cosmological parameters: from a conditional diffusion model's ELBO, and from the
power spectrum alone (the baseline).

The model's negative log-likelihood of a field x0 at parameters theta is bounded by the ELBO, in the
noise-level view (Kingma et al. 2021, continuous time, SNR = 1 / sigma^2):

    -ln p(x0 | theta) <= integral over ln sigma of ||D(x0 + sigma eps, sigma, theta) - x0||^2 / sigma^2 + C,

C holding the endpoint terms, which do not depend on theta. We evaluate the integral by the midpoint
rule on `n_levels` levels uniform in ln sigma between the formulation's extremes, with `n_draws` noise
draws per level: common random numbers, the same levels and draws at every theta, so differences
between parameters are smooth and the posterior is not noise. With an exact denoiser the bound is
the exact likelihood up to C (tests: Gaussian fields, whose posterior is analytic).

For finer resolution than the grid, `mcmc_samples` runs emcee's affine-invariant ensemble sampler
(Foreman-Mackey et al. 2013) on the same likelihood, its walkers started from draws of the grid
posterior, so the chain needs little burn-in.

The baseline is a Gaussian likelihood of ln P(k) (k up to Nyquist): its mean is a quadratic in the
parameters fitted over the training simulations of the Latin hypercube, its covariance that of the
training fields about that mean (Hartlap-corrected). It is the standard analysis a cosmologist would
run on the same simulations, needs no training and no extra library, and says what the power
spectrum alone knows.
"""
import math

import numpy as np
import torch
from scipy.interpolate import make_interp_spline
from tqdm import tqdm

from cosmodiff import stats

CUBIC_POINTS = 4  # grid points per parameter that cubic interpolation needs


def elbo_levels(formulation, n_levels):
    """Levels uniform in ln sigma over the formulation's range, the highest first (vp's moved to its
    training timesteps, fewer where they coincide), and each one's weight: the width in ln sigma of
    the cell between its neighbours' midpoints (the midpoint rule's step where nothing moved)."""
    low, high = math.log(formulation.sigma_min), math.log(min(formulation.sigma_max, 80.0))
    step = (high - low) / n_levels
    levels = torch.exp(low + step * (torch.arange(n_levels, dtype=torch.float64).flip(0) + 0.5))
    levels = formulation.snap(torch.cat([levels, torch.zeros(1, dtype=torch.float64)]))[:-1]
    logs = levels.log()
    edges = torch.cat([torch.tensor([high], dtype=torch.float64), (logs[1:] + logs[:-1]) / 2,
                       torch.tensor([low], dtype=torch.float64)])
    return levels, (edges[:-1] - edges[1:]).tolist()


@torch.inference_mode()
def negative_elbo(formulation, network, fields, conds, n_levels=8, n_draws=1, seed=0, batch_size=64, progress=True,
                  per_level=False):
    """The ELBO's theta-dependent part, -ln p(field | theta) + C, for every field (F, 1, H, W) in model
    space and every condition row (T, P): an (F, T) array, or with per_level each level's term of the
    sum, (F, L, T), levels as elbo_levels orders them. Same levels and noise at every theta. A network
    batch of batch_size mixes levels, draws and conditions, so a GPU is kept busy however few each
    is. On CUDA the convolutions run in full float32: the parameters' effect at the lowest levels is a
    small difference of large sums, below TF32's rounding."""
    sigmas, weights = elbo_levels(formulation, n_levels)
    generator = torch.Generator().manual_seed(seed)
    device = fields.device
    conds = conds.to(device)
    scale = torch.tensor(weights, dtype=torch.float64) / sigmas ** 2 / n_draws
    noise_level = sigmas.repeat_interleave(n_draws).to(device)  # per (level, draw), the draw varying fastest
    count = len(noise_level) * len(conds)
    result = torch.zeros(len(fields), len(sigmas), len(conds), dtype=torch.float64)
    bar = tqdm(total=len(fields) * count, desc="ELBO", unit="eval", unit_scale=True, disable=not progress)
    with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, allow_tf32=False):
        for f in range(len(fields)):
            field = fields[f:f + 1]
            noise = torch.randn((len(noise_level), *field.shape[1:]), generator=generator).to(device)
            for start in range(0, count, batch_size):
                item = torch.arange(start, min(start + batch_size, count), device=device)
                draw, cond = item // len(conds), item % len(conds)
                sigma = noise_level[draw]
                noisy = field + sigma.float().view(-1, 1, 1, 1) * noise[draw]
                denoised = formulation.denoise(network, noisy, sigma, conds[cond])
                error = ((denoised.double() - field.double()) ** 2).sum(dim=(1, 2, 3)).cpu()
                level = draw.cpu() // n_draws
                result[f].index_put_((level, cond.cpu()), error * scale[level], accumulate=True)
                bar.update(len(item))
    bar.close()
    return result.numpy() if per_level else result.sum(dim=1).numpy()


def parameter_grid(low, high, size):
    """Axes (P lists) and the grid's points (size^P, P), first parameter slowest."""
    axes = [np.linspace(a, b, size) for a, b in zip(low, high)]
    return axes, grid_points(axes)


def grid_points(axes):
    """Every point (M, P) of the grid the axes span, first parameter slowest (as grids are shaped)."""
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.stack([m.ravel() for m in mesh], axis=1)


def grid_posterior(log_likelihood, axes):
    """A flat-prior posterior on the grid (normalised to sum 1), shaped like the grid."""
    log_post = np.asarray(log_likelihood, dtype=np.float64).reshape([len(a) for a in axes])
    post = np.exp(log_post - log_post.max())
    return post / post.sum()


def summaries(posterior, axes, names, truth=None):
    """Per parameter: posterior mean, std, and the 68% and 95% equal-tailed intervals of its marginal
    (linear interpolation of the marginal's cumulative sum on the grid), and the true value if given."""
    result = {}
    for dim, (name, axis) in enumerate(zip(names, axes)):
        marginal = posterior.sum(axis=tuple(d for d in range(posterior.ndim) if d != dim))
        mean = float((marginal * axis).sum())
        cdf = np.cumsum(marginal) - marginal / 2

        def quantile(q):
            return float(np.interp(q, cdf, axis))
        result[name] = dict(mean=mean, std=float(np.sqrt((marginal * (axis - mean) ** 2).sum())),
                            interval_68=[quantile(0.16), quantile(0.84)], interval_95=[quantile(0.025), quantile(0.975)],
                            marginal=marginal.tolist(), axis=axis.tolist())
        if truth is not None:  # truth_rank: the marginal's cumulative probability at the truth (coverage)
            result[name].update(truth=float(truth[dim]), truth_rank=float(np.interp(truth[dim], axis, cdf, 0.0, 1.0)))
    return result


def cubic_interpolation(log_likelihood, axes, size):
    """A grid log-likelihood read on a finer grid of `size` points per parameter over the same box, by
    tensor-product cubic spline interpolation (scipy's make_interp_spline along each parameter,
    not-a-knot): it passes through every grid point and is exact for a quadratic log-likelihood, so a
    Gaussian posterior narrower than the coarse grid's cells is resolved from few network evaluations
    (the ELBO with common random numbers is smooth in the parameters), and a wider, skewed one keeps
    its shape between the points. Needs CUBIC_POINTS points per parameter. Returns the fine axes and
    log-likelihood (size^P,)."""
    fine_axes = parameter_grid([axis[0] for axis in axes], [axis[-1] for axis in axes], size)[0]
    values = np.asarray(log_likelihood, np.float64).reshape([len(axis) for axis in axes])
    for dim, (axis, fine_axis) in enumerate(zip(axes, fine_axes)):
        values = make_interp_spline(np.asarray(axis, np.float64), values, k=3, axis=dim)(fine_axis)
    return fine_axes, values.ravel()


def grid_moments(posterior, axes):
    """Mean (P,) and covariance (P, P) of a grid posterior whose mass is spread uniformly within each
    cell (as grid_draws draws it), so a posterior narrower than a cell keeps a cell's width."""
    points = grid_points(axes)
    weights = np.asarray(posterior, np.float64).ravel()
    mean = weights @ points
    centred = points - mean
    within_cell = np.diag([(axis[1] - axis[0]) ** 2 / 12 for axis in axes])
    return mean, (centred * weights[:, None]).T @ centred + within_cell


def figure_of_merit(posterior, axes):
    """1 / sqrt(det Cov) of a grid posterior: the inverse of the area its parameters are known to."""
    return float(1 / np.sqrt(np.linalg.det(grid_moments(posterior, axes)[1])))


def fisher_forecast(derivatives, covariance, n_realisations):
    """The Fisher matrix of the parameters from one field's data vector, D C^-1 D^T, and its marginal
    1-sigma errors sqrt(diag F^-1). derivatives: (P, K) d data / d theta; covariance: (K, K), estimated
    from n_realisations fields, so its inverse is de-biased by Hartlap et al. (2007)'s
    (n - K - 2) / (n - 1); fewer than K + 3 realisations cannot estimate it."""
    derivatives, covariance = np.atleast_2d(np.asarray(derivatives, np.float64)), np.asarray(covariance, np.float64)
    bins = covariance.shape[0]
    if n_realisations < bins + 3:
        raise ValueError(f"a covariance of {bins} bins needs at least {bins + 3} realisations, got {n_realisations}")
    precision = (n_realisations - bins - 2) / (n_realisations - 1) * np.linalg.inv(covariance)
    fisher = derivatives @ precision @ derivatives.T
    return fisher, np.sqrt(np.diag(np.linalg.inv(fisher)))


def pooled_covariance(groups):
    """The covariance (K, K) of data vectors drawn in groups (each (N_i, K), at its own mean, e.g. at the
    points of a derivative): each group's vectors about the group's mean, over sum N_i - groups degrees
    of freedom, so differences between the means do not enter."""
    residuals = np.concatenate([group - group.mean(axis=0) for group in groups])
    return residuals.T @ residuals / (len(residuals) - len(groups))


def grid_draws(posterior, axes, count, seed=0):
    """count points (count, P) drawn from a grid posterior, spread uniformly within each drawn cell."""
    rng = np.random.default_rng(seed)
    cells = np.unravel_index(rng.choice(posterior.size, count, p=posterior.ravel()), posterior.shape)
    return np.stack([np.clip(axis[cell] + (axis[1] - axis[0]) * rng.uniform(-0.5, 0.5, count), axis[0], axis[-1])
                     for axis, cell in zip(axes, cells)], axis=1)


def mcmc_samples(log_likelihood, low, high, start, steps, seed=0, progress=True):
    """Posterior samples (N, P) under a flat prior on [low, high] from emcee, one walker per row of start
    (W, P); log_likelihood maps points (M, P) to (M,), so each half-ensemble is one network batch. The
    first third of the chain is dropped as burn-in. Also returns the mean acceptance fraction."""
    import emcee

    low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)

    def log_probability(points):
        inside = np.all((points >= low) & (points <= high), axis=1)
        result = np.full(len(points), -np.inf)
        if inside.any():
            result[inside] = log_likelihood(points[inside])
        return result

    sampler = emcee.EnsembleSampler(len(start), len(low), log_probability, vectorize=True)
    sampler.random_state = np.random.RandomState(seed).get_state()
    sampler.run_mcmc(start, steps, progress=progress)
    return sampler.get_chain(discard=steps // 3, flat=True), float(np.mean(sampler.acceptance_fraction))


def cell_edges(axis):
    """The edges of the cells centred on a grid axis's points, clipped to its range."""
    return np.concatenate([[axis[0]], (axis[1:] + axis[:-1]) / 2, [axis[-1]]])


def sample_histogram(samples, axes):
    """Posterior samples (N, P) binned into the grid's cells: a posterior shaped like the grid."""
    return np.histogramdd(samples, bins=[cell_edges(axis) for axis in axes])[0] / len(samples)


def sample_summaries(samples, axes, names, truth=None):
    """summaries' fields from posterior samples (N, P); `marginal` is the histogram on the grid's axes."""
    result = {}
    for dim, (name, axis) in enumerate(zip(names, axes)):
        values = samples[:, dim]
        result[name] = dict(mean=float(values.mean()), std=float(values.std()),
                            interval_68=np.quantile(values, [0.16, 0.84]).tolist(),
                            interval_95=np.quantile(values, [0.025, 0.975]).tolist(),
                            marginal=(np.histogram(values, cell_edges(axis))[0] / len(values)).tolist(), axis=list(axis))
        if truth is not None:
            result[name].update(truth=float(truth[dim]), truth_rank=float(np.mean(values <= truth[dim])))
    return result


def quadratic_features(theta):
    """1, theta_i, theta_i theta_j (i <= j) for points (N, P)."""
    theta = np.atleast_2d(theta)
    columns = [np.ones(len(theta))] + [theta[:, i] for i in range(theta.shape[1])]
    columns += [theta[:, i] * theta[:, j] for i in range(theta.shape[1]) for j in range(i, theta.shape[1])]
    return np.stack(columns, axis=1)


def log_power_spectra(fields, box_size):
    """ln P(k) (N, K) of fields (N, H, W) of a box_size Mpc/h box, in the bins up to Nyquist."""
    k, pk, _ = stats.power_spectrum(fields, box_size)
    return np.log(pk[:, stats.nyquist_mask(k, box_size, np.shape(fields)[-1])])


class PowerSpectrumLikelihood:
    """Gaussian likelihood of ln P(k): mean quadratic in the parameters, covariance from simulations."""

    def __init__(self, train_fields, train_theta, box_size):
        self.box_size = box_size
        log_pk = self.log_spectra(train_fields)
        features = quadratic_features(train_theta)
        self.coefficients, *_ = np.linalg.lstsq(features, log_pk, rcond=None)
        residuals = log_pk - features @ self.coefficients
        n, bins = residuals.shape
        covariance = residuals.T @ residuals / (n - features.shape[1])
        self.precision = (n - bins - 2) / (n - 1) * np.linalg.inv(covariance)  # Hartlap et al. 2007

    def log_spectra(self, fields):
        return log_power_spectra(fields, self.box_size)

    def log_likelihood(self, fields, grid_points):
        """ln L (F, T) of every field at every grid point, up to a constant."""
        return self.log_likelihood_of_spectra(self.log_spectra(fields), grid_points)

    def log_likelihood_of_spectra(self, log_pk, grid_points):
        """The same from the fields' log_spectra (F, K), which a chain can compute once."""
        difference = log_pk[:, None, :] - (quadratic_features(grid_points) @ self.coefficients)[None]
        return -0.5 * np.einsum("ftk,kl,ftl->ft", difference, self.precision, difference)
