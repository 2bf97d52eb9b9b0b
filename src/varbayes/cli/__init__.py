"""The ``varbayes`` command.

Each sub-command lives in its own module of this package and exposes
``register(subparsers)``, which adds its parser and sets ``func`` (a callable
taking the parsed namespace and returning an exit status). Arguments are parsed
only here; the sub-commands pass plain values on to the library.

One error policy for every command (:func:`main`):

* an anticipated failure (bad input: ``ValueError``, ``TypeError``; a file problem:
  ``OSError``; a diverged fit: ``FloatingPointError`` such as
  :class:`~varbayes.monitor.NonFiniteObjectiveError`) is one line on stderr that names
  the flag or file and what was expected; exit status 2;
* any other exception is a bug: one line saying so, with a pointer to ``--debug``;
  exit status 1;
* Ctrl-C that a command does not handle itself: one line, exit status 130;
* ``varbayes --debug ...`` prints the full traceback in every case.

Sub-commands raise plain exceptions; the helpers below (:func:`check_device`,
:func:`check_min`, :func:`check_out_dir`, :func:`check_out_file`) turn the common flag
checks into messages that name the flag.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from pathlib import Path

from varbayes import __version__

__all__ = [
    "ANTICIPATED",
    "build_parser",
    "check_device",
    "check_min",
    "check_out_dir",
    "check_out_file",
    "error_line",
    "main",
]

# Modules of this package that add a sub-command, in the order --help lists them.
SUBCOMMANDS = ["conjugate", "gmm", "vi", "vae", "tour"]

#: Exceptions that are the user's input or environment, not a bug: exit status 2.
ANTICIPATED = (ValueError, TypeError, OSError, FloatingPointError, OverflowError)

_EPILOG = (
    "exit status: 0 success; 2 bad input or an anticipated failure (a missing file, a "
    "diverged fit), reported in one line on stderr; 1 an unexpected error, which is a bug "
    "in varbayes (please report it with the output of --debug); 130 interrupted. "
    "--debug shows the full traceback."
)


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="varbayes",
        description=(
            "Bayesian and variational inference, from conjugate priors to variational "
            "autoencoders. Every method maximises the ELBO: "
            "log p(x) = ELBO(q) + KL(q || p(theta | x))."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"varbayes {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="on an error, print the full traceback (give it before the command)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"varbayes.cli.{name}").register(sub)
    return parser


def error_line(exc: BaseException) -> str:
    """One line describing ``exc``: its message with newlines folded, or an OSError's file."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        text = f"{exc.filename!s}: {exc.strerror}"
        if exc.filename2 is not None:
            text = f"{exc.filename!s} -> {exc.filename2!s}: {exc.strerror}"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


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
    except ANTICIPATED as exc:
        if args.debug:
            traceback.print_exc()
        print(f"varbayes: error: {error_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.debug:
            traceback.print_exc()
        print("varbayes: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: say so in one line, the traceback behind --debug
        if args.debug:
            traceback.print_exc()
            hint = "the traceback is above"
        else:
            hint = "run again with `varbayes --debug ...` for the traceback"
        print(
            f"varbayes: internal error (a bug in varbayes): {type(exc).__name__}: "
            f"{error_line(exc)}; {hint}",
            file=sys.stderr,
        )
        return 1


# ---------------------------------------------------------------- flag checks
def check_device(text: str, flag: str = "--device"):
    """``torch.device(text)``, checked: a ``ValueError`` naming ``flag`` for a malformed
    name or a device this machine lacks (no CUDA build, no GPU, index out of range)."""
    from varbayes._validation import check_device as _check

    return _check(text, flag)


def check_min(args: argparse.Namespace, **minimums: int) -> None:
    """Raise ``ValueError`` naming ``--flag`` when ``args.flag < minimum`` (None passes)."""
    for dest, low in minimums.items():
        value = getattr(args, dest)
        if value is not None and value < low:
            raise ValueError(f"--{dest.replace('_', '-')} must be >= {low}; got {value}")


def check_out_dir(path: str | os.PathLike, flag: str = "--out") -> Path:
    """``path`` as a directory to write into: refused, naming ``flag``, when it is a file
    or lies below a file."""
    path = Path(path)
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                what = "is" if p == path else f"lies below {str(p)!r}, which is"
                raise ValueError(f"{flag} {str(path)!r} {what} a file; expected a directory")
            break
    return path


def check_out_file(path: str | os.PathLike, flag: str) -> Path:
    """``path`` as a file to write: refused, naming ``flag``, when its directory does not
    exist or ``path`` is a directory. Checked before any work, so nothing is computed for
    an output that cannot be written."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {str(path)!r} is a directory; expected a file name")
    if not path.parent.is_dir():
        raise ValueError(
            f"{flag} {str(path)!r}: directory {str(path.parent)!r} does not exist; create it first"
        )
    return path


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
