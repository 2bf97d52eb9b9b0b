"""``varbayes conjugate ...``: exact Bayesian updating from the command line."""

from __future__ import annotations

import argparse
import math
import warnings
from pathlib import Path

import numpy as np

from varbayes.cli import check_out_file
from varbayes.conjugate import NormalKnownVariance
from varbayes.heights import format_value, heights_data, heights_example


def register(sub) -> None:
    """Add ``conjugate`` and its sub-commands to the top-level parser."""
    group = sub.add_parser(
        "conjugate",
        help="exact Bayesian updating with conjugate priors",
        description="Exact Bayesian updating with conjugate priors.",
    )
    group.set_defaults(group_parser=group)
    cmds = group.add_subparsers(dest="conjugate_command", metavar="COMMAND")
    p = cmds.add_parser(
        "heights",
        help="the post's example: prior N(160, 10^2) on the mean height, data around 183 cm",
        description=(
            "Bayesian updating of the mean height mu: prior N(prior_mean, prior_std^2), "
            "heights x_i ~ N(mu, noise_std^2). Prints the prior, the MLE and the posterior "
            "(mean and interval) and writes a figure of prior, likelihood and posterior."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--prior-mean", type=float, default=160.0, help="prior mean of mu (cm)")
    p.add_argument("--prior-std", type=float, default=10.0, help="prior std of mu (cm)")
    p.add_argument("--noise-std", type=float, default=7.0, help="known std of one height (cm)")
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        help="text/CSV file with one height per line (cm); default: synthetic heights",
    )
    p.add_argument("--n", type=int, default=20, help="number of synthetic heights")
    p.add_argument("--true-mean", type=float, default=183.0, help="mean of synthetic heights")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic heights")
    p.add_argument("--level", type=float, default=0.95, help="probability of the intervals")
    p.add_argument("--plot", type=Path, default=Path("heights.png"), help="PNG to write")
    p.add_argument("--no-plot", action="store_true", help="do not write the figure")
    p.set_defaults(func=_heights)


def _read_column(path: Path) -> np.ndarray:
    if path.is_dir():
        raise ValueError(f"--data {str(path)!r} is a directory; expected a file of heights")
    if not path.is_file():
        raise FileNotFoundError(f"--data: no such file {str(path)!r}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # NumPy warns about an empty file; we refuse it
            values = np.loadtxt(path, delimiter="," if path.suffix == ".csv" else None, ndmin=1)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"--data: could not read numbers from {str(path)!r}: {exc}") from exc
    if values.ndim != 1:
        raise ValueError(f"--data: expected one height per line; got shape {values.shape}")
    if values.size == 0:
        raise ValueError(f"--data {str(path)!r} holds no numbers; expected one height per line")
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise ValueError(
            f"--data {str(path)!r}: value {bad[0] + 1} is {values[bad[0]]}; expected finite heights"
        )
    return values


def _heights(args) -> int:
    NormalKnownVariance(args.prior_mean, args.prior_std, args.noise_std)  # validate flags first
    if not math.isfinite(args.true_mean):
        raise ValueError(f"--true-mean must be a finite number; got {args.true_mean}")
    if args.data is not None:
        data = _read_column(args.data)
        source = str(args.data)
    else:
        data = heights_data(args.n, args.true_mean, args.noise_std, args.seed)
        source = f"synthetic, N({args.true_mean:g}, {args.noise_std:g}^2), seed {args.seed}"
    if not args.no_plot:
        check_out_file(args.plot, "--plot")
    try:
        res = heights_example(
            data,
            prior_mean=args.prior_mean,
            prior_std=args.prior_std,
            noise_std=args.noise_std,
            level=args.level,
            plot=None if args.no_plot else args.plot,
        )
    except ValueError as exc:
        if not str(exc).startswith("data:"):
            raise
        flag = (
            f"--data {str(args.data)!r}"
            if args.data is not None
            else (f"--true-mean {args.true_mean:g}")
        )
        raise ValueError(f"{flag}: {exc}") from exc
    xbar = float(res.model.mle())
    print(f"heights: n = {len(res.data)} ({source}); sample mean {format_value(xbar)} cm")
    print(
        f"model: x_i ~ N(mu, {args.noise_std:g}^2), prior mu ~ N({args.prior_mean:g}, "
        f"{args.prior_std:g}^2)"
    )
    print(res.table())
    print(f"log evidence log p(x) = {format_value(res.log_evidence, 4)}")
    if not args.no_plot:
        print(f"figure: {args.plot}")
    return 0
