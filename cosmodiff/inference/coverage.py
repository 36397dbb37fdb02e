"""Is a posterior calibrated? Coverage diagnostics of posteriors given as samples, run by sbi's maintained
implementations: simulation-based calibration ranks (Talts et al. 2018, `run_sbc`, with the KS test of
their uniformity) and TARP (Lemos et al. 2023, `run_tarp`, `check_tarp`). Our part is the adapter that
hands sbi samples we already have (a grid posterior's draws, NPE's samples), expected-coverage curves
with bootstrap bands from the SBC ranks, and three post-hoc corrections of grid posteriors, each fitted
on a calibration split and judged on a test split: one temperature for every field (Correction), an
affine map of each posterior whose widening depends on how wide it is (AffineCorrection), so the
sharpness a field earns is kept, and a recalibration of each parameter's quantiles
(QuantileCorrection), which makes the SBC ranks of fields like the calibration ones uniform whatever
shape their miscalibration takes.
"""
import warnings

import numpy as np
import torch
from scipy import ndimage, optimize, stats

from cosmodiff.inference.likelihoods import grid_moments, grid_points, grid_posterior, summaries


class SampledPosterior:
    """What sbi's diagnostics ask of a posterior: samples for a batch of observations. The observation
    is the field's row index (N, 1), the samples are given (S, N, P)."""

    def __init__(self, samples):
        self.samples = torch.as_tensor(samples, dtype=torch.float32)

    def sample_batched(self, sample_shape, x, show_progress_bars=False):
        if tuple(sample_shape) != (self.samples.shape[0],):
            raise ValueError(f"{len(self.samples)} samples per field are stored, {tuple(sample_shape)} asked for")
        return self.samples[:, torch.as_tensor(x)[:, 0].long()]


def observation_index(count):
    return torch.arange(count, dtype=torch.float32)[:, None]


def sbc(samples, truths):
    """SBC ranks (N, P) of the truths among each field's samples (S, N, P), and the KS p-value of each
    parameter's ranks against uniform."""
    from sbi.diagnostics import run_sbc
    from sbi.diagnostics.sbc import check_uniformity_frequentist

    count = samples.shape[0]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Number of SBC samples")
        ranks, _ = run_sbc(torch.as_tensor(truths, dtype=torch.float32), observation_index(len(truths)),
                           SampledPosterior(samples), num_posterior_samples=count, show_progress_bar=False)
    return ranks.numpy(), check_uniformity_frequentist(ranks, count).numpy()


def tarp(samples, truths, seed=0):
    """TARP's expected coverage curve (ecp, alpha) and its check: ATC (area to the curve above alpha 0.5,
    negative when posteriors are too narrow) and the KS p-value of ecp against alpha. The curve has
    max(N // 10, 2) bins (N fields: about ten a bin), so len(alpha) is one more."""
    from sbi.diagnostics import check_tarp, run_tarp

    torch.manual_seed(seed)  # TARP's reference points are random
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Number of TARP samples")
        warnings.filterwarnings("ignore", message="ks_2samp: Exact calculation unsuccessful")
        ecp, alpha = run_tarp(torch.as_tensor(truths, dtype=torch.float32), observation_index(len(truths)),
                              SampledPosterior(samples), num_posterior_samples=samples.shape[0],
                              num_bins=max(len(truths) // 10, 2), show_progress_bar=False)
    atc, ks_p = check_tarp(ecp, alpha)
    return ecp.numpy(), alpha.numpy(), float(atc), float(ks_p)


def expected_coverage(ranks, count, levels, n_bootstrap=1000, seed=0):
    """Per parameter, the fraction of fields whose truth lies inside the equal-tailed interval of each
    credible level (from SBC ranks out of `count` samples), and its 16th and 84th bootstrap percentiles
    over fields: arrays (P, L) each."""
    rng = np.random.default_rng(seed)
    distance = np.abs(np.asarray(ranks, np.float64) / count - 0.5)  # (N, P)
    inside = distance[:, :, None] <= np.asarray(levels)[None, None] / 2  # (N, P, L)
    resampled = inside[rng.integers(0, len(inside), (n_bootstrap, len(inside)))].mean(axis=1)  # (B, P, L)
    return inside.mean(axis=0), np.percentile(resampled, 16, axis=0), np.percentile(resampled, 84, axis=0)


def log_density_at(log_likelihood, axes, truth):
    """ln of the flat-prior posterior density at the truth (linear interpolation of the log posterior
    between grid points, so a truth far in the tail costs what it should and never underflows)."""
    log_post = log_likelihood - log_likelihood.max()
    log_post = log_post - np.log(np.exp(log_post).sum() * np.prod([axis[1] - axis[0] for axis in axes]))
    coordinates = [[np.interp(t, axis, np.arange(len(axis)))] for t, axis in zip(truth, axes)]
    return float(ndimage.map_coordinates(log_post, coordinates, order=1, mode="nearest")[0])


class Correction:
    """A post-hoc correction of grid log-likelihoods, fitted on calibration fields only: the mean offset
    of the posterior means from the truths is removed, then a temperature T (the log-likelihood divided
    by T) is chosen by the log density of the truths, a proper scoring rule, so the intervals widen
    (T > 1) or narrow (T < 1) to match."""

    def __init__(self, shift, temperature):
        self.shift, self.temperature = np.asarray(shift, np.float64), float(temperature)

    @staticmethod
    def shifted(log_likelihood, axes, shift):
        """The grid moved by -shift (one value per parameter), linear in the log; edge values extend."""
        cells = [-s / (axis[1] - axis[0]) for s, axis in zip(shift, axes)]
        return ndimage.shift(np.asarray(log_likelihood, np.float64), cells, order=1, mode="nearest")

    @classmethod
    def fit(cls, log_likelihoods, axes, truths):
        log_likelihoods = [np.asarray(log_like, np.float64) for log_like in log_likelihoods]
        dims = list(range(len(axes)))
        means = np.array([[summary[dim]["mean"] for dim in dims]
                          for summary in (summaries(grid_posterior(log_like, axes), axes, dims) for log_like in log_likelihoods)])
        shift = (means - np.asarray(truths)).mean(axis=0)
        moved = [cls.shifted(log_like, axes, shift) for log_like in log_likelihoods]

        def loss(log_temperature):
            return -sum(log_density_at(log_like / np.exp(log_temperature), axes, truth)
                        for log_like, truth in zip(moved, truths))
        best = optimize.minimize_scalar(loss, bounds=(np.log(0.05), np.log(100.0)), method="bounded")
        return cls(shift, np.exp(best.x))

    def __call__(self, log_likelihood, axes):
        """The corrected posterior (normalised grid)."""
        return grid_posterior(self.shifted(log_likelihood, axes, self.shift) / self.temperature, axes)

    def to_dict(self):
        return dict(shift=self.shift.tolist(), temperature=self.temperature)


class AffineCorrection:
    """A post-hoc correction that keeps the sharpness a field earns. Each raw posterior's mean m and
    covariance S are mapped to

        mean m + shift + slope (m - centre),    covariance D S D + F F^T,

        D diagonal (a per-parameter rescaling), F lower-triangular (a width every field lacks, e.g. an
        estimator's own noise),

    fitted on calibration fields by the Gaussian log density of their truths (a proper scoring rule),
    and the raw posterior is carried along by the affine map between the two Gaussians, so its shape
    (skewness, a curved degeneracy) is kept. One temperature (Correction) widens every field by the
    same factor; here an informative field's posterior widens only by the floor F it lacks."""

    def __init__(self, shift, slope, centre, scale, floor):
        self.shift, self.slope, self.centre = (np.asarray(v, np.float64) for v in (shift, slope, centre))
        self.scale, self.floor = np.asarray(scale, np.float64), np.asarray(floor, np.float64)

    def moments(self, mean, covariance):
        """The corrected mean (..., P) and covariance (..., P, P) of raw posteriors'."""
        scaling = np.diag(self.scale)
        return (mean + self.shift + (mean - self.centre) @ self.slope.T,
                scaling @ covariance @ scaling + self.floor @ self.floor.T)

    @classmethod
    def from_vector(cls, vector, centre):
        dims = len(centre)
        shift, slope = vector[:dims], vector[dims:dims + dims ** 2].reshape(dims, dims)
        scale = np.exp(vector[dims + dims ** 2:2 * dims + dims ** 2])
        floor = np.zeros((dims, dims))
        floor[np.tril_indices(dims)] = vector[2 * dims + dims ** 2:]
        return cls(shift, slope, centre, scale, floor)

    @classmethod
    def fit(cls, log_likelihoods, axes, truths):
        moments = [grid_moments(grid_posterior(log_like, axes), axes) for log_like in log_likelihoods]
        means, covariances = np.array([m for m, _ in moments]), np.array([c for _, c in moments])
        truths, dims = np.asarray(truths, np.float64), len(axes)
        centre = means.mean(axis=0)
        cell = np.array([axis[1] - axis[0] for axis in axes])

        def loss(vector):
            new_means, new_covariances = cls.from_vector(vector, centre).moments(means, covariances)
            offsets = (truths - new_means)[..., None]
            mahalanobis = (offsets * np.linalg.solve(new_covariances, offsets)).sum(axis=(1, 2))
            return 0.5 * np.mean(mahalanobis + np.linalg.slogdet(new_covariances)[1])
        start = np.concatenate([np.zeros(dims + dims ** 2), np.zeros(dims), np.diag(cell)[np.tril_indices(dims)]])
        best = optimize.minimize(loss, start, method="L-BFGS-B")
        return cls.from_vector(best.x, centre)

    def __call__(self, log_likelihood, axes):
        """The corrected posterior (normalised grid): the raw one read at the affine map's preimage of
        every grid point (linear interpolation; beyond the grid its edge values, as Correction's)."""
        raw = grid_posterior(log_likelihood, axes)
        mean, covariance = grid_moments(raw, axes)
        new_mean, new_covariance = self.moments(mean, covariance)
        # A maps raw offsets from the mean to corrected ones: A S A^T = the corrected covariance
        inverse_map = np.linalg.cholesky(covariance) @ np.linalg.inv(np.linalg.cholesky(new_covariance))
        preimage = mean + (grid_points(axes) - new_mean) @ inverse_map.T
        cells = [(preimage[:, d] - axis[0]) / (axis[1] - axis[0]) for d, axis in enumerate(axes)]
        log_raw = np.asarray(log_likelihood, np.float64).reshape(raw.shape)
        values = ndimage.map_coordinates(log_raw - log_raw.max(), cells, order=1, mode="nearest")
        return grid_posterior(values.reshape(raw.shape), axes)

    def to_dict(self):
        return dict(shift=self.shift.tolist(), slope=self.slope.tolist(), centre=self.centre.tolist(),
                    scale=self.scale.tolist(), floor=self.floor.tolist())


def marginal_cdfs(posterior, dim):
    """A grid posterior's marginal in one parameter, and its CDF at the cells' edges (len + 1), the mass
    of a cell spread uniformly within it (as grid_draws draws it)."""
    marginal = posterior.sum(axis=tuple(d for d in range(posterior.ndim) if d != dim))
    return marginal, np.concatenate([[0.0], np.cumsum(marginal)])


def cell_rank(posterior, axes, dim, value):
    """The marginal CDF of one parameter at a value (its SBC rank over the number of draws)."""
    axis = np.asarray(axes[dim], np.float64)
    _, cdf = marginal_cdfs(posterior, dim)
    half = (axis[1] - axis[0]) / 2
    return float(np.interp(value, np.concatenate([axis - half, [axis[-1] + half]]), cdf))


class QuantileCorrection:
    """Quantile recalibration (Kuleshov et al. 2018) of each parameter. For calibrated posteriors the
    marginal CDF at the truth, u = F(theta_true), is uniform over fields (SBC); for miscalibrated ones it
    is not (too narrow: piled at 0 and 1; offset: skewed). The map R, the CDF of the calibration fields'
    u, turns every marginal CDF F into R(F), which is uniform on fields like them whatever shape the
    miscalibration takes. R is a Gaussian kernel estimate in probit space, z = Phi^-1(u): smooth and
    monotone where an empirical CDF of a few hundred u would be a staircase, with Gaussian tails where
    the truths fall beyond every calibration field's (and exact for Gaussian posteriors off by a shift
    and a width, whose z is normal), its kernels' spread taken out of the data's so R keeps their
    variance. The joint grid posterior is then reweighted along each parameter in turn until its
    marginals are the recalibrated ones (iterative proportional fitting: the posterior nearest the raw
    one in KL with those marginals), so the correlation between parameters and each field's own width
    relative to the others are kept."""

    EDGE = 1e-6  # u is kept this far off 0 and 1 when fitting, where the probit is infinite
    SWEEPS = 30  # proportional-fitting sweeps over the parameters

    def __init__(self, probits, bandwidths):
        self.probits = [np.asarray(z, np.float64) for z in probits]
        self.bandwidths = np.asarray(bandwidths, np.float64)

    @classmethod
    def fit(cls, log_likelihoods, axes, truths):
        posteriors = [grid_posterior(log_like, axes) for log_like in log_likelihoods]
        probits, bandwidths = [], []
        for dim in range(len(axes)):
            ranks = [cell_rank(posterior, axes, dim, truth[dim]) for posterior, truth in zip(posteriors, truths)]
            z = stats.norm.ppf(np.clip(ranks, cls.EDGE, 1 - cls.EDGE))
            spread = z.std()
            bandwidth = 1.06 * spread * len(z) ** -0.2  # Silverman's rule
            shrink = np.sqrt(1 + (bandwidth / spread) ** 2)  # data and kernels narrowed alike: var(R) = var(z)
            probits.append(z.mean() + (z - z.mean()) / shrink)
            bandwidths.append(bandwidth / shrink)
        return cls(probits, bandwidths)

    def recalibrated(self, cdf, dim):
        """R(F) for marginal CDF values F of one parameter."""
        z = stats.norm.ppf(np.clip(np.asarray(cdf, np.float64), 0.0, 1.0))
        return stats.norm.cdf((z[..., None] - self.probits[dim]) / self.bandwidths[dim]).mean(axis=-1)

    def __call__(self, log_likelihood, axes):
        """The corrected posterior (normalised grid)."""
        posterior = grid_posterior(log_likelihood, axes)
        targets = [np.diff(self.recalibrated(marginal_cdfs(posterior, dim)[1], dim)) for dim in range(len(axes))]
        for _ in range(self.SWEEPS):
            for dim, target in enumerate(targets):
                marginal, _ = marginal_cdfs(posterior, dim)
                ratio = np.divide(target, marginal, out=np.zeros_like(target), where=marginal > 0)
                shape = [1] * posterior.ndim
                shape[dim] = -1
                posterior = posterior * ratio.reshape(shape)
        return posterior / posterior.sum()

    def to_dict(self):
        return dict(probits=[z.tolist() for z in self.probits], bandwidths=self.bandwidths.tolist())
