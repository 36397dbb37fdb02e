"""Is a posterior calibrated? Coverage diagnostics of posteriors given as samples, run by sbi's maintained
implementations: simulation-based calibration ranks (Talts et al. 2018, `run_sbc`, with the KS test of
their uniformity) and TARP (Lemos et al. 2023, `run_tarp`, `check_tarp`). Our part is the adapter that
hands sbi samples we already have (a grid posterior's draws, NPE's samples), expected-coverage curves
with bootstrap bands from the SBC ranks, and a post-hoc correction (shift, then temper) of grid
posteriors that is fitted on a calibration split and judged on a test split.
"""
import warnings

import numpy as np
import torch
from scipy import ndimage, optimize

from cosmodiff.inference import grid_posterior, summaries


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
    negative when posteriors are too narrow) and the KS p-value of ecp against alpha."""
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
