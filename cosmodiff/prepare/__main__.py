"""`python -m cosmodiff.prepare`: a shard set from the command line (cosmodiff.prepare's docstring is its help)."""
import argparse

from cosmodiff import fields, prepare
from cosmodiff.cli import ArgumentParser, COUNT, POSITIVE, exit_on, writable_folder


def build_parser():
    parser = ArgumentParser(description=prepare.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="a field set: file or folder, any format load_fields reads")
    parser.add_argument("--out", required=True, help="the shard set folder")
    parser.add_argument("--shard_size", type=COUNT, default=4096, help="fields per shard (at least; whole sources)")
    parser.add_argument("--slab_thickness", type=COUNT, default=None, help="slices per 2D slab of cubes and snapshots")
    parser.add_argument("--mesh", type=COUNT, default=fields.DEFAULT_MESH, help="nodes per side snapshots are painted on")
    parser.add_argument("--colormap", default=None, help="invert colormapped PNGs, e.g. gnuplot")
    parser.add_argument("--box_size", type=POSITIVE, default=None, help="Mpc/h (default: from the data, else 1000)")
    parser.add_argument("--params_file", default=None, help="parameter table joined to the simulations")
    return parser


def prepared(args):
    writable_folder(args.out, "--out")
    prepare.prepare(**vars(args))


def main(argv=None):
    exit_on((fields.FieldError, ValueError), prepared, build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
