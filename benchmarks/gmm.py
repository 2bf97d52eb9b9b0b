"""Gaussian mixtures: varbayes against scikit-learn, side by side in one run.

For each configuration (N, D, K, covariance type) both libraries fit the same data
from the same initial parameters (weights, means, precisions; scikit-learn with
``init_params="random_from_data"`` so it runs no k-means) with ``tol=0``, in a fresh
subprocess each. Reported per library:

* seconds per EM iteration = (T(1 + m iterations) - T(1 iteration)) / m, which removes
  the set-up cost (validation, initial statistics) from both sides alike; each T is
  the minimum over ``--repeats`` runs, which resists load from other processes;
* peak resident memory of the subprocess above the memory it held once the data
  existed (``resource.getrusage(RUSAGE_SELF).ru_maxrss``);
* the final mean log-likelihood (both should agree).

The variational mixture is compared with ``BayesianGaussianMixture`` the same way,
started from the same responsibilities.

    python benchmarks/gmm.py --quick            # a few configurations (~2 minutes)
    python benchmarks/gmm.py                    # N in {1e4, 1e5}, D in {2, 16, 64}, K in {8, 32}
    python benchmarks/gmm.py --full             # adds N = 1e6 (slow for scikit-learn)
    python benchmarks/gmm.py --device cuda      # varbayes on a GPU (scikit-learn on CPU)
    python benchmarks/gmm.py --dtype float32    # varbayes in float32 (its error: score diff)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def _rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _data(n, d, k, cov, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(k, d))
    labels = rng.integers(0, k, size=n)
    x = centres[labels] + rng.normal(size=(n, d))
    means = x[rng.choice(n, k, replace=False)]
    prec = {
        "full": np.stack([np.eye(d)] * k),
        "tied": np.eye(d),
        "diag": np.ones((k, d)),
        "spherical": np.ones(k),
    }[cov]
    init = {"weights_init": np.full(k, 1.0 / k), "means_init": means, "precisions_init": prec}
    resp = rng.uniform(size=(n, k))
    resp /= resp.sum(1, keepdims=True)
    return x, init, resp


def worker(cfg: dict) -> dict:
    """Run one library on one configuration in this process; return the measurements."""
    import warnings

    warnings.simplefilter("ignore")
    n, d, k, cov = int(cfg["n"]), cfg["d"], cfg["k"], cfg["cov"]
    lib, model, iters = cfg["lib"], cfg["model"], cfg["iters"]
    x, init, resp = _data(n, d, k, cov)
    if model == "em":
        init_or_resp = init
    else:
        init_or_resp = {}
        del init
    if lib == "varbayes":
        import torch

        from varbayes.mixture import GaussianMixture, VariationalGaussianMixture

        dev = cfg.get("device", "cpu")
        dtype = cfg.get("dtype", "float64")  # float32: X and the computation in float32
        xin = torch.as_tensor(x, device=dev, dtype=getattr(torch, dtype))

        def make(m):
            if model == "em":
                return GaussianMixture(
                    k,
                    covariance_type=cov,
                    tol=0.0,
                    max_iter=m,
                    device=dev,
                    dtype=dtype,
                    **init_or_resp,
                )
            return VariationalGaussianMixture(
                k,
                covariance_type=cov,
                tol=0.0,
                max_iter=m,
                device=dev,
                dtype=dtype,
                resp_init=resp,
            )

        def sync():
            if dev.startswith("cuda"):
                torch.cuda.synchronize()
    else:
        from sklearn.mixture import BayesianGaussianMixture, GaussianMixture

        class FromResp(BayesianGaussianMixture):
            def _initialize_parameters(self, X, random_state, xp=None):
                self._initialize(X, resp)

        xin = x

        def make(m):
            if model == "em":
                return GaussianMixture(
                    k,
                    covariance_type=cov,
                    tol=0.0,
                    max_iter=m,
                    init_params="random_from_data",
                    **init_or_resp,
                )
            return FromResp(n_components=k, covariance_type=cov, tol=0.0, max_iter=m)

        def sync():
            pass

    base = _rss_mib()
    make(1).fit(xin)  # burn-in: imports, allocator, thread pool
    sync()
    short, long = [], []
    for _ in range(cfg.get("repeats", 2)):  # the minimum over repeats resists other load
        t0 = time.perf_counter()
        make(1).fit(xin)
        sync()
        t1 = time.perf_counter()
        fitted = make(1 + iters).fit(xin)
        sync()
        t2 = time.perf_counter()
        short.append(t1 - t0)
        long.append(t2 - t1)
    per_iter = (min(long) - min(short)) / iters
    score = float(fitted.score(xin))  # VI: mean of log Σ_k exp(ρ_ik) in both libraries
    return {
        **cfg,
        "sec_per_iter": per_iter,
        "peak_mib_above_data": _peak_mib() - base,
        "score": score,
    }


def run_one(cfg: dict, python: str, timeout: float, threads: int | None) -> dict:
    cmd = [python, os.path.abspath(__file__), "--worker", json.dumps(cfg)]
    env = dict(os.environ)
    if threads:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[var] = str(threads)
    try:
        out = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, check=True, env=env
        )
    except subprocess.TimeoutExpired:
        return {**cfg, "error": f"timeout after {timeout:.0f} s"}
    except subprocess.CalledProcessError as exc:
        return {**cfg, "error": exc.stderr.strip().splitlines()[-1][:200]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def grid(kind: str) -> list[tuple]:
    if kind == "quick":
        return [
            (1e4, 2, 8, "full"),
            (1e5, 16, 32, "full"),
            (1e5, 16, 32, "diag"),
            (1e5, 16, 32, "spherical"),
            (1e5, 16, 32, "tied"),
        ]
    out = []
    ns = [1e4, 1e5] + ([1e6] if kind == "full" else [])
    for n in ns:
        for d in (2, 16, 64):
            for k in (8, 32):
                for cov in ("full", "diag"):
                    out.append((n, d, k, cov))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="five configurations at N <= 1e5")
    g.add_argument("--full", action="store_true", help="the whole grid including N = 1e6")
    p.add_argument(
        "--iters", type=int, default=3, help="least timed iterations per fit (more when small)"
    )
    p.add_argument("--repeats", type=int, default=2, help="timed repeats (minimum kept)")
    p.add_argument("--device", default="cpu", help="device of varbayes (cpu or cuda)")
    p.add_argument(
        "--dtype",
        default="float64",
        choices=["float64", "float32"],
        help="precision of varbayes (scikit-learn stays float64: 'score diff' is then the "
        "float32 error of the mean log-likelihood)",
    )
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per subprocess")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="threads for BOTH libraries (OMP/MKL/OpenBLAS); default: their own defaults",
    )
    p.add_argument("--no-vi", action="store_true", help="skip the variational comparison")
    p.add_argument(
        "--vi-grid",
        action="store_true",
        help="compare the variational mixture on the whole (filtered) grid, not 2-3 sizes",
    )
    p.add_argument("--no-em", action="store_true", help="skip the EM comparison")
    p.add_argument("--n", type=float, nargs="+", default=None, help="keep only these N")
    p.add_argument("--d", type=int, nargs="+", default=None, help="keep only these D")
    p.add_argument("--k", type=int, nargs="+", default=None, help="keep only these K")
    p.add_argument("--cov", nargs="+", default=None, help="keep only these covariance types")
    p.add_argument("--json", default=None, help="also write all results to this JSON file")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0

    import torch

    kind = "quick" if args.quick else ("full" if args.full else "default")
    threads = args.threads or torch.get_num_threads()
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(
        f"# load average {load}; {threads} thread(s) per library; "
        f"varbayes on {args.device} in {args.dtype}; "
        f">= {args.iters} timed iterations; torch {torch.__version__}"
    )
    rows = []
    keep = (args.n, args.d, args.k, args.cov)
    selected = [
        c
        for c in grid(kind)
        if all(sel is None or value in sel for value, sel in zip(c, keep, strict=True))
    ]
    configs = [] if args.no_em else [("em", c) for c in selected]
    if not args.no_vi:
        vi = [(1e4, 2, 8, "full"), (1e5, 16, 32, "full")]
        if kind != "quick":
            vi += [(1e5, 16, 32, "diag")]
        if args.vi_grid:
            vi = [c for c in selected if c[3] != "tied"]  # scikit-learn's tied VI differs
        configs += [("vi", c) for c in vi]
    header = (
        "| model | N | D | K | cov | iters | varbayes s/iter | sklearn s/iter | speed-up | "
        "varbayes peak MiB | sklearn peak MiB | score diff |"
    )
    print(header)
    print("|" + "---|" * 12)
    for model, (n, d, k, cov) in configs:
        res = {}
        for lib in ("varbayes", "sklearn"):
            cfg = {"n": n, "d": d, "k": k, "cov": cov, "lib": lib, "model": model}
            # the same count for both libraries: at least --iters, more for small problems
            work = n * k * (d + d * d / 2.0)
            cfg["iters"] = int(min(100, max(args.iters, 4e8 // work)))
            cfg["repeats"] = args.repeats
            if lib == "varbayes":
                cfg["device"] = args.device
                cfg["dtype"] = args.dtype
            res[lib] = run_one(cfg, sys.executable, args.timeout, args.threads)
        rows.append(res)
        v, s = res["varbayes"], res["sklearn"]
        if "error" in v or "error" in s:
            print(
                f"| {model} | {n:.0e} | {d} | {k} | {cov} | {v.get('error', '')} | "
                f"{s.get('error', '')} | | | | |"
            )
            continue
        print(
            f"| {'EM' if model == 'em' else 'VI'} | {n:.0e} | {d} | {k} | {cov} | {v['iters']} | "
            f"{v['sec_per_iter']:.4f} | {s['sec_per_iter']:.4f} | "
            f"{s['sec_per_iter'] / v['sec_per_iter']:.1f}x | {v['peak_mib_above_data']:.0f} | "
            f"{s['peak_mib_above_data']:.0f} | {abs(v['score'] - s['score']):.1e} |",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
