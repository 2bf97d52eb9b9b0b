"""The ``varbayes`` command.

Each sub-command lives in its own module of this package and exposes
``register(subparsers)``, which adds its parser and sets ``func`` (a callable
taking the parsed namespace and returning an exit status). Arguments are parsed
only here; the sub-commands pass plain values on to the library.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from varbayes import __version__

# Modules of this package that add a sub-command, in the order --help lists them.
SUBCOMMANDS = ["conjugate", "gmm", "vi", "vae", "tour"]


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="varbayes",
        description=(
            "Bayesian and variational inference, from conjugate priors to variational "
            "autoencoders. Every method maximises the ELBO: "
            "log p(x) = ELBO(q) + KL(q || p(theta | x))."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"varbayes {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"varbayes.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        # A command group given without its sub-command prints that group's help.
        (getattr(args, "group_parser", None) or parser).print_help()
        return 0
    try:
        return int(func(args) or 0)
    except (ValueError, OSError) as exc:
        print(f"varbayes: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
