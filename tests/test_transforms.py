import json

import numpy as np
import torch

from cosmodiff.transforms import HEADROOM, LogTransform, augment_periodic


def density_fields(seed=0, with_zeros=False):
    fields = np.exp(np.random.default_rng(seed).normal(0, 1.5, (8, 32, 32))).astype(np.float32)
    if with_zeros:
        fields[:, :4, :4] = 0
    return fields


def test_forward_standardises_the_training_set_inside_the_clamp_and_inverse_is_exact():
    fields = density_fields(with_zeros=True)
    transform = LogTransform.fit(fields, data_std=0.5)
    model_space = transform.forward(fields)
    np.testing.assert_allclose([model_space.mean(), model_space.std()], [0, 0.5], atol=1e-6)
    low, high = transform.x0_range
    margin = HEADROOM * (model_space.max() - model_space.min())
    np.testing.assert_allclose([low, high], [model_space.min() - margin, model_space.max() + margin], atol=1e-6)
    np.testing.assert_allclose(transform.inverse(model_space), fields, rtol=1e-6, atol=1e-6 * fields.mean())
    assert np.abs(transform.inverse(model_space)[:, :4, :4]).max() < 1e-9  # empty pixels come back empty


def test_torch_float32_round_trip_and_json():
    fields = density_fields(1)
    transform = LogTransform.from_dict(json.loads(json.dumps(LogTransform.fit(fields).to_dict())))
    tensor = torch.from_numpy(fields)
    recovered = transform.inverse(transform.forward(tensor))
    assert recovered.dtype == torch.float32
    torch.testing.assert_close(recovered, tensor, rtol=2e-5, atol=0)


def test_overdensity_fields_use_one_plus_delta():
    delta = density_fields(2) / density_fields(2).mean() - 1
    transform = LogTransform.fit(delta)
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
