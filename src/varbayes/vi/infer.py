"""``fit(model)``: variational inference on a :class:`~varbayes.vi.Model`, right by default.

The recipe (each step a published method; see BENCHMARKS.md for the measurements that
chose it):

1. **MAP** ẑ = argmax log p(x, z) by L-BFGS with a strong-Wolfe line search, on the
   unconstrained z (log-Jacobians included), from z = 0.
2. **Laplace** H = ∇² log p(x, ẑ). It gives the preconditioner C: z = ẑ + C w with
   CCᵀ = (-H)⁻¹ (full-rank, low-rank) or, for a factorised family, the conditional scales
   C = diag((-H_dd)^{-1/2}) (per site: the Cholesky factor of (-H_bb)⁻¹). In w the
   posterior is close to N(0, I) whatever the scaling of the model, so one stopping
   tolerance means the same thing on every posterior.
3. **Deterministic ADVI** (Giordano, Ingram and Broderick 2024, JMLR): the ELBO with a
   fixed set of M draws ε_m,

       ELBO_M(λ) = (1/M) Σ_m log p(x, ẑ + C w(λ, ε_m)) + H[q_λ] + log |det C|,

   is a smooth deterministic function of λ, maximised by L-BFGS from q = the Laplace
   approximation (λ = 0). The draws are whitened (sample mean 0, sample covariance I
   exactly), so ELBO_M is exact for a Gaussian posterior. **Converged** means
   max |∇_λ ELBO_M| ≤ ``gtol`` (in w units: the mean is then within about gtol
   posterior sds of the fixed point), not a small change of a noisy objective.
4. **Check**: a fresh Monte Carlo ELBO with its standard error and the PSIS k̂ of q
   (Vehtari et al. 2024) from ``num_check`` new draws. k̂ > 0.7 warns; k̂ ≤ 0.7 makes
   :meth:`Posterior.sample` importance-resample.

Families λ over w (D the length of z):

``"fullrank"``  w = μ + diag(e^ρ)(I + N)ε, N strictly lower (NumPyro's
                AutoMultivariateNormal parameterization); H = Σ ρ + const.
``"meanfield"`` w = μ + e^ρ ⊙ ε.
``"block"``     as full rank with N zero across sites (one full-rank block per latent).
``"lowrank"``   w = μ + e^ρ ⊙ ε₁ + W ε₂, W (D, r).
``"laplace"``   q = N(ẑ, (-H)⁻¹), no optimisation.
``"map"``       the point mass at ẑ (its ELBO is -∞).
"""

from __future__ import annotations

import math
import warnings

import torch
from torch.distributions import Independent, LowRankMultivariateNormal, MultivariateNormal, Normal

from varbayes._validation import check_int
from varbayes.monitor import NonFiniteObjectiveError
from varbayes.vi.model import Model, no_validation
from varbayes.vi.posterior import Posterior, draw_with_log_q, point_mass
from varbayes.vi.psis import KHAT_THRESHOLD, psis

__all__ = ["GUIDES", "PSISWarning", "fit", "fit_model", "find_map", "laplace"]

GUIDES = ("fullrank", "meanfield", "block", "lowrank", "laplace", "map")
_LOG_2PI = math.log(2 * math.pi)


class PSISWarning(UserWarning):
    """k̂ > 0.7: q is too far from the posterior for its draws (or importance weights)."""


def fit_model(
    model: Model,
    guide: str = "fullrank",
    *,
    rank: int | None = None,
    num_draws: int | None = None,
    max_iter: int = 2000,
    gtol: float = 1e-4,
    num_check: int = 2000,
    seed: int = 0,
) -> Posterior:
    """Fit q(z) to p(z | x) for a :class:`Model`; see the module docstring for the recipe.

    Parameters
    ----------
    model : Model
    guide : one of :data:`GUIDES` (default ``"fullrank"``).
    rank : r of the ``"lowrank"`` family (default ⌈√D⌉).
    num_draws : M, the fixed draws of the deterministic ELBO (default max(64, 2D), at
        most 1024).
    max_iter : L-BFGS iterations at most (each its own line search).
    gtol : convergence: max |∇_λ ELBO_M| ≤ gtol.
    num_check : fresh draws for the final ELBO and k̂.
    seed : the draws (fixed ε, check, and :meth:`Posterior.sample`) come from it.

    Raises
    ------
    NonFiniteObjectiveError
        The objective or the parameters became non-finite (with the iteration); nothing
        is returned.
    """
    if not isinstance(model, Model):
        raise TypeError(f"model must be a varbayes.vi.Model; got {type(model).__name__}")
    if guide not in GUIDES:
        raise ValueError(f"guide must be one of {GUIDES}; got {guide!r}")
    max_iter = check_int(max_iter, "max_iter", minimum=1)
    num_check = check_int(num_check, "num_check", minimum=2)
    seed = check_int(seed, "seed")
    if not (isinstance(gtol, (int, float)) and gtol > 0):
        raise ValueError(f"gtol must be a number > 0; got {gtol!r}")
    d = model.dim
    if num_draws is None:
        num_draws = min(max(64, 2 * d), 1024)
    num_draws = check_int(num_draws, "num_draws", minimum=2)
    gen = torch.Generator().manual_seed(seed)
    with no_validation():
        z_map, map_trace, map_ok = find_map(model, max_iter=max_iter)
        if guide == "map":
            value = float(model.log_density(z_map))
            return Posterior(
                model, point_mass(z_map.detach()), guide, -math.inf, 0.0, math.inf, map_trace,
                len(map_trace), map_ok, "MAP " + ("converged" if map_ok else "not converged"),
                seed, {"log_density": value},
            )  # fmt: skip
        neg_h = -laplace(model, z_map)
        family = _family(guide, model, neg_h, rank)
        if guide == "laplace":
            q, trace, steps, converged = family.to_q(z_map, None), map_trace, 0, map_ok
            message = "Laplace approximation at the MAP"
        else:
            eps = _fixed_draws(num_draws, family.noise_dim, d, gen, z_map)
            objective = _deterministic_elbo(model, family, z_map, eps)
            lam, trace, converged, message = _maximise(objective, family.init(gen), max_iter, gtol)
            q, steps = family.to_q(z_map, lam.detach()), len(trace)
        elbo, se, khat = _check(model, q, num_check, gen)
    post = Posterior(
        model, q, guide, elbo, se, khat, trace, steps, converged, message, seed,
        {"map": z_map.detach(), "num_draws": num_draws},
    )  # fmt: skip
    if khat > KHAT_THRESHOLD:
        warnings.warn(
            f"PSIS k̂ = {khat:.2f} > {KHAT_THRESHOLD}: the {guide} q is far from the posterior; "
            "its draws are not importance-resampled and may be wrong (try guide='fullrank' "
            "or a reparameterization of the model)",
            PSISWarning,
            stacklevel=3,
        )
    return post


# ----------------------------------------------------------------------------- MAP
def find_map(model: Model, *, max_iter: int = 2000, z0: torch.Tensor | None = None):
    """ẑ = argmax_z log p(x, z) by L-BFGS (strong Wolfe) from ``z0`` (default 0).

    Returns ``(ẑ (D,), trace of log p per iteration, converged)``; converged: the
    relative change of log p fell below 1e-12 or max |∇| below 1e-8·max(1, |log p|)."""
    z = (torch.zeros(model.dim, dtype=model.dtype) if z0 is None else z0.clone()).detach()
    z.requires_grad_(True)

    def objective(v):
        return model.log_density(v)

    z, trace, converged, _ = _maximise(objective, z, max_iter, None)
    return z.detach(), trace, converged


def laplace(model: Model, z: torch.Tensor) -> torch.Tensor:
    """H = ∇² log p(x, z) at z, ``(D, D)`` (symmetrised)."""
    h = torch.autograd.functional.hessian(lambda v: model.log_density(v), z.detach())
    return 0.5 * (h + h.T)


# ----------------------------------------------------------------------------- families
class _Gaussian:
    """A Gaussian family over w with z = ẑ + C w; λ a flat vector (see module docstring)."""

    def __init__(self, d, chol, diag, blocks=None, rank=0):
        self.d, self.chol, self.diag, self.rank = d, chol, diag, rank
        self.mask = None
        if blocks is not None:  # block: strictly-lower entries inside each site only
            i, j = torch.tril_indices(d, d, -1)
            site = torch.zeros(d, dtype=torch.long)
            for k, (a, b) in enumerate(blocks):
                site[a:b] = k
            self.mask = site[i] == site[j]

    # layout
    @property
    def full(self):
        return self.chol is not None

    @property
    def noise_dim(self):
        return self.d + self.rank

    def n_params(self):
        d = self.d
        if self.rank:
            return 2 * d + d * self.rank
        return 2 * d + (d * (d - 1) // 2 if self.full else 0)

    def init(self, gen):
        lam = torch.zeros(self.n_params(), dtype=self.dtype)
        if self.rank:  # W = 0 is a saddle point of the ELBO: start W small
            w = torch.randn(self.d * self.rank, generator=gen, dtype=self.dtype)
            lam[2 * self.d :] = 1e-2 * w
        return lam

    def unpack(self, lam):
        d = self.d
        mu, rho, rest = lam[:d], lam[d : 2 * d], lam[2 * d :]
        return mu, rho, rest

    def tril(self, rest):
        d = self.d
        i, j = torch.tril_indices(d, d, -1)
        vals = rest if self.mask is None else rest * self.mask.to(rest.dtype)
        return rest.new_zeros(d, d).index_put((i, j), vals)

    def w(self, lam, eps):
        """w (M, D) for the fixed draws ε (M, noise_dim); and the entropy of q_w minus its
        constant (D/2)(1 + log 2π)."""
        mu, rho, rest = self.unpack(lam)
        s = rho.exp()
        e = eps[:, : self.d]
        if self.rank:
            W = rest.view(self.d, self.rank)
            w = mu + e * s + eps[:, self.d :] @ W.T
            small = torch.eye(self.rank, dtype=lam.dtype) + (W.T / (s * s)) @ W
            return w, rho.sum() + 0.5 * torch.logdet(small)
        if self.full or self.mask is not None:
            e = e + e @ self.tril(rest).T
        return mu + e * s, rho.sum()

    def z(self, z_map, w):
        return z_map + (w @ self.chol.T if self.full else w * self.diag)

    def log_det_c(self):
        return (self.chol.diagonal() if self.full else self.diag).log().sum()

    def to_q(self, z_map, lam):
        d = self.d
        if lam is None:  # Laplace: λ = 0
            lam = torch.zeros(self.n_params(), dtype=self.dtype)
        mu, rho, rest = self.unpack(lam)
        s = rho.exp()
        if self.rank:
            W = rest.view(d, self.rank)
            return LowRankMultivariateNormal(
                z_map + self.diag * mu, self.diag[:, None] * W, (self.diag * s) ** 2,
                validate_args=False,
            )  # fmt: skip
        if self.full:
            L = self.chol @ (s[:, None] * (torch.eye(d, dtype=lam.dtype) + self.tril(rest)))
            return MultivariateNormal(z_map + self.chol @ mu, scale_tril=L, validate_args=False)
        return Independent(
            Normal(z_map + self.diag * mu, self.diag * s, validate_args=False), 1,
            validate_args=False,
        )  # fmt: skip


def _family(guide, model, neg_h, rank):
    d = model.dim
    dtype = neg_h.dtype
    if guide in ("fullrank", "laplace"):
        chol = _chol_of_inverse(neg_h)
        fam = _Gaussian(d, chol, None)
    elif guide == "block":
        blocks = [(s.start, s.stop) for s in model.latents]
        chol = torch.zeros(d, d, dtype=dtype)
        for a, b in blocks:
            chol[a:b, a:b] = _chol_of_inverse(neg_h[a:b, a:b])
        fam = _Gaussian(d, chol, None, blocks=blocks)
    else:
        diag = _conditional_scales(neg_h)
        r = 0
        if guide == "lowrank":
            r = check_int(rank, "rank", minimum=1) if rank is not None else math.ceil(d**0.5)
        fam = _Gaussian(d, None, diag, rank=r)
    fam.dtype = dtype
    return fam


def _chol_of_inverse(a):
    """Lower-triangular C with CCᵀ = a⁻¹ for a symmetric positive definite ``a``; for an
    ``a`` that is not (a MAP on a ridge, a saddle), the diagonal fallback
    C = diag(a_dd^{-1/2})."""
    chol, info = torch.linalg.cholesky_ex(a)
    if int(info) == 0:
        c, info2 = torch.linalg.cholesky_ex(torch.cholesky_inverse(chol))
        if int(info2) == 0 and bool(torch.isfinite(c).all()):
            return c
    return torch.diag(_conditional_scales(a))


def _conditional_scales(neg_h):
    """(-H_dd)^{-1/2}, with 1 where -H_dd is not positive and finite."""
    h = neg_h.diagonal()
    ok = torch.isfinite(h) & (h > 0)
    return torch.where(ok, h.clamp_min(1e-300), torch.ones_like(h)).rsqrt()


def _fixed_draws(m, noise_dim, d, gen, like):
    """M draws ε (M, noise_dim): centred and, when M > noise_dim, whitened (sample covariance
    I exactly, so E_M[ε] = 0 and E_M[εεᵀ] = I); else standardised per column."""
    eps = torch.randn((m, noise_dim), generator=gen, dtype=like.dtype)
    eps = eps - eps.mean(0)
    if m > noise_dim:
        chol = torch.linalg.cholesky(eps.T @ eps / m)
        return torch.linalg.solve_triangular(chol, eps.T, upper=False).T
    return eps / eps.pow(2).mean(0).sqrt()


def _deterministic_elbo(model, family, z_map, eps):
    const = family.log_det_c() + 0.5 * family.d * (1 + _LOG_2PI)

    def objective(lam):
        w, entropy = family.w(lam, eps)
        return model.log_density(family.z(z_map, w)).mean() + entropy + const

    return objective


def _maximise(objective, x0, max_iter, gtol):
    """Maximise ``objective`` by L-BFGS (history 50, strong Wolfe), one iteration per step.

    Stops when max |∇| ≤ gtol (``gtol=None``: ≤ 1e-8·max(1, |f|)) or the relative change
    of f falls below 1e-13 (converged), or after ``max_iter`` iterations. A non-finite
    f or x raises :class:`NonFiniteObjectiveError` naming the iteration.
    Returns ``(x, trace, converged, message)``."""
    x = x0.detach().clone().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [x], lr=1.0, max_iter=1, history_size=50, line_search_fn="strong_wolfe",
        tolerance_grad=0.0, tolerance_change=0.0,
    )  # fmt: skip

    def closure():
        opt.zero_grad()
        loss = -objective(x)
        if not bool(torch.isfinite(loss)):
            return loss.detach().new_tensor(math.inf)
        loss.backward()
        return loss

    def value_and_grad():
        x.grad = None
        v = objective(x)
        if bool(torch.isfinite(v)):
            v.backward()
        return float(v.detach()), x.grad

    value, grad = value_and_grad()
    if not math.isfinite(value):
        raise NonFiniteObjectiveError("the objective is not finite at the start point", 0)
    trace, converged, message = [], False, ""
    for it in range(1, max_iter + 1):
        opt.step(closure)
        if not bool(torch.isfinite(x).all()):
            raise NonFiniteObjectiveError(f"the parameters became non-finite at iteration {it}", it)
        new, grad = value_and_grad()
        if not math.isfinite(new) or grad is None or not bool(torch.isfinite(grad).all()):
            raise NonFiniteObjectiveError(
                f"the objective became non-finite at iteration {it} ({new})", it
            )
        trace.append(new)
        tol = gtol if gtol is not None else 1e-8 * max(1.0, abs(new))
        gmax = float(grad.abs().max())
        if gmax <= tol:
            converged, message = True, f"converged at iteration {it}: max|∇| = {gmax:.2g}"
            break
        if abs(new - value) <= 1e-13 * max(1.0, abs(new)):
            converged = gtol is None or gmax <= 100 * gtol
            message = (
                f"{'converged' if converged else 'stalled'} at iteration {it}: no further "
                f"progress, max|∇| = {gmax:.2g}"
            )
            break
        value = new
    else:
        message = f"not converged after {max_iter} iterations: max|∇| = {gmax:.2g}"
    return x.detach(), trace, converged, message


def _check(model, q, n, gen):
    """Fresh-draw ELBO, its standard error, and PSIS k̂."""
    with torch.no_grad():
        z, log_q = draw_with_log_q(q, n, gen)
        log_p = torch.cat([model.log_density(z[i : i + 1024]) for i in range(0, n, 1024)])
    log_w = log_p - log_q
    finite = torch.isfinite(log_w)
    if not bool(finite.all()):
        return -math.inf, math.inf, math.inf
    elbo = float(log_w.mean())
    se = float(log_w.std() / math.sqrt(n))
    _, khat = psis(log_w.cpu().numpy())
    return elbo, se, khat


def fit(model, guide=None, **options):
    """Variational inference. Two forms:

    * ``fit(model, guide="fullrank", **options) -> Posterior`` for a :class:`Model`
      (the recipe above; ``guide`` one of :data:`GUIDES`; options as :func:`fit_model`);
    * ``fit(log_joint, guide_module, **options) -> SVIResult``: stochastic VI of a guide
      module on a log joint (:func:`varbayes.vi.svi.fit`).
    """
    if isinstance(model, Model):
        return fit_model(model, "fullrank" if guide is None else guide, **options)
    from varbayes.vi.svi import fit as svi_fit

    return svi_fit(model, guide, **options)
