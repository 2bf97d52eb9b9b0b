"""The post's latent-variable example: heights of men, women and children as a 1-D mixture.

We only see the heights x_i; the group z_i ∈ {man, woman, child} of each person is the
latent variable. EM alternates

* E-step: r_ik = q(z_i = k) = π_k N(x_i | μ_k, σ_k²) / Σ_j π_j N(x_i | μ_j, σ_j²),
* M-step: π_k = N_k / N, μ_k = Σ_i r_ik x_i / N_k, σ_k² = Σ_i r_ik (x_i - μ_k)² / N_k,

and the ELBO after each E-step, the log-likelihood Σ_i log p(x_i | θ), never decreases.
The figure shows the histogram of the heights with the fitted π_k N(x | μ_k, σ_k²) and
the mixture density p(x | θ), next to the ELBO trace.

Run:  python examples/heights_mixture.py --out heights_mixture.png
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from varbayes.mixture import GaussianMixture  # noqa: E402
from varbayes.mixture.plot import plot_density_1d, plot_elbo  # noqa: E402
from varbayes.plot import save_figure  # noqa: E402

# (name, count, mean cm, std cm): a synthetic population in the spirit of the post
GROUPS = [("children", 600, 120.0, 10.0), ("women", 1000, 161.0, 6.0), ("men", 1000, 178.0, 7.0)]


def heights(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Heights (N,) in cm and the hidden group labels (N,)."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(m, s, size=n) for _, n, m, s in GROUPS])
    z = np.concatenate([np.full(n, j) for j, (_, n, _, _) in enumerate(GROUPS)])
    return x, z


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", default="heights_mixture.png", help="PNG to write")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and of k-means")
    args = p.parse_args(argv)

    x, z = heights(args.seed)
    gm = GaussianMixture(3, covariance_type="full", tol=1e-7, max_iter=1000, random_state=args.seed)
    gm.fit(x.reshape(-1, 1))
    order = np.argsort(gm.means_[:, 0])
    print(
        f"EM: {gm.n_iter_} iterations, converged={gm.converged_}, "
        f"log-likelihood per person {gm.lower_bound_:.4f}"
    )
    for (name, n, m, s), k in zip(GROUPS, order, strict=True):
        print(
            f"  {name:8s} true π={n / len(x):.3f} μ={m:6.1f} σ={s:4.1f} | fitted "
            f"π={float(gm.weights_[k]):.3f} μ={float(gm.means_[k, 0]):6.1f} "
            f"σ={float(gm.covariances_[k, 0, 0]) ** 0.5:4.1f}"
        )
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [2, 1]})
    plot_density_1d(gm, x, ax=axes[0], labels=[g[0] for g in GROUPS])
    axes[0].set_xlabel("height (cm)")
    axes[0].set_title("Heights as a mixture of three Gaussians (EM)")
    plot_elbo(gm, ax=axes[1])
    save_figure(fig, args.out)
    print(f"figure: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
