"""``varbayes tour``: walk the post section by section and write a self-contained report."""

from __future__ import annotations

import sys
from pathlib import Path


def register(sub) -> None:
    """Add ``tour`` to the top-level parser."""
    p = sub.add_parser(
        "tour",
        help="the post end to end: six sections computed, one HTML report (offline)",
        description=(
            "Walk the post 'from Variational Inference to VAE' section by section (Bayesian "
            "framework, conjugacy, MAP = L2, variational inference, latent variable models, "
            "stochastic VI and the VAE), computing each claim with varbayes, and write "
            "OUT/index.html: one self-contained page (figures embedded, no network needed "
            "to open it) stating the version, seeds and timings. Without MNIST on disk, "
            "--quick trains the VAE on scikit-learn's bundled 8x8 digits."
        ),
    )
    p.add_argument("--quick", action="store_true",
                   help="a short tour (at most about 3 minutes on 2 CPU cores)")  # fmt: skip
    p.add_argument("--vae", type=Path, default=None, metavar="RUN",
                   help="reuse this trained VAE run instead of training one")  # fmt: skip
    p.add_argument("--out", type=Path, default=Path("tour"), help="output folder (default: tour)")
    p.add_argument("--seed", type=int, default=0, help="seed of every section (default: 0)")
    p.add_argument("--data-root", type=Path, default=None, help="MNIST data directory")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="intra-op CPU threads (0: torch's default, all cores; 1 is faster on a busy machine)",
    )
    p.set_defaults(func=_tour)


def _tour(args) -> int:
    import torch

    from varbayes.tour import TourSettings, run_tour

    if args.threads < 0:
        raise ValueError(f"--threads must be >= 0; got {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.vae is not None:
        from varbayes.vae.checkpoint import resolve_checkpoint

        resolve_checkpoint(args.vae)  # a missing run fails now, not after five sections
    settings = TourSettings(
        out=args.out,
        quick=args.quick,
        seed=args.seed,
        vae_run=args.vae,
        data_root=args.data_root,
        progress=not args.no_progress,
    )
    result = run_tour(settings)
    failed = result.failed_checks
    n = sum(len(s.checks) for s in result.sections)
    print(f"report: {result.report} ({result.seconds:.0f} s; {n - len(failed)}/{n} checks hold)")
    for statement in failed:
        print(f"varbayes: check failed: {statement}", file=sys.stderr)
    return 1 if failed else 0
