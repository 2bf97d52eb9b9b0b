"""``varbayes vi ...``: variational inference from the command line."""

from __future__ import annotations

import argparse
from pathlib import Path

from varbayes.cli import check_out_file


def register(sub) -> None:
    """Add ``vi`` and its sub-commands to the top-level parser."""
    group = sub.add_parser(
        "vi",
        help="variational inference: ELBO, mean-field and stochastic VI",
        description="Variational inference: every mode maximises ELBO = log p(x) - KL(q || p).",
    )
    group.set_defaults(group_parser=group)
    cmds = group.add_subparsers(dest="vi_command", metavar="COMMAND")
    p = cmds.add_parser(
        "demo",
        help="the four modes (exact, MAP, mean-field VI, full-rank SVI) on linear regression",
        description=(
            "Bayesian linear regression with known noise on synthetic data with correlated "
            "columns: prints the exact posterior, the MAP, mean-field VI (CAVI) and full-rank "
            "stochastic VI side by side (ELBO, KL to the exact posterior, marginal mean and "
            "std) and writes a figure comparing the marginals."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--n", type=int, default=50, help="number of data points")
    p.add_argument("--dim", type=int, default=3, help="number of coefficients D")
    p.add_argument("--noise-std", type=float, default=1.0, help="known noise std sigma")
    p.add_argument("--prior-std", type=float, default=1.0, help="prior std s of each coefficient")
    p.add_argument(
        "--correlation", type=float, default=0.8, help="correlation of neighbouring columns of X"
    )
    p.add_argument("--steps", type=int, default=2500, help="SVI steps (Adam; default 2500)")
    p.add_argument("--lr", type=float, default=0.05, help="SVI learning rate")
    p.add_argument("--particles", type=int, default=4, help="SVI particles per step")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and of SVI")
    p.add_argument("--plot", type=Path, default=Path("four_modes.png"), help="PNG to write")
    p.add_argument("--no-plot", action="store_true", help="do not write the figure")
    p.set_defaults(func=_demo)


def _demo(args) -> int:
    from varbayes.monitor import NonFiniteObjectiveError
    from varbayes.vi.compare import compare_modes, plot_marginals, synthetic_linear_data

    for name in ("n", "dim", "steps", "particles"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1; got {getattr(args, name)}")
    for name in ("noise_std", "prior_std", "lr"):
        if not getattr(args, name) > 0:
            raise ValueError(f"--{name.replace('_', '-')} must be > 0; got {getattr(args, name)}")
    if not args.no_plot:
        check_out_file(args.plot, "--plot")
    if not -1 < args.correlation < 1:
        raise ValueError(f"--correlation must lie in (-1, 1); got {args.correlation}")
    X, y, _ = synthetic_linear_data(
        args.n, args.dim, noise_scale=args.noise_std, correlation=args.correlation, seed=args.seed
    )
    try:
        comp = compare_modes(
            X,
            y,
            noise_scale=args.noise_std,
            prior_scale=args.prior_std,
            num_steps=args.steps,
            num_particles=args.particles,
            lr=args.lr,
            seed=args.seed,
        )
    except NonFiniteObjectiveError as exc:
        raise NonFiniteObjectiveError(
            f"--lr {args.lr:g}: stochastic VI diverged ({exc}); try a smaller --lr", exc.step
        ) from exc
    print(comp.to_string())
    print(
        "\nELBO <= log p(y), with equality only for the exact posterior; mean-field VI has the "
        "exact mean but too small variances (1/Lambda_dd); the MAP row shows log p(y, theta_MAP)."
    )
    if not args.no_plot:
        plot_marginals(comp, args.plot)
        print(f"wrote {args.plot}")
    return 0
