"""Read, write and validate sets of 2D density fields, whatever form the user holds them in.

Formats (see train_data/README.md): .npy (N,H,W) or (H,W); .npz with `fields` and optional
`params`, `param_names`, `box_size`, `sim_index`; a folder of .npy, .png or snapshot files, or of
folders of them (one per simulation, as Quijote's LH/<index>/, snapshots in LH/<index>/snapdir_XXX/);
Quijote 3D density cubes and Gadget HDF5 snapshots (painted on a mesh, cosmodiff.snapshots) sliced
into 2D slabs. Every problem is raised as a FieldError whose message is one sentence naming the file.
"""
import json
import re
import zipfile
from dataclasses import dataclass, field as dataclass_field
from pathlib import Path

import numpy as np

from cosmodiff.atomic import atomic_path
from cosmodiff.ranges import COUNT, GUIDANCE, INDEX, NON_NEGATIVE, POSITIVE, checked_numbers
from cosmodiff.errors import FieldError  # noqa: F401 (the readers' error, imported from here by callers)

DEFAULT_BOX_SIZE = 1000.0  # Mpc/h, Quijote's box
QUIJOTE_CUBE_NAME = re.compile(r"^df_m_\d+_(CIC|PCS|NGP|TSC)_z=.*\.npy$")
COLOUR_TOLERANCE = 3.0  # RGB distance to the nearest colormap entry still read as that entry (rounding, not noise)
DEFAULT_MESH = 256  # nodes per side a snapshot is painted on


@dataclass
class FieldSet:
    fields: np.ndarray  # float32 (N, H, W)
    box_size: float = DEFAULT_BOX_SIZE  # Mpc/h
    params: np.ndarray | None = None  # (N, P)
    param_names: list = dataclass_field(default_factory=list)
    sources: list = dataclass_field(default_factory=list)  # one string per field
    sim_index: np.ndarray | None = None  # (N,) which simulation each field came from
    box_size_assumed: bool = False  # True when neither the data nor the caller gave the box size

    def __len__(self):
        return len(self.fields)

    @property
    def image_size(self):
        return self.fields.shape[-1]


def natural_key(path):
    """Sort key that puts 2 before 10 in file names."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", Path(path).name)]


def cube_to_slabs(cube, slab_thickness):
    """Average `slab_thickness` consecutive slices along each of the 3 axes: 3*(D//k) 2D fields.

    A remainder of D % k slices at the end of each axis is dropped (the earlier work took 5 of 512).
    """
    depth = cube.shape[0]
    n_slabs = depth // slab_thickness
    used = n_slabs * slab_thickness
    slabs = []
    for axis in range(3):
        moved = np.moveaxis(cube, axis, 0)[:used]
        slabs.append(moved.reshape(n_slabs, slab_thickness, depth, depth).mean(axis=1, dtype=np.float64))
    return np.concatenate(slabs).astype(np.float32)


def block_average(fields, size):
    """Average s x s pixel blocks of (N, H, W) fields down to (N, size, size); periodicity is kept."""
    side = fields.shape[-1]
    if side == size:
        return fields
    if size > side or side % size:
        raise FieldError(f"cannot block-average {side}x{side} fields to {size}x{size}: the size must divide {side}")
    factor = side // size
    return fields.reshape(len(fields), size, factor, size, factor).mean(axis=(2, 4), dtype=np.float64).astype(np.float32)


def colormap_lut(name):
    """The RGB bytes of every entry of a matplotlib colormap, shape (N, 3)."""
    import matplotlib

    try:
        cmap = matplotlib.colormaps[name]
    except KeyError:
        raise FieldError(f"unknown colormap '{name}': use a matplotlib colormap name such as gnuplot") from None
    return cmap(np.linspace(0.0, 1.0, cmap.N), bytes=True)[:, :3].astype(np.int64)


def invert_colormap(rgb, lut, source="image"):
    """Scalar in [0, 1] of each RGB pixel: the nearest LUT entry (lowest index on ties) over N-1.

    A colour farther than COLOUR_TOLERANCE from every entry is not of this colormap (another colormap,
    a plot's axes, lossy compression): a FieldError instead of a made-up value.
    """
    codes = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    unique_codes, inverse = np.unique(codes.ravel(), return_inverse=True)
    colours = np.stack([(unique_codes >> 16) & 255, (unique_codes >> 8) & 255, unique_codes & 255], axis=1)
    distances = ((colours[:, None, :] - lut[None, :, :]) ** 2).sum(axis=-1)
    index = distances.argmin(axis=1)
    foreign = np.sqrt(distances.min(axis=1)) > COLOUR_TOLERANCE
    if foreign.any():
        fraction = foreign[inverse].mean()
        example = tuple(int(c) for c in colours[np.argmax(foreign)])
        raise FieldError(f"{source}: {100 * fraction:.1f}% of its pixels have colours that are not in the colormap "
                         f"(e.g. RGB {example}); pass the colormap the image was rendered with")
    return (index[inverse] / (len(lut) - 1)).reshape(codes.shape).astype(np.float32)


def render_colormap(values, name):
    """Render scalars in [0, 1] through a colormap as RGBA bytes, as matplotlib's cmap(x, bytes=True)."""
    import matplotlib

    return matplotlib.colormaps[name](np.clip(values, 0.0, 1.0), bytes=True)


def read_png(path, colormap=None):
    """One PNG as a (1, H, W) field: grayscale /max, colormap inverted, or RGB(A) as luminance."""
    from PIL import Image, UnidentifiedImageError

    lut = None if colormap is None else colormap_lut(colormap)
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            if mode in ("I;16", "I;16B", "I"):
                values = np.asarray(image, dtype=np.float64) / 65535.0
            elif lut is not None and mode in ("RGB", "RGBA", "P"):
                values = invert_colormap(np.asarray(image.convert("RGB")), lut, path)
            else:
                values = np.asarray(image.convert("L"), dtype=np.float64) / 255.0
    except (OSError, UnidentifiedImageError, SyntaxError) as error:
        raise FieldError(f"{path}: cannot read the PNG (corrupt or truncated: {error})") from None
    return values.astype(np.float32)[None]


def read_npy(path, slab_thickness=None):
    """One .npy as (N, H, W): a 2D field, a stack, or a 3D density cube cut into slabs.

    A (D, D, D) array is ambiguous. It is a density cube when slab_thickness is given, and it must
    be one when the file has Quijote's cube name (df_m_*_z=*.npy); otherwise it is a stack of D
    images of D x D pixels.
    """
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise unreadable(path, error) from None
    check_real(array, path)
    is_cube = array.ndim == 3 and len(set(array.shape)) == 1
    if QUIJOTE_CUBE_NAME.match(Path(path).name) and slab_thickness is None:
        raise FieldError(f"{path}: is a Quijote 3D density cube; pass slab_thickness (--slab_thickness K) "
                         "to average K slices into each 2D field")
    if slab_thickness is not None:
        if not is_cube:
            raise FieldError(f"{path}: slab_thickness needs a cubic 3D array, but the array has shape {array.shape}")
        if not 1 <= slab_thickness <= array.shape[0]:
            raise FieldError(f"{path}: slab_thickness {slab_thickness} must be between 1 and the cube side {array.shape[0]}")
        return cube_to_slabs(array, slab_thickness)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise FieldError(f"{path}: expected a (H, W) field or an (N, H, W) stack, got shape {array.shape}")
    return array.astype(np.float32)


def check_real(array, path):
    """The array, if it holds real numbers (integers or floats); complex, boolean, text or object arrays
    are refused rather than cut or cast."""
    if array.dtype.kind not in "iuf":
        raise FieldError(f"{path}: holds {array.dtype} values; fields must be real numbers (integers or floats)")
    return array


def unreadable(path, error):
    """The FieldError for a .npy/.npz numpy cannot load: pickled objects are refused, never unpickled."""
    object_array = "Object arrays cannot be loaded" in str(error)
    raw_pickle = "pickled" in str(error) and Path(path).read_bytes()[:1] == b"\x80"  # pickle's PROTO opcode
    if object_array or raw_pickle:
        return FieldError(f"{path}: holds pickled Python objects, which are never unpickled (loading them can run "
                          "code); save the fields as a numeric array")
    return FieldError(f"{path}: cannot read the {Path(path).suffix} file (corrupt or truncated: {error})")


def read_npz(path):
    """An .npz field set: `fields` plus optional metadata."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            contents = {key: archive[key] for key in archive.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise unreadable(path, error) from None
    if "fields" not in contents:
        raise FieldError(f"{path}: the .npz has no 'fields' array (it has {sorted(contents)})")
    fields = check_real(contents["fields"], path)
    if fields.ndim == 2:
        fields = fields[None]
    if fields.ndim != 3:
        raise FieldError(f"{path}: expected 'fields' of shape (H, W) or (N, H, W), got {fields.shape}")
    return check_parts_agree(FieldSet(
        fields=fields.astype(np.float32),
        box_size=float(contents["box_size"]) if "box_size" in contents else DEFAULT_BOX_SIZE,
        box_size_assumed="box_size" not in contents,
        params=contents.get("params"),
        param_names=[str(name) for name in contents.get("param_names", [])],
        sim_index=contents.get("sim_index")), path)


def validate(fields, sources):
    """Raise a FieldError for the first field that is not a valid periodic density or overdensity."""
    if fields.ndim != 3 or len(fields) == 0:
        raise FieldError(f"{sources[0] if sources else 'input'}: holds no 2D fields")
    height, width = fields.shape[1:]
    if height != width:
        raise FieldError(f"{sources[0]}: fields must be square, got {height}x{width}")
    if height < 16 or height & (height - 1):
        raise FieldError(f"{sources[0]}: the field side must be a power of two >= 16, got {height}")
    finite = np.isfinite(fields).all(axis=(1, 2))
    if not finite.all():
        index = int(np.argmin(finite))
        raise FieldError(f"{sources[index]}: the field contains NaN or infinite values")
    minima = fields.min(axis=(1, 2))
    if (minima < -1).any():
        index = int(np.argmin(minima))
        raise FieldError(f"{sources[index]}: the field has values below -1, so 1+delta < 0 is not a density")
    empty = (fields == 0).all(axis=(1, 2))
    if empty.any():
        index = int(np.argmax(empty))
        raise FieldError(f"{sources[index]}: the field is all zeros (a collapsed sample?), so its overdensity "
                         "f/mean(f) - 1 is undefined")


def read_snapshot_slabs(path, slab_thickness, mesh):
    """A Gadget HDF5 snapshot as 2D fields: its CIC density on a mesh^3 grid cut into slabs, and its
    box size (Mpc/h)."""
    from cosmodiff.snapshots import read_snapshot

    if slab_thickness is None:
        raise FieldError(f"{path}: is a particle snapshot; pass slab_thickness (--slab_thickness K) to average K "
                         f"mesh slices into each 2D field (the mesh is {mesh}^3, --mesh)")
    if not 1 <= slab_thickness <= mesh:
        raise FieldError(f"{path}: slab_thickness {slab_thickness} must be between 1 and the mesh side {mesh}")
    cube, box_size = read_snapshot(path, mesh)
    return cube_to_slabs(cube, slab_thickness), box_size


def png_file(path, colormap, slab_thickness, mesh):
    return read_png(path, colormap), None


def npy_file(path, colormap, slab_thickness, mesh):
    return read_npy(path, slab_thickness), recorded_box_size(path)


def snapshot_file(path, colormap, slab_thickness, mesh):
    return read_snapshot_slabs(path, slab_thickness, mesh)


# suffix -> reader(path, colormap, slab_thickness, mesh) -> (fields (N, H, W), the box size the file
# carries or None): the files a set or a folder of them is made of (an .npz is a whole set, read_npz)
FILE_READERS = {".npy": npy_file, ".png": png_file, ".hdf5": snapshot_file, ".h5": snapshot_file}
READABLE = ", ".join([*FILE_READERS, ".npz"])  # what the error messages list


def read_file(path, colormap=None, slab_thickness=None, mesh=DEFAULT_MESH):
    """One file of FILE_READERS as (N, H, W) fields and the box size it carries (None: none)."""
    return FILE_READERS[Path(path).suffix.lower()](path, colormap, slab_thickness, mesh)


# samples.json's numbers -> the ranges of generate_images.py's flags and the run that wrote them
SAMPLES_RANGES = {"box_size": POSITIVE, "step": INDEX, "seed": INDEX, "steps": COUNT, "churn": NON_NEGATIVE,
                  "guidance": GUIDANCE, "num_samples": COUNT, "batch_size": COUNT, "network_evaluations": COUNT,
                  "num_processes": COUNT, "seconds": NON_NEGATIVE, "seconds_per_sample": NON_NEGATIVE}


def check_parts_agree(fieldset, path):
    """Refuse a set whose parameters, parameter names or simulation indices do not match its fields."""
    n_fields = len(fieldset.fields)
    if fieldset.params is not None:
        params = np.asarray(fieldset.params)
        if params.ndim != 2 or len(params) != n_fields:
            raise FieldError(f"{path}: 'params' has {len(params)} rows for {n_fields} fields; give one row per field")
        if fieldset.param_names and len(fieldset.param_names) != params.shape[1]:
            raise FieldError(f"{path}: 'param_names' names {len(fieldset.param_names)} parameters but 'params' has "
                             f"{params.shape[1]} columns")
        if not np.isfinite(params).all():
            raise FieldError(f"{path}: 'params' holds NaN or infinity")
    if fieldset.sim_index is not None and len(fieldset.sim_index) != n_fields:
        raise FieldError(f"{path}: 'sim_index' has {len(fieldset.sim_index)} entries for {n_fields} fields")
    if not (np.isfinite(fieldset.box_size) and fieldset.box_size > 0):
        raise FieldError(f"{path}: 'box_size' is {fieldset.box_size}; it must be a number > 0 (Mpc/h)")
    return fieldset


def recorded_box_size(path):
    """The box size (Mpc/h) that the record beside a .npy states (generate_images.py's samples.json
    beside samples.npy), else None."""
    record = Path(path).with_suffix(".json")
    if not record.exists():
        return None
    try:
        values = json.loads(record.read_text())
        box_size = values.get("box_size")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        raise FieldError(f"{record}: not a readable JSON record of {Path(path).name} (corrupt or truncated)") from None
    checked_numbers(values, SAMPLES_RANGES, record, FieldError)
    return None if box_size is None else float(box_size)


def field_files(folder):
    """The field files of a folder, of its folders (one per simulation, as Quijote's LH/<index>/), or
    of their snapdir_XXX folders, in natural order; a multi-file snapshot by its part 0 alone. A
    FieldError when there are none."""
    from cosmodiff.snapshots import is_later_part

    level = [folder]
    for _ in range(3):
        entries = [entry for parent in level for entry in sorted(parent.iterdir(), key=natural_key)]
        files = [entry for entry in entries if entry.is_file() and entry.suffix.lower() in FILE_READERS]
        if files:
            return [file for file in files if not is_later_part(file)]
        level = [entry for entry in entries if entry.is_dir()]
    raise FieldError(f"{folder}: the folder has no {', '.join(FILE_READERS)} files, nor folders of them")


def load_fields(path, colormap=None, slab_thickness=None, box_size=None, mesh=DEFAULT_MESH):
    """Load and validate a field set from a file or folder. box_size (Mpc/h) overrides the file's;
    mesh is the grid snapshots are painted on."""
    path = Path(path)
    if not path.exists():
        raise FieldError(f"{path}: no such file or folder")
    if path.is_dir():
        if not any(path.iterdir()):
            raise FieldError(f"{path}: the folder is empty")
        files = field_files(path)
        stacks, sources, boxes = [], [], set()
        for file in files:
            stack, box = read_file(file, colormap, slab_thickness, mesh)
            if stacks and stack.shape[1:] != stacks[0].shape[1:]:
                raise FieldError(f"{file}: field shape {stack.shape[1:]} differs from {stacks[0].shape[1:]} "
                                 f"of {files[0].name}; all fields of a set must have one shape")
            stacks.append(stack)
            boxes.add(box)
            sources += [str(file)] if len(stack) == 1 else [f"{file}[{i}]" for i in range(len(stack))]
        if len(boxes) > 1:
            raise FieldError(f"{path}: its files carry different box sizes {sorted(boxes, key=str)}; a set has one box")
        box = boxes.pop()
        fieldset = FieldSet(fields=np.concatenate(stacks), sources=sources, box_size=box or DEFAULT_BOX_SIZE,
                            box_size_assumed=box is None)
    elif path.suffix.lower() == ".npz":
        fieldset = read_npz(path)
        fieldset.sources = [f"{path}[{i}]" for i in range(len(fieldset.fields))]
    elif path.suffix.lower() in FILE_READERS:
        fields, box = read_file(path, colormap, slab_thickness, mesh)
        sources = [str(path)] if path.suffix.lower() == ".png" else [f"{path}[{i}]" for i in range(len(fields))]
        fieldset = FieldSet(fields=fields, sources=sources, box_size=box or DEFAULT_BOX_SIZE, box_size_assumed=box is None)
    else:
        raise FieldError(f"{path}: unsupported file type '{path.suffix}'; use {READABLE} or a folder of them")
    if len(fieldset.fields) == 0 or fieldset.fields.size == 0:
        raise FieldError(f"{path}: holds no fields")
    validate(fieldset.fields, fieldset.sources)
    if box_size is not None:
        fieldset.box_size, fieldset.box_size_assumed = float(box_size), False
    return fieldset


def save_fields(path, fieldset):
    """Write a field set as .npz, atomically, in the format load_fields reads back identically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = dict(fields=np.asarray(fieldset.fields, np.float32), box_size=np.float64(fieldset.box_size))
    if fieldset.params is not None:
        arrays["params"] = np.asarray(fieldset.params)
        arrays["param_names"] = np.asarray(fieldset.param_names, dtype=str)
    if fieldset.sim_index is not None:
        arrays["sim_index"] = np.asarray(fieldset.sim_index)
    with atomic_path(path) as temporary:
        np.savez(temporary, **arrays)


def fit_image_size(fieldset, image_size):
    """Fields at the model's image size: larger ones are block-averaged down (periodicity kept),
    anything else is refused; never cropped."""
    side = fieldset.image_size
    if side < image_size or side % image_size:
        raise FieldError(f"{fieldset.sources[0]}: fields of {side}x{side} cannot be block-averaged to "
                         f"--image_size {image_size}; pass an --image_size that divides {side}")
    if isinstance(fieldset.fields, np.ndarray):  # a shard set's fields are averaged one by one as they are read
        fieldset.fields = block_average(fieldset.fields, image_size)
    return fieldset
