"""`python -m cosmodiff.mock`: mock fields or a named split from the command line (cosmodiff.mock's
docstring is its help)."""
import argparse

from cosmodiff import mock
from cosmodiff.cli import ArgumentParser, COUNT, INDEX, POSITIVE, REDSHIFT, exit_on, writable_file, writable_folder
from cosmodiff.fields import save_fields
from cosmodiff.launch import set_threads


def write_mock_set(out, split=None, **options):
    """A named split into the folder out, else mock.make_mock_set(**options) into the file out."""
    if split:
        writable_folder(out, "--out")
        mock.ensure_split(out, split, options.get("workers", mock.DEFAULT_WORKERS))
        return
    writable_file(out, "--out")
    fieldset = mock.make_mock_set(**options)
    save_fields(out, fieldset)
    print(f"Wrote {len(fieldset)} fields of {fieldset.image_size}x{fieldset.image_size} to {out}")


def build_parser():
    parser = ArgumentParser(description=mock.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output .npz (a folder with --split)")
    parser.add_argument("--split", choices=list(mock.SPLITS), default=None,
                        help="write a named train/test split into the folder --out instead")
    parser.add_argument("--n_sims", type=COUNT, default=mock.DEFAULT_TRAIN_SIMS)
    parser.add_argument("--first_sim", type=INDEX, default=0, help="index of the first simulation (for disjoint splits)")
    parser.add_argument("--grid", type=COUNT, default=mock.DEFAULTS["grid"], help="particles and mesh cells per side")
    parser.add_argument("--box_size", type=POSITIVE, default=mock.DEFAULTS["box_size"], help="Mpc/h")
    parser.add_argument("--slab_thickness", type=COUNT, default=mock.DEFAULTS["slab_thickness"], help="mesh cells per slab")
    parser.add_argument("--image_size", type=INDEX, default=mock.DEFAULTS["image_size"], help="block-average to this side (0: the grid)")
    parser.add_argument("--redshift", type=REDSHIFT, default=0.0)
    parser.add_argument("--method", default="pm", choices=["pm", "2lpt"],
                        help="2lpt: particles displaced once; pm: particle-mesh N-body from 2LPT at z = 9")
    parser.add_argument("--pm_steps", type=COUNT, default=mock.PM_STEPS, help="pm: time steps from z = 9, linear in a")
    parser.add_argument("--seed", type=INDEX, default=mock.DEFAULT_SEED)
    parser.add_argument("--latin_hypercube", action="store_true", help="draw (Omega_m, sigma_8) per simulation")
    parser.add_argument("--workers", type=COUNT, default=mock.DEFAULT_WORKERS, help="simulations run at once, one core "
                        "each (the same fields as one; default: every core)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    set_threads(1)  # one core per simulation, as --workers says (COSMODIFF_THREADS overrides)
    exit_on(ValueError, lambda options: write_mock_set(**vars(options)), args)


if __name__ == "__main__":
    main()
