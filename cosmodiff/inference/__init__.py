"""Parameter inference from fields: the methods and the kinds of model they need (methods.py, two
registries), the likelihoods and the grid maths that turn them into posteriors (likelihoods.py: the
diffusion ELBO, the P(k) Gaussian likelihood, grids, cubic reading, emcee, figure of merit, Fisher
forecasts), neural posterior estimation (npe.py) and calibration and coverage (coverage.py: SBC,
TARP and the corrections fitted on calibration fields)."""
