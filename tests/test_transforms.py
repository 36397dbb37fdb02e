import json

import numpy as np
import torch

import pytest

from cosmodiff.diffusion import sample
from cosmodiff.diffusion.formulations import EDM
from cosmodiff.transforms import (HEADROOM, LogTransform, SqrtTransform, WhitenedLogTransform, augment_periodic,
                                  radial_index, transform_from_dict)


def density_fields(seed=0, with_zeros=False):
    fields = np.exp(np.random.default_rng(seed).normal(0, 1.5, (8, 32, 32))).astype(np.float32)
    if with_zeros:
        fields[:, :4, :4] = 0
    return fields


@pytest.mark.parametrize("transform_type", [LogTransform, SqrtTransform])
def test_forward_standardises_the_training_set_inside_the_clamp_and_inverse_is_exact(transform_type):
    fields = density_fields(with_zeros=True)
    transform = transform_type.fit(fields, data_std=0.5)
    model_space = transform.forward(fields)
    np.testing.assert_allclose([model_space.mean(), model_space.std()], [0, 0.5], atol=1e-6)
    low, high = transform.x0_range
    margin = HEADROOM * (model_space.max() - model_space.min())
    np.testing.assert_allclose([low, high], [model_space.min() - margin, model_space.max() + margin], atol=1e-6)
    np.testing.assert_allclose(transform.inverse(model_space), fields, rtol=1e-6, atol=1e-6 * fields.mean())
    assert np.abs(transform.inverse(model_space)[:, :4, :4]).max() < 1e-9  # empty pixels come back empty


@pytest.mark.parametrize("transform_type", [LogTransform, SqrtTransform])
def test_torch_float32_round_trip_and_json(transform_type):
    fields = density_fields(1)
    transform = transform_from_dict(json.loads(json.dumps(transform_type.fit(fields).to_dict())))
    assert type(transform) is transform_type
    tensor = torch.from_numpy(fields)
    recovered = transform.inverse(transform.forward(tensor))
    assert recovered.dtype == torch.float32
    torch.testing.assert_close(recovered, tensor, rtol=2e-5, atol=0)


@pytest.mark.parametrize("transform_type", [LogTransform, SqrtTransform])
def test_overdensity_fields_use_one_plus_delta(transform_type):
    delta = density_fields(2) / density_fields(2).mean() - 1
    transform = transform_type.fit(delta)
    assert transform.offset == 1.0
    np.testing.assert_allclose(transform.inverse(transform.forward(delta)), delta, rtol=1e-6, atol=1e-6)
    assert transform.inverse(np.float64(transform.x_min)) >= -1  # the clamp's bottom is still a valid 1 + delta >= 0


def test_augmentation_is_a_periodic_symmetry_of_each_field():
    batch = torch.randn(16, 1, 16, 16)
    augmented = augment_periodic(batch, torch.Generator().manual_seed(0))
    for original, new in zip(batch, augmented):
        candidates = [torch.roll(torch.rot90(f, k, (-2, -1)), (dy, dx), (-2, -1))
                      for f in (original, original.flip(-1)) for k in range(4)
                      for dy in range(16) for dx in range(16)]
        assert any(torch.equal(new, c) for c in candidates)
    sorted_values = torch.sort(augmented.flatten(1), dim=1).values
    torch.testing.assert_close(sorted_values, torch.sort(batch.flatten(1), dim=1).values)
    assert not torch.equal(augmented, batch)


def test_fits_record_the_documented_offset_scale_and_zero_floor():
    fields = density_fields(with_zeros=True).astype(np.float64)  # densities with empty pixels: min exactly 0
    log = LogTransform.fit(fields)
    assert log.offset == 0.0 and log.scale == pytest.approx(fields.mean())
    assert log.eps == pytest.approx(0.5 * fields[fields > 0].min() / fields.mean())  # half the smallest positive
    assert SqrtTransform.fit(fields).offset == 0.0  # a zero is an empty pixel, not an overdensity
    delta = fields / fields.mean() - 1  # negative values: overdensity, so rho = 1 + delta
    assert SqrtTransform.fit(delta).offset == 1.0 and LogTransform.fit(delta).offset == 1.0
    stored = LogTransform.fit(fields).to_dict()
    del stored["name"]  # run folders older than the transforms' names hold the log transform
    assert isinstance(transform_from_dict(stored), LogTransform)


def test_augmentation_draws_every_shift_and_symmetry_of_the_square_alike():
    original = torch.randn(1, 8, 8, generator=torch.Generator().manual_seed(1))  # no symmetry of its own
    elements = {}  # each of the 8 symmetries times the 64 periodic shifts, by its pixels
    for flipped in (False, True):
        for k in range(4):
            for dy in range(8):
                for dx in range(8):
                    mirrored = original.flip(-1) if flipped else original
                    image = torch.roll(torch.rot90(mirrored, k, (-2, -1)), (dy, dx), (-2, -1))
                    elements[image.numpy().tobytes()] = (flipped, k)
    assert len(elements) == 512
    draws = augment_periodic(original.expand(16384, 1, 8, 8).contiguous(), torch.Generator().manual_seed(2))
    reached = [elements[draw.numpy().tobytes()] for draw in draws]  # each draw is one of them
    assert len({draw.numpy().tobytes() for draw in draws}) == 512  # 32 draws each on average: all reached
    for symmetry in set(elements.values()):
        assert abs(reached.count(symmetry) / len(reached) - 1 / 8) < 0.02  # the 8 symmetries equally often


def gaussian_log_fields(n, size=32, slope=-2.0, seed=0):
    """Log-normal densities whose log is a Gaussian field of power |k|^slope (a red spectrum)."""
    rng = np.random.default_rng(seed)
    k = np.fft.fftfreq(size, 1 / size)
    kmod = np.sqrt(k[:, None] ** 2 + np.fft.rfftfreq(size, 1 / size)[None, :] ** 2)
    kmod[0, 0] = 1
    logs = np.fft.irfft2(np.fft.rfft2(rng.standard_normal((n, size, size))) * kmod ** (slope / 2), s=(size, size))
    return np.exp(logs / logs.std())


def radial_power(fields):
    """Mean |mode|^2 per integer |k| (DC dropped)."""
    index = radial_index(fields.shape[-1])
    power = (np.abs(np.fft.rfft2(fields)) ** 2).mean(axis=0)
    return (np.bincount(index.ravel(), power.ravel()) / np.bincount(index.ravel()))[1:]


def test_whitened_transform_gives_every_scale_the_same_power_and_inverts_exactly():
    fields = gaussian_log_fields(64)
    transform = WhitenedLogTransform.fit(fields, data_std=0.5)
    model_space = transform.forward(fields)
    assert abs(model_space.std() - 0.5) < 1e-6
    flat = radial_power(model_space)[:16]  # to the Nyquist frequency
    plain = radial_power(LogTransform.fit(fields).forward(fields))[:16]
    assert plain[0] / plain[-1] > 100 and flat.max() / flat.min() < 1.5  # equal power: equal SNR under white noise
    np.testing.assert_allclose(transform.inverse(model_space), fields, rtol=1e-9)
    low, high = transform.x0_range
    assert low < model_space.min() and model_space.max() < high
    again = transform_from_dict(json.loads(json.dumps(transform.to_dict())))
    assert isinstance(again, WhitenedLogTransform)
    as_torch = again.forward(torch.from_numpy(fields).float())
    np.testing.assert_allclose(as_torch.numpy(), model_space, atol=1e-5)
    torch.testing.assert_close(again.inverse(as_torch), torch.from_numpy(fields).float(), rtol=1e-4, atol=1e-5)
    # an isotropic filter commutes with the periodic augmentation
    batch = torch.from_numpy(fields[:4, None]).double()
    generator = torch.Generator().manual_seed(3)
    augmented_then_white = again.forward(augment_periodic(batch, torch.Generator().manual_seed(3)))
    torch.testing.assert_close(augmented_then_white, augment_periodic(again.forward(batch), generator))


class ZeroNetwork(torch.nn.Module):
    def forward(self, x, c_noise, cond=None):
        return torch.zeros_like(x)


def test_exact_gaussian_denoiser_in_whitened_space_samples_the_data_spectrum():
    """EDM's zero network is the exact denoiser of Gaussian data of spread sigma_data; in whitened space
    the log of Gaussian log-normal fields is such data at every scale, so sampling with it and inverting
    the transform gives fields whose log has the training set's spectrum, small scales included."""
    fields = gaussian_log_fields(64)
    transform = WhitenedLogTransform.fit(fields, data_std=0.5)
    white = sample(EDM(sigma_data=0.5), ZeroNetwork(), (1, 32, 32), range(64), seed=0, x0_range=transform.x0_range,
                   sampler="unipc", steps=20, grid="log")
    generated = transform.inverse(white[:, 0].double().numpy())
    ratio = radial_power(np.log(generated)) / radial_power(np.log(fields))
    assert np.abs(ratio[:16] - 1).max() < 0.25 and abs(ratio[:16].mean() - 1) < 0.05


def test_unknown_transform_names_the_choices():
    with pytest.raises(ValueError, match="unknown transform 'cube'; choose one of log, log-whitened"):
        transform_from_dict({"name": "cube"})


def test_a_run_trained_in_sqrt_space_keeps_its_transform_and_samples_densities(tiny_data, tmp_path):
    import cosmodiff

    run_dir = cosmodiff.train(tiny_data, results_dir=tmp_path, run_name="sqrt", train_steps=2, transform="sqrt",
                              image_size=32, batch_size=4, sampling_timesteps=2, warmup_steps=2, val_samples=0)
    run = cosmodiff.load(run_dir)
    assert isinstance(run.transform, SqrtTransform)
    fields = cosmodiff.sample(run, 2, steps=3, seed=0)
    assert fields.shape == (2, 32, 32) and np.isfinite(fields).all() and fields.min() >= 0
