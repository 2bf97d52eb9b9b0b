"""Seconds per EM iteration of ``GaussianMixture`` from whatever ``varbayes`` is importable.

For A/B comparisons of source trees in one run (``PYTHONPATH=<tree>/src``, alternating
trees over rounds): the data and initial parameters of ``benchmarks/gmm.py``, ``tol=0``,
``python benchmarks/gmm_ab.py [cov [dtype]]`` (default full float64);
s/iter = (T(11 iterations) - T(1 iteration)) / 10 with each T the minimum of three fits,
and the final mean log-likelihood (to check that the trees agree).

    for r in 1 2 3; do for t in /path/a /path/b; do
        PYTHONPATH=$t/src python benchmarks/gmm_ab.py
    done; done
"""

import pathlib
import sys
import time
import warnings

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from gmm import _data  # noqa: E402

from varbayes.mixture import GaussianMixture  # noqa: E402


def main(cov="full", dtype="float64", n=100_000, d=16, k=32):
    warnings.simplefilter("ignore")
    x, init, _ = _data(n, d, k, cov)
    xt = torch.as_tensor(x, dtype=getattr(torch, dtype))

    def run(m):
        gm = GaussianMixture(k, covariance_type=cov, tol=0.0, max_iter=m, **init)
        t = time.perf_counter()
        gm.fit(xt)
        return time.perf_counter() - t, gm.score(xt)

    run(1)
    one = min(run(1)[0] for _ in range(3))
    eleven = min(run(11)[0] for _ in range(3))
    print(f"{(eleven - one) / 10:.4f} s/iter, score {run(3)[1]!r}")


if __name__ == "__main__":
    main(*sys.argv[1:3])  # [cov [dtype]]
