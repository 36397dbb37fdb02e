import json
import pickle

import numpy as np
import pytest
from PIL import Image

from conftest import shared_path
from cosmodiff.fields import (FieldError, FieldSet, block_average, cube_to_slabs, load_fields, render_colormap,
                              save_fields)


def lognormal(n, size, seed=0):
    rng = np.random.default_rng(seed)
    return np.exp(rng.normal(size=(n, size, size))).astype(np.float32)


def test_npz_round_trip_keeps_fields_and_metadata(tmp_path):
    fieldset = FieldSet(fields=lognormal(3, 16), box_size=250.0, params=np.arange(6.0).reshape(3, 2),
                        param_names=["Omega_m", "sigma_8"], sim_index=np.array([0, 0, 1]))
    save_fields(tmp_path / "set.npz", fieldset)
    loaded = load_fields(tmp_path / "set.npz")
    np.testing.assert_array_equal(loaded.fields, fieldset.fields)
    np.testing.assert_array_equal(loaded.params, fieldset.params)
    np.testing.assert_array_equal(loaded.sim_index, fieldset.sim_index)
    assert loaded.param_names == ["Omega_m", "sigma_8"] and loaded.box_size == 250.0
    assert not list(tmp_path.glob("*.tmp*"))


def test_npy_single_field_stack_and_folder_in_natural_order(tmp_path):
    fields = lognormal(12, 16)
    np.save(tmp_path / "one.npy", fields[0])
    assert load_fields(tmp_path / "one.npy").fields.shape == (1, 16, 16)
    folder = tmp_path / "folder"
    folder.mkdir()
    for i in range(12):
        np.save(folder / f"{i}_field.npy", fields[i])
    loaded = load_fields(folder)
    np.testing.assert_array_equal(loaded.fields, fields)
    assert loaded.sources[2].endswith("2_field.npy") and loaded.sources[10].endswith("10_field.npy")
    assert load_fields(folder, box_size=500).box_size == 500.0


def test_grayscale_and_16_bit_png(tmp_path):
    values = np.random.default_rng(1).integers(0, 256, (32, 32)).astype(np.uint8)
    Image.fromarray(values).save(tmp_path / "gray.png")
    np.testing.assert_allclose(load_fields(tmp_path / "gray.png").fields[0], values / 255.0, atol=1e-7)
    deep = (values.astype(np.uint16) * 257)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    np.testing.assert_allclose(load_fields(tmp_path / "deep.png").fields[0], deep / 65535.0, atol=1e-7)


@pytest.mark.parametrize("colormap", ["gnuplot", "viridis", "magma", "gray"])
def test_colormap_render_then_invert_reproduces_every_pixel(tmp_path, colormap):
    values = np.random.default_rng(2).random((32, 32))
    rgba = render_colormap(values, colormap)
    Image.fromarray(rgba).save(tmp_path / "field.png")
    recovered = load_fields(tmp_path / "field.png", colormap=colormap).fields[0]
    np.testing.assert_array_equal(render_colormap(recovered, colormap), rgba)
    assert np.abs(recovered - values).max() <= 2 / 255  # one LUT step


def test_rgb_png_without_colormap_is_luminance(tmp_path):
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[..., 1] = 200
    Image.fromarray(rgb).save(tmp_path / "green.png")
    expected = round(200 * 587 / 1000) / 255
    np.testing.assert_allclose(load_fields(tmp_path / "green.png").fields, expected, atol=1 / 255)


def test_shared_quijote_pngs_invert_exactly():
    folder = shared_path("quijote-png-sample")
    fieldset = load_fields(folder, colormap="gnuplot")
    assert fieldset.fields.shape == (16, 512, 512) and fieldset.box_size == 1000.0
    for field, source in zip(fieldset.fields, fieldset.sources):
        np.testing.assert_array_equal(render_colormap(field, "gnuplot"), np.asarray(Image.open(source)))


def test_cube_slabs_average_consecutive_slices_along_each_axis(tmp_path):
    cube = np.random.default_rng(3).random((32, 32, 32)).astype(np.float32)
    path = tmp_path / "df_m_32_CIC_z=0.npy"
    np.save(path, cube)
    fields = load_fields(path, slab_thickness=4).fields
    assert fields.shape == (3 * 32 // 4, 32, 32)
    np.testing.assert_allclose(fields[1], cube[4:8].mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(fields[8 + 2], cube[:, 8:12].mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(fields[16 + 7], cube[:, :, 28:32].mean(axis=2), rtol=1e-6)
    assert cube_to_slabs(cube[:30, :30, :30], 4).shape == (3 * 7, 30, 30)  # the remainder is dropped


def test_cubic_array_is_a_stack_unless_slab_thickness_or_quijote_name(tmp_path):
    stack = lognormal(16, 16)
    np.save(tmp_path / "stack.npy", stack)
    np.testing.assert_array_equal(load_fields(tmp_path / "stack.npy").fields, stack)
    assert len(load_fields(tmp_path / "stack.npy", slab_thickness=2).fields) == 3 * 8
    np.save(tmp_path / "df_m_16_PCS_z=0.npy", stack)
    with pytest.raises(FieldError, match=r"df_m_16_PCS_z=0.npy: is a Quijote 3D density cube; pass slab_thickness"):
        load_fields(tmp_path / "df_m_16_PCS_z=0.npy")
    np.save(tmp_path / "flat.npy", lognormal(2, 16))
    with pytest.raises(FieldError, match=r"flat.npy: slab_thickness needs a cubic 3D array"):
        load_fields(tmp_path / "flat.npy", slab_thickness=2)


def test_block_average_keeps_mean_and_refuses_non_divisors():
    fields = lognormal(2, 64)
    small = block_average(fields, 16)
    assert small.shape == (2, 16, 16)
    np.testing.assert_allclose(small.mean(axis=(1, 2)), fields.mean(axis=(1, 2)), rtol=1e-5)
    np.testing.assert_allclose(small[0, 1, 2], fields[0, 4:8, 8:12].mean(), rtol=1e-6)
    with pytest.raises(FieldError, match="cannot block-average 64x64 fields to 48x48"):
        block_average(fields, 48)


def write(path, array):
    np.save(path, array)
    return path


def write_bytes(path, data):
    path.write_bytes(data)
    return path


def folder_with(path, *names):
    path.mkdir()
    for name in names:
        (path / name).write_text("not a field")
    return path


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing.npy", r"missing.npy: no such file or folder"),
    (lambda d: folder_with(d / "empty"), r"empty: the folder is empty"),
    (lambda d: folder_with(d / "txt", "a.txt"), r"txt: the folder has no \.npy, \.png, \.hdf5, \.h5 files"),
    (lambda d: write(d / "rect.npy", np.ones((2, 16, 32))), r"rect.npy\[0\]: fields must be square, got 16x32"),
    (lambda d: write(d / "odd.npy", np.ones((2, 24, 24))), r"odd.npy\[0\]: the field side must be a power of two >= 16, got 24"),
    (lambda d: write(d / "tiny.npy", np.ones((2, 8, 8))), r"tiny.npy\[0\]: the field side must be a power of two >= 16, got 8"),
    (lambda d: write(d / "nan.npy", np.where(np.arange(512).reshape(2, 16, 16) == 300, np.nan, 1.0)), r"nan.npy\[1\]: the field contains NaN or infinite values"),
    (lambda d: write(d / "neg.npy", np.full((1, 16, 16), -1.5)), r"neg.npy\[0\]: the field has values below -1, so 1\+delta < 0"),
    (lambda d: write_bytes(d / "bad.npy", np.ones(4).tobytes()), r"bad.npy: cannot read the .npy file"),
    (lambda d: write_bytes(d / "bad.png", b"\x89PNG\r\n\x1a\n1234"), r"bad.png: cannot read the PNG"),
    (lambda d: write_bytes(d / "bad.npz", b"PK\x03\x04broken"), r"bad.npz: cannot read the .npz file"),
    (lambda d: np.savez(d / "nofields.npz", x=np.ones(3)) or d / "nofields.npz", r"nofields.npz: the .npz has no 'fields' array"),
    (lambda d: write_bytes(d / "f.txt", b"1"), r"f.txt: unsupported file type"),
    (lambda d: np.save(d / "pickled.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True) or d / "pickled.npy",
     r"pickled.npy: holds pickled Python objects, which are never unpickled"),
    (lambda d: write_bytes(d / "raw.npy", pickle.dumps([1, 2])), r"raw.npy: holds pickled Python objects"),
    (lambda d: np.savez(d / "pickled.npz", fields=np.array([None, 1], dtype=object)) or d / "pickled.npz",
     r"pickled.npz: holds pickled Python objects, which are never unpickled"),
    (lambda d: write(d / "one.npy", np.ones((3, 1, 1))), r"one.npy\[0\]: the field side must be a power of two >= 16, got 1"),
    (lambda d: write(d / "rank4.npy", np.ones((2, 2, 16, 16))), r"rank4.npy: expected a \(H, W\) field or an \(N, H, W\) stack"),
    (lambda d: write(d / "rank1.npy", np.ones(16)), r"rank1.npy: expected a \(H, W\) field or an \(N, H, W\) stack"),
    (lambda d: np.savez(d / "rank4.npz", fields=np.ones((2, 2, 16, 16))) or d / "rank4.npz",
     r"rank4.npz: expected 'fields' of shape \(H, W\) or \(N, H, W\)"),
    (lambda d: write(d / "zeros.npy", np.stack([np.ones((16, 16)), np.zeros((16, 16))])),
     r"zeros.npy\[1\]: the field is all zeros \(a collapsed sample\?\)"),
])
def test_bad_input_is_one_clear_sentence_naming_the_file(tmp_path, make, message):
    with pytest.raises(FieldError, match=message):
        load_fields(make(tmp_path))


def test_truncated_npy_and_mixed_shapes_and_unknown_colormap(tmp_path):
    good = write(tmp_path / "good.npy", lognormal(4, 16))
    (tmp_path / "cut.npy").write_bytes(good.read_bytes()[:-100])
    with pytest.raises(FieldError, match=r"cut.npy: cannot read the .npy file \(corrupt or truncated"):
        load_fields(tmp_path / "cut.npy")
    folder = tmp_path / "mixed"
    folder.mkdir()
    write(folder / "a.npy", lognormal(1, 16))
    write(folder / "b.npy", lognormal(1, 32))
    with pytest.raises(FieldError, match=r"b.npy: field shape \(32, 32\) differs from \(16, 16\) of a.npy"):
        load_fields(folder)
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "c.png")
    with pytest.raises(FieldError, match=r"unknown colormap 'nope'"):
        load_fields(tmp_path / "c.png", colormap="nope")


def test_pngs_in_another_colormap_are_refused_not_misread(tmp_path):
    values = np.linspace(0, 1, 256).reshape(16, 16)
    Image.fromarray(render_colormap(values, "viridis")).save(tmp_path / "viridis.png")
    assert load_fields(tmp_path / "viridis.png", colormap="viridis").fields.shape == (1, 16, 16)
    with pytest.raises(FieldError, match=r"viridis.png: \d+\.\d% of its pixels have colours that are not in the "
                                         r"colormap \(e.g. RGB \(\d+, \d+, \d+\)\); pass the colormap"):
        load_fields(tmp_path / "viridis.png", colormap="gnuplot")


def test_a_npy_takes_the_box_size_its_record_states_and_a_corrupt_record_is_refused(tmp_path):
    np.save(tmp_path / "samples.npy", np.ones((2, 16, 16), np.float32))
    assert load_fields(tmp_path / "samples.npy").box_size_assumed
    (tmp_path / "samples.json").write_text(json.dumps({"box_size": 250.0, "sampler": "ddim"}))
    fieldset = load_fields(tmp_path / "samples.npy")
    assert fieldset.box_size == 250.0 and not fieldset.box_size_assumed
    assert load_fields(tmp_path / "samples.npy", box_size=1000).box_size == 1000.0  # the caller's box wins
    (tmp_path / "samples.json").write_text('{"box_size": 25')
    with pytest.raises(FieldError, match=r"samples.json: not a readable JSON record of samples.npy"):
        load_fields(tmp_path / "samples.npy")
