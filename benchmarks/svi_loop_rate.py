"""Steps/s of ``svi.fit(compile=True)`` (the compiled loop) on one model, in this process.

AutoNormal's recipe (mean-field Normal, scales 0.1, one particle, Adam 0.01, float32):
a 10-step fit (which compiles), then ``--steps`` steps resumed from its state, timed.
The model is a posteriordb translation (``--posterior``) or a synthetic linear
regression y ~ N(X beta, sigma) with X of ``--synthetic N,K`` (standard normal).
``--decompose`` forces inductor's ``decompose_mm_pass`` on or off (default: the
library's choice, ``varbayes.vi.compiled.SMALL_DATA``). One process measures one
setting: the allocator (``LD_PRELOAD``) and thread count (``OMP_NUM_THREADS``) are the
process's own, and rates differ between processes, so run each setting several times.

Run: python benchmarks/svi_loop_rate.py --posterior mesquite [--decompose off]
     python benchmarks/svi_loop_rate.py --synthetic 400,8 [--steps 30000]
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import torch
from torch import distributions as dist
from torch.distributions import constraints

REPO = pathlib.Path(__file__).resolve().parents[1]


def synthetic(n: int, k: int):
    from varbayes import vi

    def regression(m, data):
        beta = m.latent("beta", support=constraints.real, shape=(k,))
        sigma = m.latent("sigma", support=constraints.positive)
        m.observe("y", dist.Normal(beta @ data["XT"], sigma[..., None]), data["y"])

    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, k, generator=g)
    data = {"XT": x.T.contiguous(), "y": x @ torch.ones(k) + torch.randn(n, generator=g)}
    return vi.Model(regression, data, dtype=torch.float32)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--posterior", help="a posteriordb translation, e.g. mesquite")
    which.add_argument("--synthetic", help="N,K of a synthetic regression, e.g. 400,8")
    p.add_argument("--steps", type=int, default=100_000)
    p.add_argument("--decompose", choices=("auto", "on", "off"), default="auto")
    args = p.parse_args(argv)

    import varbayes.vi.compiled as compiled
    from varbayes.vi import MeanFieldNormal
    from varbayes.vi.svi import fit

    if args.decompose != "auto":
        compiled.SMALL_DATA = float("inf") if args.decompose == "on" else -1
    if args.posterior:
        sys.path.insert(0, str(REPO / "examples" / "posteriordb"))
        import posteriordb_models

        model, label = posteriordb_models.model(args.posterior, dtype=torch.float32), args.posterior
    else:
        n, k = (int(v) for v in args.synthetic.split(","))
        model, label = synthetic(n, k), f"synthetic {n} x {k}"
    guide = MeanFieldNormal(model.dim, init_scale=0.1, dtype=torch.float32)
    kw = dict(lr=0.01, seed=0, tol=0.0, rtol=0.0, compile=True, fast=False)
    t0 = time.perf_counter()
    first = fit(model, guide, num_steps=10, **kw)
    t1 = time.perf_counter()
    fit(model, guide, num_steps=args.steps, state=first.state, **kw)
    rate = args.steps / (time.perf_counter() - t1)
    print(
        f"{label}: {rate:,.0f} steps/s (decompose {args.decompose}; compile {t1 - t0:.1f} s; "
        f"torch threads {torch.get_num_threads()})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
