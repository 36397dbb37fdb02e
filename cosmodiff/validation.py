"""Fidelity while training: the power-spectrum MAFD of a few fast samples against held-out fields,
next to its sample-variance floor for that many samples, so a long run shows whether it still improves.

Every check samples the same fields (same seed, same parameter points for a conditional run): the
changes between checks are the network's, not the sampler's noise.
"""
import numpy as np

from cosmodiff import stats
from cosmodiff.sampling import physical_fields


class Validation:
    """The held-out fields' power spectra and floor, and the MAFD of the EMA network's samples."""

    def __init__(self, fieldset, n_samples, sampler, steps, transform, condition=None, seed=0):
        self.box_size, self.size, self.transform = fieldset.box_size, fieldset.image_size, transform
        self.sampler, self.steps, self.n_samples, self.seed = sampler, steps, n_samples, seed
        k, self.pk_real, _ = stats.power_spectrum(fieldset.fields, self.box_size)
        self.mask = stats.nyquist_mask(k, self.box_size, self.size)
        self.floor = float(np.median(stats.mafd_floor(self.pk_real, n_samples, self.mask, n_draws=200,
                                                             real_sims=stats.simulations_for_floor(fieldset.sim_index))[0]))
        chosen = np.random.default_rng(seed).choice(len(fieldset), n_samples, replace=len(fieldset) < n_samples)
        self.cond = None if condition is None else condition.of_fields(fieldset)[chosen]

    def __call__(self, network, formulation):
        """MAFD and floor of n_samples fields from the network, and the fields (physical units)."""
        device = next(network.parameters()).device
        fields = physical_fields(formulation, network, self.transform, self.size, range(self.n_samples), self.seed,
                                 self.sampler, self.steps, cond=None if self.cond is None else self.cond.to(device))
        _, pk, _ = stats.power_spectrum(fields, self.box_size)
        return dict(val_mafd=stats.mafd(pk, self.pk_real, self.mask), val_floor=self.floor), fields
