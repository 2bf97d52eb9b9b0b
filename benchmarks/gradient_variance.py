"""Variance of ELBO-gradient estimators: score function (with/without control variate) vs pathwise.

The post says Monte Carlo (score-function, REINFORCE) gradients of the ELBO have high
variance and that the reparameterization (pathwise) trick fixes it. Measured here on one
model and one q: Bayesian logistic regression (N = 1,000, D = 10, prior N(0, I)) and a
mean-field Normal q(θ | μ, σ) at two points — at the prior-like start (μ = 0, σ = 1) and
near the optimum (μ, σ after 2,000 steps of SVI). For each estimator, R = 2,000
independent gradient estimates with S particles each give the total variance
tr Cov[∇̂λ ELBO] (summed over the D coordinates of μ and of ρ = log σ) and the ratio to
the pathwise estimator's. All estimators are unbiased (tests/test_vi_elbo.py checks
it); only their spread differs.

    .venv/bin/python benchmarks/gradient_variance.py [--reps 2000]
"""

from __future__ import annotations

import argparse
import time

import torch

from varbayes.vi.elbo import elbo
from varbayes.vi.guides import MeanFieldNormal
from varbayes.vi.models import LogisticRegression
from varbayes.vi.svi import fit

ESTIMATORS = [
    ("pathwise (reparameterization)", dict(estimator="pathwise")),
    ("score function, leave-one-out baseline", dict(estimator="score", control_variate=True)),
    ("score function, no control variate", dict(estimator="score", control_variate=False)),
]


def gradient_samples(model, guide, reps, particles, gen, **kw):
    out = torch.empty(reps, guide.flat.numel(), dtype=guide.flat.dtype)
    for r in range(reps):
        value = elbo(model, guide, particles, generator=gen, **kw)
        (g,) = torch.autograd.grad(value, guide.flat)
        out[r] = g
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    n, d = 1000, 10
    g = torch.Generator().manual_seed(0)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.bernoulli(
        torch.sigmoid(X @ torch.linspace(-1, 1, d, dtype=torch.float64)), generator=g
    )
    model = LogisticRegression(X, y, prior_scale=1.0)

    start = MeanFieldNormal(d, init_scale=1.0, dtype=torch.float64)
    fitted = MeanFieldNormal(d, init_scale=1.0, dtype=torch.float64)
    fit(model, fitted, num_steps=2000, num_particles=4, lr=0.02, rtol=0.0, seed=0)

    print(f"# gradient_variance: logistic regression N={n}, D={d}, {args.reps} estimates each")
    print("\n| q | S | estimator | tr Var ∇μ | tr Var ∇ρ | ratio to pathwise (μ, ρ) | s |")
    print("|---|---|---|---|---|---|---|")
    for label, guide in (("start (μ=0, σ=1)", start), ("near optimum", fitted)):
        for particles in (2, 10):
            base = None
            for name, kw in ESTIMATORS:
                t = time.perf_counter()
                gs = gradient_samples(
                    model, guide, args.reps, particles, torch.Generator().manual_seed(1), **kw
                )
                dt = time.perf_counter() - t
                var = gs.var(0)
                v_mu, v_rho = float(var[:d].sum()), float(var[d:].sum())
                if base is None:
                    base = (v_mu, v_rho)
                print(
                    f"| {label} | {particles} | {name} | {v_mu:.4g} | {v_rho:.4g} | "
                    f"{v_mu / base[0]:.3g}x, {v_rho / base[1]:.3g}x | {dt:.1f} |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
