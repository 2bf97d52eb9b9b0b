"""Evaluating a trained VAE on held-out images.

For test images x_1..x_T (T, D):

* test ELBO: mean_t [E_q[log p(x_t|z)] − KL(q(z|x_t) || p(z))] (one draw; the analytic KL
  for the standard prior, the Monte Carlo KL for the VampPrior and two stochastic layers);
* test NLL: −mean_t IWAE_k(x_t), the importance-weighted estimate of −log p(x) with
  k = 5000 samples by default (Burda et al. 2015), chunked so memory stays bounded;
* KL per latent dimension: mean_t KL(q(z_j|x_t) || N(0, 1)), j = 1..L (standard prior
  only: other priors do not factor over the dimensions, and it is None);
* active units: the number of j with Cov_x(E_q[z_j|x]) = Var_t(μφ,j(x_t)) > 0.01 (of z₁,
  the layer next to x, in a two-layer model)
  (Burda et al. 2015, section 5.2);
* reconstruction: −mean_t E_q[log p(x_t|z)] (nats) and the mean squared error per pixel
  between x_t and E[x | z = μφ(x_t)].
"""

from __future__ import annotations

import math

import torch
from torch.distributions import Normal, kl_divergence

from varbayes._validation import check_int
from varbayes.vae.model import VAE

__all__ = ["ACTIVE_UNIT_THRESHOLD", "evaluate", "format_table"]

ACTIVE_UNIT_THRESHOLD = 0.01


@torch.no_grad()
def evaluate(
    model: VAE,
    x: torch.Tensor,
    *,
    k: int = 5000,
    batch_size: int = 100,
    max_rows: int = 16384,
    seed: int = 0,
    progress: bool = False,
) -> dict:
    """Evaluate ``model`` on images ``x`` ((T, H, W) or (T, D), values in [0, 1]).

    ``k`` is the number of importance samples of the NLL estimate (0 skips it);
    ``batch_size`` images are evaluated at once; ``seed`` fixes the noise. Returns a dict:
    ``n``, ``elbo``, ``recon``, ``kl``, ``nll`` (None when k = 0) and ``nll_se`` (its
    standard error over the images, sd / √n: the spread of the test set, not of the
    importance sampling), ``k``,
    ``kl_per_dim`` (list of L floats, or None for a prior without a closed-form KL),
    ``active_units``, ``au_variance`` (list), ``mse``.
    """
    k = check_int(k, "k", minimum=0)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    was_training = model.training
    model.eval()
    x = model.flatten(x, "x")
    g = torch.Generator(device=x.device).manual_seed(seed)
    L = model.latent_dim
    kl = "analytic" if model.analytic_kl else "mc"
    # Σ elbo, Σ recon, Σ log p(x), Σ squared error, Σ log p(x)²
    tot = torch.zeros(5, dtype=torch.float64, device=x.device)
    kl_dims = torch.zeros(L, dtype=torch.float64, device=x.device)
    mus = []
    chunks = x.split(batch_size)
    it = chunks
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(chunks, desc=f"eval (k={k})", leave=False)
    for xb in it:
        t = model._terms(xb, num_samples=1, kl=kl, generator=g)
        loc, scale = model._encode(xb)
        q = Normal(loc, scale)
        kl_dims += (
            kl_divergence(q, Normal(torch.zeros_like(loc), torch.ones_like(scale))).sum(0).double()
        )
        mus.append(loc.double())
        recon = model.likelihood.mean(model.decoder(loc))
        ll = xb.new_zeros(1, dtype=torch.float64)
        if k:
            ll = model.log_likelihood(xb, k, max_rows=max_rows, generator=g).double()
        tot += torch.stack(
            [
                t.elbo.sum().double(),
                t.recon.sum().double(),
                ll.sum(),
                ((recon - xb) ** 2).sum().double(),
                (ll * ll).sum(),
            ]
        )
    model.train(was_training)
    n = x.shape[0]
    mu = torch.cat(mus)
    var = mu.var(0, correction=1) if n > 1 else torch.zeros(L, dtype=torch.float64)
    tot = (tot / n).tolist()
    # sd/√n with the unbiased variance: (mean of squares - square of mean)·n/(n-1), over n
    se = math.sqrt(max(tot[4] - tot[2] ** 2, 0.0) / max(n - 1, 1)) if k else None
    return {
        "n": n,
        "elbo": tot[0],
        "recon": -tot[1],
        "kl": tot[1] - tot[0],
        "nll": -tot[2] if k else None,
        "nll_se": se,
        "k": k,
        "kl_per_dim": (kl_dims / n).tolist() if model.analytic_kl else None,
        "active_units": int((var > ACTIVE_UNIT_THRESHOLD).sum()),
        "au_variance": var.tolist(),
        "mse": tot[3] / model.data_dim,
    }


def format_table(metrics: dict) -> str:
    """A plain-text table of :func:`evaluate`'s results."""
    rows = [
        ("test images", f"{metrics['n']}"),
        ("ELBO (nats)", f"{metrics['elbo']:.3f}"),
        (
            f"NLL, IWAE k={metrics['k']} (nats)",
            "-" if metrics["nll"] is None else f"{metrics['nll']:.3f} ± {metrics['nll_se']:.3f}",
        ),
        ("reconstruction −E_q log p(x|z)", f"{metrics['recon']:.3f}"),
        ("KL(q(z|x) || p(z))", f"{metrics['kl']:.3f}"),
        ("mean squared error / pixel", f"{metrics['mse']:.5f}"),
        (
            f"active units (Cov > {ACTIVE_UNIT_THRESHOLD:g})",
            f"{metrics['active_units']} / {len(metrics['au_variance'])}",
        ),
    ]
    w = max(len(a) for a, _ in rows)
    lines = [f"{a:<{w}}  {b}" for a, b in rows]
    kls = metrics["kl_per_dim"]
    if kls is None:
        return "\n".join(lines)
    shown = ", ".join(f"{v:.2f}" for v in kls[:50]) + (" ..." if len(kls) > 50 else "")
    lines.append(f"{'KL per latent dim':<{w}}  {shown}")
    if not all(math.isfinite(v) for v in kls):
        lines.append("warning: non-finite KL values")
    return "\n".join(lines)
