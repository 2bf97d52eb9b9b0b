"""``varbayes gmm fit ...``: fit a Gaussian mixture (EM or CAVI) to a data file."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def register(sub) -> None:
    """Add ``gmm`` and its sub-command ``fit`` to the top-level parser."""
    group = sub.add_parser(
        "gmm",
        help="Gaussian mixtures by EM or mean-field variational inference",
        description="Gaussian mixtures: EM (maximum likelihood) or CAVI (variational Bayes).",
    )
    group.set_defaults(group_parser=group)
    cmds = group.add_subparsers(dest="gmm_command", metavar="COMMAND")
    p = cmds.add_parser(
        "fit",
        help="fit a mixture to DATA (.csv or .npy, one row per datum)",
        description=(
            "Fit a K-component Gaussian mixture to the rows x_i of DATA by maximising the "
            "ELBO; print the log-likelihood (EM) or ELBO (variational), BIC/AIC, the number "
            "of iterations and whether the fit converged. Nothing is written if the fit fails."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("data", type=Path, help="data file: .csv (comma-separated) or .npy, (N, D)")
    p.add_argument("-k", "--n-components", type=int, required=True, help="K, number of components")
    p.add_argument(
        "--covariance",
        default="full",
        choices=["full", "tied", "diag", "spherical"],
        help="covariance type",
    )
    p.add_argument("--variational", action="store_true", help="CAVI with a Dirichlet-process prior")
    p.add_argument("--max-iter", type=int, default=100, help="largest number of iterations")
    p.add_argument(
        "--tol",
        type=float,
        default=None,
        help="tolerance on the ELBO per datum (default: 1e-3 for EM, 1e-6 variational)",
    )
    p.add_argument("--n-init", type=int, default=1, help="number of initialisations")
    p.add_argument(
        "--init",
        default="kmeans",
        choices=["kmeans", "k-means++", "random", "random_from_data"],
        help="initialisation of the responsibilities",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--save", type=Path, default=None, help="directory to save the model in")
    p.add_argument("--plot", type=Path, default=None, help="PNG: data, ellipses and ELBO trace")
    p.set_defaults(func=_fit)


def read_data(path: Path) -> np.ndarray:
    """Rows (N, D) from a .csv or .npy file; a header line in a CSV is skipped."""
    if not path.is_file():
        raise ValueError(f"DATA: no such file {str(path)!r}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            x = np.load(path, allow_pickle=False)
        elif suffix in (".csv", ".txt"):
            try:
                x = np.loadtxt(path, delimiter=",", ndmin=2)
            except ValueError:
                x = np.loadtxt(path, delimiter=",", ndmin=2, skiprows=1)
        else:
            raise ValueError(f"DATA must be a .csv or .npy file; got {str(path)!r}")
    except (ValueError, OSError) as exc:
        raise ValueError(f"DATA: could not read numbers from {str(path)!r}: {exc}") from exc
    if x.ndim == 1:
        x = x.reshape(-1, 1)
    if x.ndim != 2:
        raise ValueError(f"DATA must hold a 2-D array (N, D); got shape {x.shape}")
    return np.asarray(x, dtype=np.float64)


def _fit(args) -> int:
    import warnings

    from varbayes.mixture import GaussianMixture, VariationalGaussianMixture

    x = read_data(args.data)
    common = dict(
        n_components=args.n_components,
        covariance_type=args.covariance,
        max_iter=args.max_iter,
        n_init=args.n_init,
        init_params=args.init,
        random_state=args.seed,
        device=args.device,
    )
    if args.tol is not None:
        common["tol"] = args.tol
    model = VariationalGaussianMixture(**common) if args.variational else GaussianMixture(**common)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.fit(x)
        except FloatingPointError as exc:  # a non-finite ELBO: report it like bad input
            raise ValueError(f"the fit failed: {exc}; nothing was written") from exc
    for w in caught:
        print(f"warning: {w.message}")
    n = x.shape[0]
    print(f"model: {type(model).__name__}, K={args.n_components}, covariance={args.covariance}")
    print(f"data: {args.data} ({n} rows, {x.shape[1]} features)")
    if args.variational:
        print(f"ELBO per datum: {model.lower_bound_:.6f}")
        print(f"effective components: {model.n_effective_components_}")
    else:
        ll = model.score(x)
        print(f"log-likelihood per datum: {ll:.6f} (total {ll * n:.4f})")
        print(f"BIC: {model.bic(x):.4f}")
        print(f"AIC: {model.aic(x):.4f}")
    print(f"iterations: {model.n_iter_}")
    print(f"converged: {'yes' if model.converged_ else 'no'}")
    if args.save is not None:
        model.save(args.save)
        print(f"saved: {args.save}")
    if args.plot is not None:
        import matplotlib.pyplot as plt

        from varbayes.mixture.plot import plot_elbo, plot_mixture
        from varbayes.plot import save_figure

        fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
        plot_mixture(model, x, ax=axes[0])
        plot_elbo(model, ax=axes[1])
        save_figure(fig, args.plot)
        print(f"figure: {args.plot}")
    return 0
