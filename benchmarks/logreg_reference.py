"""Reference posterior moments of a 5-D Bayesian logistic regression by importance sampling.

Writes ``tests/data/vi_logreg_reference.json``: the data (X, y), the prior scale, and the
posterior means and standard deviations of θ with their Monte Carlo standard errors,
from self-normalised importance sampling with a multivariate Student-t proposal
(ν = 5) centred at the MAP with the Laplace covariance inflated by 1.5² (heavier tails
than the posterior, so the weights have finite variance).

    .venv/bin/python benchmarks/logreg_reference.py [--samples 2000000]

The data are drawn from a fixed-seed torch.Generator and stored in the file, so the
test does not depend on the random stream of any library version.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time

import torch
from torch.distributions import MultivariateNormal, StudentT

from varbayes.vi.models import LogisticRegression

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "vi_logreg_reference.json")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=OUT)
    args = parser.parse_args(argv)

    n, d, prior_scale = 200, 5, 1.0
    g = torch.Generator().manual_seed(args.seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    theta_true = torch.tensor([1.5, -1.0, 0.5, 0.0, 2.0], dtype=torch.float64)
    y = torch.bernoulli(torch.sigmoid(X @ theta_true), generator=g)
    model = LogisticRegression(X, y, prior_scale=prior_scale, dtype=torch.float64)

    # MAP by Newton's method, then the Laplace covariance.
    theta = torch.zeros(d, dtype=torch.float64)
    for _ in range(50):
        p = torch.sigmoid(X @ theta)
        grad = X.T @ (y - p) - theta / prior_scale**2
        hess = -(X.T * (p * (1 - p))) @ X - torch.eye(d, dtype=torch.float64) / prior_scale**2
        step = torch.linalg.solve(hess, grad)
        theta = theta - step
        if step.abs().max() < 1e-12:
            break
    p = torch.sigmoid(X @ theta)
    prec = (X.T * (p * (1 - p))) @ X + torch.eye(d, dtype=torch.float64) / prior_scale**2
    cov = torch.linalg.inv(prec) * 1.5**2
    chol = torch.linalg.cholesky(cov)

    nu = 5.0
    t0 = time.perf_counter()
    sum_w = 0.0
    sum_w2 = 0.0
    s1 = torch.zeros(d, dtype=torch.float64)
    s2 = torch.zeros(d, dtype=torch.float64)
    # per-sample accumulators for standard errors of the self-normalised estimates
    parts = []
    shift = None
    done = 0
    batch = 100_000
    while done < args.samples:
        m = min(batch, args.samples - done)
        z = torch.randn(m, d, generator=g, dtype=torch.float64)
        chi2 = 2 * torch._standard_gamma(torch.full((m,), nu / 2, dtype=torch.float64), generator=g)
        u = z * torch.sqrt(nu / chi2)[:, None]
        th = theta + u @ chol.T
        # log density of the multivariate t proposal
        maha = torch.linalg.solve_triangular(chol, (th - theta).T, upper=False).T.pow(2).sum(-1)
        log_q = (
            math.lgamma((nu + d) / 2)
            - math.lgamma(nu / 2)
            - 0.5 * d * math.log(nu * math.pi)
            - chol.diagonal().log().sum()
            - 0.5 * (nu + d) * torch.log1p(maha / nu)
        )
        log_w = model(th) - log_q
        if shift is None:
            shift = float(log_w.max())
        w = torch.exp(log_w - shift)
        sum_w += float(w.sum())
        sum_w2 += float((w * w).sum())
        s1 += (w[:, None] * th).sum(0)
        s2 += (w[:, None] * th * th).sum(0)
        parts.append((w, th))
        done += m
    mean = s1 / sum_w
    var = s2 / sum_w - mean**2
    # delta-method standard errors of the self-normalised mean and of the std
    se_mean = torch.zeros(d, dtype=torch.float64)
    se_var = torch.zeros(d, dtype=torch.float64)
    for w, th in parts:
        se_mean += ((w[:, None] * (th - mean)) ** 2).sum(0)
        se_var += ((w[:, None] * ((th - mean) ** 2 - var)) ** 2).sum(0)
    se_mean = se_mean.sqrt() / sum_w
    std = var.sqrt()
    se_std = se_var.sqrt() / sum_w / (2 * std)
    ess = sum_w**2 / sum_w2
    _ = StudentT, MultivariateNormal  # the proposal is written out above
    result = {
        "description": "5-D Bayesian logistic regression, prior N(0, I); posterior moments by "
        "self-normalised importance sampling (multivariate t proposal, nu=5, at the MAP)",
        "command": (
            f"python benchmarks/logreg_reference.py --samples {args.samples} --seed {args.seed}"
        ),
        "prior_scale": prior_scale,
        "X": X.tolist(),
        "y": y.tolist(),
        "map": theta.tolist(),
        "mean": mean.tolist(),
        "std": std.tolist(),
        "se_mean": se_mean.tolist(),
        "se_std": se_std.tolist(),
        "num_samples": args.samples,
        "ess": ess,
        "seconds": time.perf_counter() - t0,
    }
    out = os.path.abspath(args.out)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(out), suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(result, f, indent=1)
    os.replace(tmp, out)
    print(json.dumps({k: v for k, v in result.items() if k not in ("X", "y")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
