"""What every entry script shares on its command line, and only the scripts: a parser whose errors are
one line, the numeric flag types (cosmodiff.ranges: non-finite and out-of-range values refused at
parse time, exit status 2, one sentence naming the flag and the range), the checks that an output can
be written before any work starts (cosmodiff.atomic), and the exit of a script on an error.
"""
import argparse
import json
import sys

from cosmodiff.atomic import writable_file, writable_folder
from cosmodiff.ranges import (COUNT, FINITE, FRACTION, GUIDANCE, INDEX, INTEGER, NON_NEGATIVE, POSITIVE, REDSHIFT,
                              Number, checked_numbers, folder_name, numbers_in)

# what the scripts import from here besides this module's own
__all__ = ["ArgumentParser", "add_settings", "device_name", "finite_json", "exit_on", "writable_file", "writable_folder", "COUNT",
           "FINITE", "FRACTION", "GUIDANCE", "INDEX", "INTEGER", "NON_NEGATIVE", "POSITIVE", "REDSHIFT", "Number",
           "checked_numbers", "folder_name", "numbers_in"]


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser whose errors are the project's one line, `error: argument --flag: ...`, exit 2."""

    def error(self, message):
        self.exit(2, f"error: {message}\n")


def add_settings(parser, groups):
    """The flags of settings groups (cosmodiff.config.GROUPS names), one argument group each: --NAME for
    every field, with its default, range or choices and help."""
    from cosmodiff.config import fields_of  # here, so the scripts that take no training settings stay light
    for group in groups:
        arguments = parser.add_argument_group(group)
        exclusive = {}
        for name, _, item in fields_of(group):
            flag = dict(item.metadata["flag"])
            target = arguments
            if "exclusive" in flag:
                name_of_set = flag.pop("exclusive")
                if name_of_set not in exclusive:
                    exclusive[name_of_set] = arguments.add_mutually_exclusive_group()
                target = exclusive[name_of_set]
            kind, choices = item.metadata["kind"], item.metadata["choices"]
            options = dict(default=item.default, help=item.metadata["help"].replace("%", "%%"), **flag)
            if kind is not None:
                options["type"] = kind
            if choices:
                options["choices"] = list(choices)
            target.add_argument(f"--{name}", **options)
    return parser


def device_name(text):
    """An argparse type: a torch device, e.g. cpu, cuda, cuda:1."""
    import torch  # here, so the scripts that take no device do not load torch to parse their flags
    try:
        return torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"must be a torch device such as cpu, cuda or cuda:1, got '{text}'") from None


def finite_json(value, what):
    """value as indented JSON, refused when any number in it is NaN or infinite (nothing is written then)."""
    try:
        return json.dumps(value, indent=1, allow_nan=False)
    except ValueError:
        raise ValueError(f"{what} holds NaN or infinity; nothing was written") from None


def exit_on(errors, main, args):
    """main(args), with an error of the given kinds, or an operating-system error (a read-only folder, a
    name too long), as one line `error: ...` on stderr and exit status 2; Ctrl-C as one line and exit
    status 130, the shell's for an interrupt."""
    try:
        return main(args)
    except errors as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except OSError as error:
        print(f"error: {error.filename or 'a file'}: {error.strerror or error}", file=sys.stderr)
        sys.exit(2)
