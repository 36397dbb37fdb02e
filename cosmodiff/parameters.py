"""Quijote's cosmological parameters: their names in its tables' order, the fiducial cosmology, and
the ranges of its Latin hypercube (the mocks, the condition and the evaluation share them)."""

PARAM_NAMES = ["Omega_m", "Omega_b", "h", "n_s", "sigma_8"]
QUIJOTE_FIDUCIAL = {"Omega_m": 0.3175, "Omega_b": 0.049, "h": 0.6711, "n_s": 0.9624, "sigma_8": 0.834}
LATIN_HYPERCUBE_RANGES = {"Omega_m": (0.1, 0.5), "sigma_8": (0.6, 1.0)}
