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
    p.add_argument("--seed", type=int, default=0, help="random seed (an integer >= 0)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--save", type=Path, default=None, help="directory to save the model in")
    p.add_argument("--plot", type=Path, default=None, help="PNG: data, ellipses and ELBO trace")
    p.add_argument(
        "--distributed",
        action="store_true",
        help="rows sharded over the processes started by torchrun (torch.distributed): each "
        "reads its share of a .npy DATA (memory-mapped) and rank 0 prints and writes; run as "
        "'torchrun --nproc_per_node=P -m varbayes.mixture DATA -k K ...'",
    )
    p.add_argument(
        "--backend",
        default=None,
        choices=["gloo", "nccl"],
        help="with --distributed: the process-group backend (default: nccl if CUDA is "
        "available, else gloo)",
    )
    p.set_defaults(func=_fit)


def read_data(path: Path) -> np.ndarray:
    """Rows (N, D) from a .csv or .npy file; a header line in a CSV is skipped."""
    if path.is_dir():
        raise ValueError(f"DATA: {str(path)!r} is a directory, not a .csv or .npy file")
    if not path.is_file():
        raise ValueError(f"DATA: no such file {str(path)!r}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            with open(path, "rb") as fh:
                magic = fh.read(6)
            if magic != b"\x93NUMPY":
                raise ValueError(
                    "not a NumPy .npy file (it does not start with the .npy magic bytes); "
                    "a text file of numbers should be named .csv"
                )
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


def check_outputs(args) -> None:
    """Refuse, before any work, options that would fail only after fitting: a bad seed or
    device, a --save path that is a file, a --plot in a missing directory."""
    import torch

    if args.seed < 0:
        raise ValueError(f"--seed must be an integer >= 0; got {args.seed}")
    try:
        torch.empty(0, device=torch.device(args.device))
    except (RuntimeError, AssertionError, TypeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"--device {args.device!r} is not usable here ({reason})") from None
    if args.save is not None and args.save.exists() and not args.save.is_dir():
        raise ValueError(f"--save: {str(args.save)!r} is a file; give a directory")
    if args.save is not None:
        parent = next((p for p in args.save.parents if p.exists()), None)
        if parent is not None and not parent.is_dir():
            raise ValueError(
                f"--save: {str(parent)!r} is a file, so {str(args.save)!r} cannot be created"
            )
    if args.plot is not None:
        if not args.plot.parent.is_dir():
            raise ValueError(
                f"--plot: directory {str(args.plot.parent)!r} does not exist "
                f"(for {str(args.plot)!r})"
            )
        if args.plot.is_dir():
            raise ValueError(f"--plot: {str(args.plot)!r} is a directory; give a .png file name")


def _model(args, **extra):
    """The estimator the options describe."""
    from varbayes.mixture import GaussianMixture, VariationalGaussianMixture

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
    common.update(extra)
    return VariationalGaussianMixture(**common) if args.variational else GaussianMixture(**common)


def _fit(args) -> int:
    import warnings

    check_outputs(args)
    if args.distributed:
        return _fit_distributed(args)
    x = read_data(args.data)
    model = _model(args)
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


def _fit_distributed(args) -> int:
    """``--distributed``: this process fits its shard of the rows of a .npy DATA; the
    statistics are all-reduced every iteration (:mod:`varbayes.mixture.distributed`)."""
    import os

    import torch

    from varbayes._distributed import end_process_group

    if args.data.suffix.lower() != ".npy" or not args.data.is_file():
        raise ValueError(f"DATA: --distributed reads a .npy file; got {str(args.data)!r}")
    try:
        rows = np.load(args.data, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"DATA: cannot read {str(args.data)!r} as a .npy array ({exc})") from None
    if rows.ndim != 2:
        raise ValueError(f"DATA must hold a 2-D array (N, D); got shape {rows.shape}")
    backend = args.backend or ("nccl" if torch.cuda.is_available() else "gloo")
    torch.distributed.init_process_group(backend)
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if backend == "nccl" else args.device
    finished = False
    try:
        bounds = np.linspace(0, rows.shape[0], world + 1).astype(int)
        shard = np.array(rows[bounds[rank] : bounds[rank + 1]], dtype=np.float64)  # a copy
        model = _model(args, device=device, distributed=True).fit(shard)
        if rank == 0:
            print(f"{world} processes ({backend}), {rows.shape[0]} rows")
            print(f"ELBO per datum: {model.lower_bound_:.6f}")
            print(f"iterations: {model.n_iter_}, converged: {model.converged_}")
            if args.save is not None:
                model.save(args.save)
                print(f"saved: {args.save}")
        finished = True
    finally:
        end_process_group(finished)
    return 0
