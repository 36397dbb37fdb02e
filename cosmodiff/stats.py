"""Summary statistics of 2D density fields, vectorised over a batch (N, H, W).

Conventions: delta = f / mean(f) - 1 per field (a field with negative values is taken as delta
itself, so 1 + delta is the density); k in h/Mpc and P(k) in (Mpc/h)^2 with Pylians3 `Pk_plane`'s
binning; lengths in Mpc/h. Everything takes the box side in Mpc/h.
"""
from dataclasses import dataclass
from functools import partial
from typing import Callable, NamedTuple

import numpy as np
import torch
from tqdm import tqdm

from cosmodiff.transforms import rfft_wavenumbers

MAS_ORDER = {"None": 0, "NGP": 1, "CIC": 2, "TSC": 3, "PCS": 4}
LOG_FLOOR = 1e-3  # 1 + delta below 0.1% of the mean counts as 0.1% in log-density statistics
OCCUPIED = 0.05  # the least fraction of fields off a bin's median for mean_difference to use the bin
MIN_FLOOR_FIELDS = 4  # two halves of two fields: the fewest a spread across fields (and a floor) can come from


def overdensity(fields):
    """delta = f / mean(f) - 1 per field (float32); a field with negative values is already delta, kept as given."""
    fields = torch.as_tensor(np.asarray(fields, np.float32))
    is_delta = fields.amin(dim=(-2, -1)) < 0
    delta = fields / fields.mean(dim=(-2, -1), keepdim=True)
    delta.sub_(1)
    delta[is_delta] = fields[is_delta]
    return delta.numpy()


def log_density(fields):
    """ln(1 + delta) per field, floored at ln(LOG_FLOOR)."""
    return np.log(np.maximum(overdensity(fields) + 1, LOG_FLOOR))


def mode_bins(grid):
    """Pylians' half-plane modes of an rfft2 grid: bin index int(|k|/kF), |k|/kF, and the mask of counted modes."""
    middle = grid // 2
    kx = np.fft.fftfreq(grid, d=1.0 / grid)[:, None]
    kx[middle] = middle  # Pylians takes the Nyquist row as kx = +N/2
    ky = np.arange(middle + 1)[None, :]
    kmod = np.sqrt(kx ** 2 + ky ** 2)
    # The ky = 0 and ky = N/2 columns hold each mode twice (kx and -kx): count kx >= 0 only.
    counted = ~(((ky == 0) | (ky == middle)) & (kx < 0))
    return kmod.astype(np.int64), kmod, counted, kx


def mas_correction(grid, kx, MAS):
    """Pylians' mass-assignment deconvolution per mode: prod over axes of (x / sin x)^p, x = pi k / N."""
    order = MAS_ORDER[MAS]

    def per_axis(k):
        x = np.pi * k / grid
        return np.where(x == 0, 1.0, x / np.where(x == 0, 1.0, np.sin(x))) ** order

    return per_axis(kx) * per_axis(np.arange(grid // 2 + 1)[None, :])


def power_spectrum(fields, box_size, MAS="None", as_overdensity=True):
    """2D P(k) of each field, exactly as Pylians3 Pk_plane(delta, box_size, MAS): returns k (h/Mpc),
    P (N, bins) in (Mpc/h)^2 and Nmodes per bin. DC is dropped; bins run to the grid's corner.

    as_overdensity=False uses the fields as given (the earlier work's convention) instead of delta.
    """
    fields = np.asarray(fields)
    if fields.ndim == 2:
        fields = fields[None]
    grid = fields.shape[-1]
    index, kmod, counted, kx = mode_bins(grid)
    n_bins = index.max() + 1
    bin_of_mode = torch.from_numpy(np.where(counted, index, n_bins).ravel())  # uncounted duplicates: a dropped bin
    correction = torch.from_numpy(np.broadcast_to(mas_correction(grid, kx, MAS), (grid, grid // 2 + 1)).astype(np.float32))
    p_sum = torch.zeros(len(fields), n_bins + 1, dtype=torch.float64)
    # Batches of about 2^20 pixels stay in cache (benchmarks/power_spectrum_speed.py measures the gain).
    chunk = max(1, 2 ** 20 // grid ** 2)
    for start in range(0, len(fields), chunk):
        block = fields[start:start + chunk]
        delta = overdensity(block) if as_overdensity else np.asarray(block, np.float32)
        # Single-precision FFT as Pylians' (FFTW float32): the corner bins hold modes ~1e-5 of the
        # field's power, where Pylians' own float32 rounding shows, and this reproduces it (rtol 1e-5).
        modes = torch.fft.rfft2(torch.from_numpy(delta))
        if MAS != "None":
            modes *= correction
        power = (modes.real.square() + modes.imag.square()).flatten(1).double()
        p_sum[start:start + chunk].index_add_(1, bin_of_mode, power)
    p_sum = p_sum[:, :n_bins].numpy()
    index, kmod = index[counted], kmod[counted]
    n_modes = np.bincount(index, minlength=n_bins)
    k_sum = np.bincount(index, weights=kmod, minlength=n_bins)
    k_fundamental = 2 * np.pi / box_size
    k = k_sum[1:] / n_modes[1:] * k_fundamental
    pk = p_sum[:, 1:] / n_modes[1:] * (box_size / grid ** 2) ** 2
    return k, pk, n_modes[1:].astype(np.float64)


def nyquist_mask(k, box_size, grid):
    """Bins whose mean k is at most the Nyquist frequency pi N / L."""
    return k <= np.pi * grid / box_size


def mafd(pk_generated, pk_real, mask=None):
    """Mean absolute fractional difference: mean over bins of |<P_gen> - <P_real>| / <P_real>."""
    mean_generated, mean_real = pk_generated.mean(axis=0), pk_real.mean(axis=0)
    fractional = np.abs(mean_generated - mean_real) / mean_real
    return float(fractional[mask].mean() if mask is not None else fractional.mean())


def simulations_for_floor(sim_index):
    """sim_index where it names at least 2 simulations, else None: the fields of a single simulation
    (or of unknown ones) can only be taken as independent."""
    return sim_index if sim_index is not None and len(np.unique(sim_index)) >= 2 else None


def simulation_groups(sim_index, n_fields):
    """Each field's simulation as 0..S-1: sim_index where given, else every field its own simulation."""
    if sim_index is None:
        return np.arange(n_fields)
    sim_index = np.asarray(sim_index)
    if len(sim_index) != n_fields:
        raise ValueError(f"sim_index has {len(sim_index)} entries for {n_fields} fields")
    return np.unique(sim_index, return_inverse=True)[1].reshape(-1)


def simulation_offsets(array, groups):
    """Each field's simulation mean minus the pool's mean, (N, ...)."""
    n_groups = groups.max() + 1
    sums = np.zeros((n_groups,) + array.shape[1:])
    np.add.at(sums, groups, array)
    means = sums / np.bincount(groups, minlength=n_groups).reshape((-1,) + (1,) * (array.ndim - 1))
    return (means - array.mean(axis=0))[groups]


def resampled_simulations(arrays, offsets, members, n_sims, rng):
    """A set of n_sims simulations drawn with replacement (members: each simulation's field indices),
    every field of each, with each simulation's offset from the pool's mean scaled by sqrt(S / (S - 1)):
    that undoes the bootstrap's shrinkage of the between-simulation variance."""
    n_groups = len(members)
    chosen = np.concatenate([members[group] for group in rng.integers(n_groups, size=n_sims)])
    inflation = np.sqrt(n_groups / (n_groups - 1)) - 1
    return [array[chosen] + inflation * offset[chosen] for array, offset in zip(arrays, offsets)]


def floor_draws(statistic, real, n_generated, real_sims=None, generated=None, generated_sims=None, n_draws=200,
                seed=0):
    """A statistic of two sets drawn as the compared sets are, from the real fields' distribution: the
    sample-variance floor's distribution.

    real (and generated) are lists of per-field arrays, split alike. Fields of one simulation share its
    large-scale modes, so sets are drawn by simulation (real_sims: each field's simulation; None: every
    field independent). The real set is redrawn with its own number of simulations; a generated set of
    independent fields is n_generated fields drawn from the real ones; a generated set that carries
    generated_sims (another real split) is redrawn by simulation too, both sets then from the pool of
    both sets' simulations. statistic(*generated set, *real set) -> a value per draw."""
    rng = np.random.default_rng(seed)
    real_groups = simulation_groups(real_sims, len(real[0]))
    n_real_sims = real_groups.max() + 1
    if generated_sims is not None:
        generated_groups = simulation_groups(generated_sims, len(generated[0])) + n_real_sims
        pool = [np.concatenate([a, b]) for a, b in zip(real, generated)]
        groups = np.concatenate([real_groups, generated_groups])
        n_generated_sims = generated_groups.max() + 1 - n_real_sims
    else:
        pool, groups = real, real_groups
    if groups.max() + 1 < 2:
        raise ValueError("a sample-variance floor needs fields from at least 2 simulations")
    if len(real[0]) < MIN_FLOOR_FIELDS:
        raise ValueError(f"a sample-variance floor needs at least {MIN_FLOOR_FIELDS} real fields")
    offsets = [simulation_offsets(np.asarray(array, np.float64), groups) for array in pool]
    members = [np.flatnonzero(groups == group) for group in range(groups.max() + 1)]
    values = []
    for _ in range(n_draws):
        set_a = resampled_simulations(pool, offsets, members, n_real_sims, rng)
        if generated_sims is not None:
            set_b = resampled_simulations(pool, offsets, members, n_generated_sims, rng)
        else:
            indices = rng.integers(len(real[0]), size=n_generated)  # one draw for every array: a field stays whole
            set_b = [array[indices] for array in real]
        values.append(statistic(*set_b, *set_a))
    return np.asarray(values)


def mafd_floor(pk_real, n_generated, mask=None, n_draws=500, seed=0, real_sims=None, pk_generated=None,
               generated_sims=None):
    """The MAFD's sample-variance floor (floor_draws): the MAFDs and per-bin ratios <P_b> / <P_a> of
    the draws. n_generated fields are compared with all real fields, as the report compares them."""
    draw = partial(floor_draws, real=[pk_real], n_generated=n_generated, real_sims=real_sims,
                   generated=None if pk_generated is None else [pk_generated], generated_sims=generated_sims,
                   n_draws=n_draws, seed=seed)
    values = draw(lambda generated, real: mafd(generated, real, mask))
    ratios = draw(lambda generated, real: generated.mean(axis=0) / real.mean(axis=0))
    return values, ratios


def summarise(values):
    """Median and 5-95% interval of a sample."""
    low, median, high = np.percentile(values, [5, 50, 95])
    return {"median": float(median), "low": float(low), "high": float(high)}


def shared_bins(log_fields, n_bins=40):
    """Log-density bin edges over the 1-99.9 percentile range of a reference set (the rest lands in the end bins)."""
    low, high = np.percentile(log_fields, [1, 99.9])
    return np.linspace(low, high, n_bins + 1)


def pixel_pdf(log_fields, edges):
    """Histogram density of ln(1+delta) per field (N, bins), values outside the edges in the end bins."""
    clipped = np.clip(log_fields, edges[0], edges[-1])
    width = np.diff(edges)
    index = np.clip(np.searchsorted(edges, clipped, side="right") - 1, 0, len(width) - 1)
    flat = (np.arange(len(log_fields))[:, None] * len(width) + index.reshape(len(log_fields), -1)).ravel()
    counts = np.bincount(flat, minlength=len(log_fields) * len(width)).reshape(len(log_fields), len(width))
    return counts / counts.sum(axis=1, keepdims=True) / width


def pdf_distance(pdf_generated, pdf_real, edges):
    """Kolmogorov-Smirnov distance between the pooled pixel distributions (max |CDF difference|)."""
    width = np.diff(edges)
    cdf_generated = np.cumsum(pdf_generated.mean(axis=0) * width)
    cdf_real = np.cumsum(pdf_real.mean(axis=0) * width)
    return float(np.abs(cdf_generated - cdf_real).max())


def minkowski_functionals(fields, thresholds, pixel_size=1.0):
    """V0 (area fraction), V1 (boundary length per area) and V2 (Euler characteristic per area) of the
    excursion sets {field >= threshold} on the periodic grid, each (N, T).

    The set is a union of closed pixels. V1 is the 4-direction Crofton estimate (exact for discs,
    5% low for axis-aligned edges); V2 = vertices - edges + faces of the closed pixels on the torus.
    """
    fields = np.asarray(fields)
    if fields.ndim == 2:
        fields = fields[None]
    area = fields.shape[-1] * fields.shape[-2] * pixel_size ** 2
    above = fields[:, None] >= np.asarray(thresholds)[None, :, None, None]  # (N, T, H, W)

    def shifted(dy, dx):
        return np.roll(above, (dy, dx), axis=(-2, -1))

    def count(mask):
        return mask.sum(axis=(-2, -1)).astype(np.float64)

    right, down = shifted(0, -1), shifted(-1, 0)
    diagonal, antidiagonal = shifted(-1, -1), shifted(-1, 1)
    v0 = count(above) / (area / pixel_size ** 2)
    crossings_axes = count(above ^ right) + count(above ^ down)
    crossings_diagonal = count(above ^ diagonal) + count(above ^ antidiagonal)
    v1 = np.pi / 8 * pixel_size * (crossings_axes + crossings_diagonal / np.sqrt(2)) / area
    vertices = count(above | right | down | diagonal)
    edges = count(above | right) + count(above | down)
    v2 = (vertices - edges + count(above)) / area
    return v0, v1, v2


def peak_counts(fields, edges, pixel_size=1.0):
    """Number of local maxima (above all 8 periodic neighbours) per unit area in each height bin, (N, bins)."""
    fields = np.asarray(fields)
    is_peak = np.ones(fields.shape, bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                is_peak &= fields > np.roll(fields, (dy, dx), axis=(-2, -1))
    area = fields.shape[-1] * fields.shape[-2] * pixel_size ** 2
    return np.stack([np.histogram(f[p], bins=edges)[0] for f, p in zip(fields, is_peak)]) / area


def triangle_configurations(grid):
    """(name, k1, k2, k3) in units of the fundamental: equilateral triangles at three scales, and squeezed
    ones (a long-wavelength k1 against two equal short sides) at the same scales."""
    scales = [grid // 8, grid // 4, 3 * grid // 8]
    long = max(1, grid // 32)
    return ([(f"equilateral k={k}", k, k, k) for k in scales] +
            [(f"squeezed k={k}", long, k, k) for k in scales])


def shell_fields(delta, centres, width):
    """For each shell |k| in [centre - width/2, centre + width/2) (DC excluded): the fields with only
    those modes kept (S, N, H, W), and the shells' indicator fields (S, H, W)."""
    grid = delta.shape[-1]
    kmod = rfft_wavenumbers(grid)
    shells = np.stack([(kmod >= c - width / 2) & (kmod < c + width / 2) & (kmod > 0) for c in centres])
    modes = torch.fft.rfft2(torch.from_numpy(np.asarray(delta, np.float64)))
    masks = torch.from_numpy(shells)
    filtered = torch.fft.irfft2(modes[None] * masks[:, None], s=(grid, grid)).numpy()
    indicators = torch.fft.irfft2(masks.to(torch.complex128), s=(grid, grid)).numpy()
    return filtered, indicators


def bispectrum(fields, box_size, configurations=None):
    """Per-field bispectrum B and the power P of each side of each triangle configuration, by the FFT
    shell estimator (Scoccimarro 2015): B = <delta_k1 delta_k2 delta_k3> over the closed triangles of
    three shells (width max(1, N/32) fundamentals), P = <|delta_k|^2> over each shell, in (Mpc/h)^4
    and (Mpc/h)^2. Returns the configurations (name, k1, k2, k3 in h/Mpc), B (N, C) and P (N, C, 3).

    No maintained 2D bispectrum estimator is on PyPI; this one is tested on Gaussian fields (Q = 0)
    and a local quadratic field (Q = 2 f_NL)."""
    fields = np.asarray(fields)
    grid = fields.shape[-1]
    configurations = configurations or triangle_configurations(grid)
    centres = sorted({k for config in configurations for k in config[1:]})
    filtered, indicators = shell_fields(overdensity(fields), centres, max(1, grid // 32))
    slot = {centre: i for i, centre in enumerate(centres)}
    b, p = [], []
    for _, *sides in configurations:
        i, j, l = (slot[side] for side in sides)
        triangles = (indicators[i] * indicators[j] * indicators[l]).sum()
        b.append((filtered[i] * filtered[j] * filtered[l]).sum(axis=(-2, -1)) / triangles)
        p.append([(filtered[m] ** 2).sum(axis=(-2, -1)) / (indicators[m] ** 2).sum() for m in (i, j, l)])
    k_fundamental = 2 * np.pi / box_size
    named = [(name, *(side * k_fundamental for side in sides)) for name, *sides in configurations]
    return named, np.stack(b, axis=1) * box_size ** 4 / grid ** 6, np.stack(p, axis=1).transpose(2, 1, 0) * box_size ** 2 / grid ** 4


def reduced_bispectrum(b, p):
    """Q = B / (P1 P2 + P2 P3 + P1 P3) of a set's mean B and mean P per configuration (C,)."""
    p1, p2, p3 = np.moveaxis(p.mean(axis=0), -1, 0)
    return b.mean(axis=0) / (p1 * p2 + p2 * p3 + p1 * p3)


def correlation_difference(pk_generated, pk_real):
    """The largest |difference| between the two sets' correlation matrices of P(k) across fields."""
    return float(np.abs(np.corrcoef(pk_generated, rowvar=False) - np.corrcoef(pk_real, rowvar=False)).max())


def mean_difference(generated, real):
    """Mean over bins of |difference of the sets' means| / the real set's per-field spread, over the bins
    where at least OCCUPIED of the real fields differ from the bin's median (a bin that a few fields
    reach has a spread too small to divide by)."""
    spread = real.std(axis=0)
    valid = (spread > 0) & ((real != np.median(real, axis=0)).mean(axis=0) >= OCCUPIED)
    return float((np.abs(generated.mean(axis=0) - real.mean(axis=0))[valid] / spread[valid]).mean())


def q_distance(b_generated, p_generated, b_real, p_real):
    """Mean |Q_generated - Q_real| over the triangle configurations."""
    return float(np.abs(reduced_bispectrum(b_generated, p_generated) - reduced_bispectrum(b_real, p_real)).mean())


@dataclass(frozen=True)
class Statistic:
    """One line of the scorecard: the per-field arrays it reads, the distance between two sets, and the
    figure (a key of plots.FIGURES) that shows where the sets differ."""
    arrays: Callable  # (field_statistics' dict, P(k) bin mask) -> list of per-field arrays
    distance: Callable  # (*generated arrays, *real arrays) -> float
    description: str
    figure: str


def configurations_of(kind):
    """The arrays of the bispectrum's configurations of one kind ("equilateral", "squeezed"; "" for all)."""
    def arrays(statistics, mask):
        chosen = [i for i, (name, *_) in enumerate(statistics["triangles"]) if name.startswith(kind)]
        return [statistics["b"][:, chosen], statistics["p"][:, chosen]]
    return arrays


# The scorecard: every statistic a generated set is judged by, each as a distance over its floor.
STATISTICS = {
    "pk_mafd": Statistic(lambda s, mask: [s["pk"][:, mask]], mafd, "P(k) of delta: MAFD", "power_spectrum_ratio.png"),
    "log_pk_mafd": Statistic(lambda s, mask: [s["log_pk"][:, mask]], mafd, "P(k) of ln(1 + delta): MAFD",
                             "power_spectrum_ratio.png"),
    "bispectrum": Statistic(configurations_of(""), q_distance, "reduced bispectrum Q, every configuration",
                            "bispectrum.png"),
    "bispectrum_equilateral": Statistic(configurations_of("equilateral"), q_distance, "Q, equilateral triangles",
                                        "bispectrum.png"),
    "bispectrum_squeezed": Statistic(configurations_of("squeezed"), q_distance, "Q, squeezed triangles",
                                     "bispectrum.png"),
    "peaks": Statistic(lambda s, mask: [s["peaks"]], mean_difference, "peak counts per height bin", "peaks.png"),
    "pixel_pdf": Statistic(lambda s, mask: [s["pdf"]], mean_difference, "pixel PDF of ln(1 + delta)", "pixel_pdf.png"),
    "minkowski": Statistic(lambda s, mask: [np.concatenate([s["v0"], s["v1"], s["v2"]], axis=1)], mean_difference,
                           "Minkowski functionals V0, V1, V2 per threshold", "minkowski.png"),
    "pk_correlation": Statistic(lambda s, mask: [s["pk"][:, mask]], correlation_difference,
                                "P(k) correlation matrix: largest |difference|", "power_spectrum_correlation.png"),
}


def scorecard(real_stats, generated_stats, mask, real_sims=None, generated_sims=None, n_draws=200):
    """Every statistic of STATISTICS as a distance between the two sets next to its floor (floor_draws'
    median, with its 5-95% spread), and the worst distance over floor; empty for fewer than
    MIN_FLOOR_FIELDS real fields, too few for a floor."""
    if len(real_stats["pk"]) < MIN_FLOOR_FIELDS:
        return {}
    n_generated = len(generated_stats["pk"])
    rows = {}
    for name, statistic in STATISTICS.items():
        real, generated = statistic.arrays(real_stats, mask), statistic.arrays(generated_stats, mask)
        value = statistic.distance(*generated, *real)
        draws = floor_draws(statistic.distance, real, n_generated, real_sims, generated, generated_sims, n_draws)
        spread = summarise(draws)
        rows[name] = dict(distance=float(value), floor=spread["median"], floor_low=spread["low"],
                          floor_high=spread["high"], over_floor=float(value / spread["median"]))
    worst = max(rows, key=lambda name: rows[name]["over_floor"])
    return dict(statistics=rows, worst=dict(statistic=worst, over_floor=rows[worst]["over_floor"]),
                floor_by="simulation" if real_sims is not None else "field")


def seam_score(fields):
    """Per field: mean |wrap-around neighbour difference| / mean |interior neighbour difference|,
    over rows and columns. About 1 for periodic fields, about 1.7 for unrelated edges."""
    fields = np.asarray(fields, np.float64)
    if fields.ndim == 2:
        fields = fields[None]
    wrap = np.concatenate([np.abs(fields[:, :, 0] - fields[:, :, -1]), np.abs(fields[:, 0, :] - fields[:, -1, :])], axis=1)
    interior = np.concatenate([np.abs(np.diff(fields, axis=2)).reshape(len(fields), -1),
                               np.abs(np.diff(fields, axis=1)).reshape(len(fields), -1)], axis=1)
    return wrap.mean(axis=1) / interior.mean(axis=1)


def nearest_distances(queries, references, chunk=64):
    """For each query field: the RMS pixel difference to its nearest reference over all periodic
    shifts, and that distance over the median one to all references.

    The ratio is the memorisation statistic: a copy of a training field scores 0, and a smoother
    (lower-variance) field is nearer to every reference, which shrinks the distance but not the
    ratio. Max over shifts of the cross-correlation comes from one FFT product per pair (torch, chunked).
    """
    queries = torch.as_tensor(np.asarray(queries), dtype=torch.float64)
    references = torch.as_tensor(np.asarray(references), dtype=torch.float64)
    n_pixels = queries.shape[-1] * queries.shape[-2]
    reference_modes = torch.fft.rfft2(references)
    reference_norms = (references ** 2).sum(dim=(-2, -1))
    rows = []
    for start in range(0, len(queries), chunk):
        block = queries[start:start + chunk]
        modes = torch.fft.rfft2(block)
        block_norms = (block ** 2).sum(dim=(-2, -1))[:, None]
        columns = []
        for ref_start in range(0, len(references), chunk):
            cross = torch.fft.irfft2(modes[:, None].conj() * reference_modes[None, ref_start:ref_start + chunk],
                                     s=block.shape[-2:]).amax(dim=(-2, -1))
            columns.append(block_norms + reference_norms[None, ref_start:ref_start + chunk] - 2 * cross)
        rows.append(torch.sqrt(torch.clamp(torch.cat(columns, dim=1), min=0) / n_pixels))
    distances = torch.cat(rows)
    nearest = distances.amin(dim=1)
    return nearest.numpy(), (nearest / distances.median(dim=1).values).numpy()


class Chunk(NamedTuple):
    """A chunk of fields, their ln(1 + delta) and what a measurement needs to know of the set."""
    fields: np.ndarray
    logs: np.ndarray
    box_size: float
    edges: np.ndarray  # ln(1 + delta) bins shared by both sets of a comparison
    MAS: str


def spectra_of(chunk):
    """P(k) of delta and of ln(1 + delta); the bins' k and mode counts."""
    k, pk, n_modes = power_spectrum(chunk.fields, chunk.box_size, chunk.MAS)
    _, log_pk, _ = power_spectrum(chunk.logs, chunk.box_size, chunk.MAS, as_overdensity=False)
    return dict(pk=pk, log_pk=log_pk), dict(k=k, n_modes=n_modes)


def one_point_of(chunk):
    """Pixel PDF, Minkowski functionals and peak counts of ln(1 + delta) on the shared bins, the seam
    score and the moments pooled_std reads."""
    pixel_size = chunk.box_size / chunk.fields.shape[-1]
    thresholds = 0.5 * (chunk.edges[:-1] + chunk.edges[1:])
    v0, v1, v2 = minkowski_functionals(chunk.logs, thresholds, pixel_size)
    per_field = dict(pdf=pixel_pdf(chunk.logs, chunk.edges), v0=v0, v1=v1, v2=v2,
                     peaks=peak_counts(chunk.logs, chunk.edges, pixel_size), seam=seam_score(chunk.logs),
                     log_mean=chunk.logs.mean(axis=(1, 2)), log_square=(chunk.logs ** 2).mean(axis=(1, 2)))
    return per_field, dict(thresholds=thresholds)


def bispectra_of(chunk):
    """The bispectrum and the P(k) products of its triangle configurations."""
    triangles, b, p = bispectrum(chunk.fields, chunk.box_size)
    return dict(b=b, p=p), dict(triangles=triangles)


# What field_statistics measures, chunk by chunk: each gives per-field arrays (N, ...) and set-wide values.
MEASUREMENTS = {"power_spectrum": spectra_of, "one_point": one_point_of, "bispectrum": bispectra_of}


def field_statistics(fields, box_size, edges, MAS="None", chunk=64, progress=False):
    """Every MEASUREMENTS entry of the fields, in chunks: per-field arrays and set-wide values in one dict."""
    parts, shared = [], {}
    for start in tqdm(range(0, len(fields), chunk), desc="statistics", unit="chunk", disable=not progress):
        block = fields[start:start + chunk]
        measured = Chunk(block, log_density(block), box_size, edges, MAS)
        part = {}
        for measure in MEASUREMENTS.values():
            per_field, set_wide = measure(measured)
            part.update(per_field)
            shared.update(set_wide)
        parts.append(part)
    merged = {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
    return dict(merged, **shared)


def pooled_std(statistics):
    """Standard deviation of ln(1 + delta) over all pixels of a set."""
    return float(np.sqrt(statistics["log_square"].mean() - statistics["log_mean"].mean() ** 2))


def within_one_sigma(generated, real):
    """Fraction of bins where the generated mean lies within the real set's 1-sigma spread, and the
    largest |difference of means| in units of that spread."""
    spread = real.std(axis=0)
    difference = np.abs(generated.mean(axis=0) - real.mean(axis=0))
    valid = spread > 0
    inside = difference[valid] <= spread[valid]
    return {"fraction_within_1sigma": float(inside.mean()), "max_sigma": float((difference[valid] / spread[valid]).max())}


class Context(NamedTuple):
    """What a report section needs beside the two sets' field_statistics."""
    mask: np.ndarray  # the P(k) bins the MAFD reads
    floor_ratios: np.ndarray  # the floor's draws of <P_a> / <P_b> per k
    edges: np.ndarray  # the ln(1 + delta) bins


def compare(real, generated, box_size, MAS="None", k_max="nyquist", train=None, n_draws=500, progress=True,
            real_sims=None, generated_sims=None):
    """Everything the evaluation report holds: the scorecard (every statistic as a distance over its
    floor, and the worst), MAFD next to its floor, every SECTIONS entry (both sets' statistics, what the
    figures draw) and (with `train`) the memorisation check.

    real_sims (and, for a second real set, generated_sims): each field's simulation, so that floors are
    drawn by simulation (floor_draws); without them every field counts as independent."""
    if real.shape[1:] != generated.shape[1:]:
        raise ValueError(f"the real fields are {real.shape[1]}x{real.shape[2]} but the generated ones are "
                         f"{generated.shape[1]}x{generated.shape[2]}; compare sets of one image size")
    sample = real[np.random.default_rng(0).permutation(len(real))[:64]]
    edges = shared_bins(log_density(sample))
    real_stats = field_statistics(real, box_size, edges, MAS, progress=progress)
    generated_stats = field_statistics(generated, box_size, edges, MAS, progress=progress)
    k = real_stats["k"]
    mask = nyquist_mask(k, box_size, real.shape[-1]) if k_max == "nyquist" else np.ones(len(k), bool)
    real_sims = simulations_for_floor(real_sims)
    generated_sims = simulations_for_floor(generated_sims) if real_sims is not None else None
    floor_values, floor_ratios = mafd_floor(real_stats["pk"], len(generated), mask, n_draws, real_sims=real_sims,
                                            pk_generated=generated_stats["pk"], generated_sims=generated_sims)
    value = mafd(generated_stats["pk"], real_stats["pk"], mask)
    floor = dict(summarise(floor_values), by="simulation" if real_sims is not None else "field",
                 real_simulations=int(len(np.unique(real_sims))) if real_sims is not None else len(real))
    context = Context(mask, floor_ratios, edges)
    report = {
        "mafd": value,
        "floor": floor,
        "mafd_over_floor": value / floor["median"],
        **{name: section.build(real_stats, generated_stats, context) for name, section in SECTIONS.items()},
        "scorecard": scorecard(real_stats, generated_stats, mask, real_sims, generated_sims, n_draws),
        "sizes": {"real": len(real), "generated": len(generated)},
        "settings": {"box_size": box_size, "MAS": MAS, "k_max": k_max, "n_draws": n_draws,
                     "image_size": int(real.shape[-1])},
    }
    if train is not None:
        report["memorisation"] = memorisation(real, generated, train)
    return report


def power_spectrum_section(real_stats, generated_stats, context):
    """Both sets' mean P(k) and spread, their ratio with the floor's 5-95% band of it, and each set's
    correlation matrix of P(k) over the MAFD's bins."""
    real_pk, generated_pk = real_stats["pk"], generated_stats["pk"]
    return {
        "k": real_stats["k"].tolist(), "n_modes": real_stats["n_modes"].tolist(), "in_mafd": context.mask.tolist(),
        "real_mean": real_pk.mean(axis=0).tolist(), "real_std": real_pk.std(axis=0).tolist(),
        "generated_mean": generated_pk.mean(axis=0).tolist(), "generated_std": generated_pk.std(axis=0).tolist(),
        "ratio": (generated_pk.mean(axis=0) / real_pk.mean(axis=0)).tolist(),
        "floor_ratio_low": np.percentile(context.floor_ratios, 5, axis=0).tolist(),
        "floor_ratio_high": np.percentile(context.floor_ratios, 95, axis=0).tolist(),
        "real_correlation": correlation_matrix(real_pk[:, context.mask]).tolist(),
        "generated_correlation": correlation_matrix(generated_pk[:, context.mask]).tolist(),
    }


def correlation_matrix(pk):
    """The correlation matrix of per-field P(k) (N, K) across fields; 0 where a bin does not vary."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nan_to_num(np.corrcoef(pk, rowvar=False)) if len(pk) > 1 else np.zeros((pk.shape[1], pk.shape[1]))


def pixel_pdf_section(real_stats, generated_stats, context):
    """Both sets' pixel PDF of ln(1 + delta), its KS distance and the pooled standard deviations."""
    real_pdf, generated_pdf = real_stats["pdf"], generated_stats["pdf"]
    return {"edges": context.edges.tolist(),
            "real_mean": real_pdf.mean(axis=0).tolist(), "real_std": real_pdf.std(axis=0).tolist(),
            "generated_mean": generated_pdf.mean(axis=0).tolist(),
            "distance": pdf_distance(generated_pdf, real_pdf, context.edges),
            "log_density_std_real": pooled_std(real_stats), "log_density_std_generated": pooled_std(generated_stats),
            **within_one_sigma(generated_pdf, real_pdf)}


def pixel_pdf_lines(section):
    return [("pixel PDF KS distance", f"{section['distance']:.4f}"),
            ("std ln(1+delta) (real / generated)",
             f"{section['log_density_std_real']:.3f} / {section['log_density_std_generated']:.3f}")]


def minkowski_section(real_stats, generated_stats, context):
    """Both sets' Minkowski functionals against threshold."""
    minkowski = {"thresholds": real_stats["thresholds"].tolist()}
    for name in ("v0", "v1", "v2"):
        minkowski[name] = {"real_mean": real_stats[name].mean(axis=0).tolist(),
                           "real_std": real_stats[name].std(axis=0).tolist(),
                           "generated_mean": generated_stats[name].mean(axis=0).tolist(),
                           **within_one_sigma(generated_stats[name], real_stats[name])}
    return minkowski


def minkowski_lines(section):
    return [(f"Minkowski {name.upper()} bins within real 1-sigma", f"{100 * section[name]['fraction_within_1sigma']:.0f}%")
            for name in ("v0", "v1", "v2")]


def peaks_section(real_stats, generated_stats, context):
    """Both sets' peak counts per unit area in each ln(1 + delta) height bin."""
    return {"edges": context.edges.tolist(), "real_mean": real_stats["peaks"].mean(axis=0).tolist(),
            "real_std": real_stats["peaks"].std(axis=0).tolist(),
            "generated_mean": generated_stats["peaks"].mean(axis=0).tolist(),
            **within_one_sigma(generated_stats["peaks"], real_stats["peaks"])}


def bispectrum_section(real_stats, generated_stats, context):
    """Both sets' reduced bispectrum Q per triangle configuration."""
    return {"triangles": [list(triangle) for triangle in real_stats["triangles"]],
            "q_real": reduced_bispectrum(real_stats["b"], real_stats["p"]).tolist(),
            "q_generated": reduced_bispectrum(generated_stats["b"], generated_stats["p"]).tolist()}


def seam_section(real_stats, generated_stats, context):
    """Both sets' seam scores (about 1 for periodic fields)."""
    return {"generated": summarise(generated_stats["seam"]), "real": summarise(real_stats["seam"])}


def seam_lines(section):
    return [(f"seam score {name}, median [5-95%]",
             f"{section[name]['median']:.3f} [{section[name]['low']:.3f}, {section[name]['high']:.3f}]")
            for name in ("generated", "real")]


@dataclass(frozen=True)
class Section:
    """One part of compare's report beside the scorecard: what it holds of both sets, and its lines in
    the evaluation's summary table."""
    build: Callable  # (real field_statistics, generated field_statistics, Context) -> a JSON-ready dict
    lines: Callable = lambda section: []  # (the built section) -> [(label, value)]


# The report's sections, by their key in the report; plots.FIGURES draws them.
SECTIONS = {
    "power_spectrum": Section(power_spectrum_section),
    "pixel_pdf": Section(pixel_pdf_section, pixel_pdf_lines),
    "minkowski": Section(minkowski_section, minkowski_lines),
    "peaks": Section(peaks_section),
    "bispectrum": Section(bispectrum_section),
    "seam": Section(seam_section, seam_lines),
}


def summary_lines(report):
    """The report as (label, value) lines: sizes, MAFD and its floor, every section's lines, every
    scorecard statistic over its floor, the worst, and the memorisation check where it ran."""
    floor = report["floor"]
    lines = [("fields (real / generated)", f"{report['sizes']['real']} / {report['sizes']['generated']}"),
             ("power spectrum MAFD", f"{100 * report['mafd']:.2f}%"),
             (f"floor (by {floor['by']}), median [5-95%]",
              f"{100 * floor['median']:.2f}% [{100 * floor['low']:.2f}, {100 * floor['high']:.2f}]"),
             ("MAFD / floor", f"{report['mafd_over_floor']:.2f}")]
    for name, section in SECTIONS.items():
        lines += section.lines(report[name])
    lines += [(f"{name.replace('_', ' ')} distance / floor", f"{row['distance']:.3g} / {row['floor']:.3g} = "
                                                              f"{row['over_floor']:.2f}")
              for name, row in report["scorecard"].get("statistics", {}).items()]
    if report["scorecard"]:
        worst = report["scorecard"]["worst"]
        lines.append(("worst statistic / floor (the headline)", f"{worst['statistic']}: {worst['over_floor']:.2f}"))
    if "memorisation" in report:
        memo = report["memorisation"]
        lines.append(("nearest-train RMS (generated / real)",
                      f"{memo['generated_to_train']['median']:.3f} / {memo['real_to_train']['median']:.3f}"))
        lines.append(("nearest / median train distance (generated / real)",
                      f"{memo['generated_relative']['median']:.3f} / {memo['real_relative']['median']:.3f}"))
    return lines


def memorisation(real, generated, train):
    """How near generated and real fields sit to their nearest training field (nearest_distances)."""
    train_logs = log_density(train)
    generated_nearest, generated_relative = nearest_distances(log_density(generated), train_logs)
    real_nearest, real_relative = nearest_distances(log_density(real), train_logs)
    return {"generated_to_train": summarise(generated_nearest), "real_to_train": summarise(real_nearest),
            "generated_relative": summarise(generated_relative), "real_relative": summarise(real_relative),
            "fraction_generated_closer_than_real_5th_percentile": float(
                (generated_relative < np.percentile(real_relative, 5)).mean())}
