"""The ``"nested"`` family: an embedded Laplace approximation for a hierarchical model.

Split z = (g, l): l the unconstrained values of the model's **largest latent site** (the
last of them on a tie: the local values, a Gaussian process's f̃, a hierarchy's group
effects), g all the others (the global parameters: locations, scales, length scales).
In many hierarchical models p(l | g, x) is close to Gaussian for each g while the joint
is not: the posterior is a curved ridge in (g, l), and the KL(q || p)-optimal Gaussian is
short along it (on gp_pois_regr, sds of ρ and α about 0.4 of the reference's, k̂ 0.86).
The family is

    q(g, l) = t_ν(g; μ_g, Σ_g) · N(l; l̂(g), P(g)⁻¹),

with l̂(g) the conditional mode argmax_l log p(x, g, l), found by Newton's method, and
P(g) = -∂² log p(x, g, l)/∂l² there: the Laplace approximation of p(l | g, x) at every
g, as in the integrated nested Laplace approximation (Rue, Martino and Chopin 2009,
JRSS B) and the embedded Laplace approximation of Margossian et al. (2020, NeurIPS).
q(g) is a multivariate Student-t (ν = 10: heavier tails than the target's, for
importance sampling) moment-matched by importance sampling to the Laplace marginal

    p̃(g | x) ∝ p(x, g, l̂(g)) (2π)^{d_l/2} |P(g)|^{-1/2},

in ``rounds`` rounds of ``draws`` draws, starting from the full-rank fit's g-marginal
with its covariance quadrupled. q is a proper density, with log q at every draw, so
PSIS k̂ measures how far it is from the posterior and importance resampling
(:meth:`varbayes.vi.Posterior.sample`) corrects what the Laplace step leaves.

Newton's method for l̂(g), per draw: it starts from a quadratic regression of l̂ on g
fitted to the adaptation draws (in the first round, the full-rank fit's conditional
mean E[l | g]), takes the Hessian by forward differences of the gradient (step
√eps·(1 + |l_j|), d_l extra rows of one batched gradient call), damps it where it is not
negative definite, searches backtracking (Armijo) along the step, and stops when the
Newton decrement gᵀP⁻¹g falls to 1e-8 or after 20 iterations. Each draw's l̂(g) and P(g)
are a deterministic function of g alone, so q is one fixed density.

The cost is a few batched gradient calls of (d_l + 1) rows per draw and iteration, and
it needs q(g) to be an adequate importance sampler in d_g dimensions: the family applies
to models whose other sites hold at most :data:`MAX_GLOBAL` coordinates. On
gp_pois_regr (d_g = 2, d_l = 11) it takes about 2 s on a 2-core VM, k̂ 0.1-0.5, where the
flow takes 40 s.
"""

from __future__ import annotations

import math

import torch

from varbayes.vi.drawn import DrawnDistribution, randn
from varbayes.vi.model import no_validation

__all__ = ["MAX_GLOBAL", "NestedLaplace", "fit_nested", "nested_split"]

#: The most global coordinates (d_g) the family importance-samples.
MAX_GLOBAL = 8
_DF = 10  # ν of q(g); an integer, so that χ²_ν is a sum of ν squared normals
_MAX_ROWS = 16384  # rows of z per batched gradient call ((d_l + 1) per draw in Newton)
_LOG_2PI = math.log(2 * math.pi)


def nested_split(model) -> tuple[torch.Tensor | None, int, str]:
    """``(order, d_g, "")`` when the family applies to ``model``: ``z[:, order]`` puts the
    d_g global coordinates first and the local site's after them; else ``(None, 0, why)``."""
    latents = model.latents
    if len(latents) < 2:
        return None, 0, "the model has one latent site (no global/local split)"
    local = max(reversed(latents), key=lambda site: site.stop - site.start)
    d_g = model.dim - (local.stop - local.start)
    if not 1 <= d_g <= MAX_GLOBAL:
        why = f"the sites other than the largest ({local.name!r}) hold {d_g} coordinates"
        return None, 0, f"{why} (at least 1, at most {MAX_GLOBAL})"
    idx = torch.arange(model.dim)
    is_local = (idx >= local.start) & (idx < local.stop)
    return torch.cat([idx[~is_local], idx[is_local]]), d_g, ""


class _Ordered:
    """log p(x, z) of ``model`` for z in the family's order (global coordinates first)."""

    def __init__(self, model, order):
        self.model, self.inverse = model, torch.argsort(order)

    def log_density(self, z):
        return self.model.log_density(z[:, self.inverse])


class NestedLaplace(DrawnDistribution):
    """q(z) = t_ν(g; ``loc_g``, ``scale_tril_g``) · N(l; l̂(g), P(g)⁻¹) (module docstring).

    ``order``: z[:, order] = (g, l) (:func:`nested_split`); ``start`` (F, d_l): the
    quadratic regression of l̂ on g that starts Newton's method (features 1, g, g_i g_j for
    i ≤ j); ``model`` supplies log p(x, z)."""

    has_rsample = False

    def __init__(self, model, order, d_g: int, loc_g, scale_tril_g, start):
        self.model, self.order, self.d_g = model, order, d_g
        self.target = _Ordered(model, order)
        self._chunk = max(1, _MAX_ROWS // (model.dim - d_g + 1))  # draws per Newton solve
        self.loc_g, self.scale_tril_g, self.start = loc_g, scale_tril_g, start
        super().__init__(event_shape=torch.Size([model.dim]), validate_args=False)

    def draw(self, n: int, generator: torch.Generator | None = None, log_q: bool = True):
        """n draws z ``(n, D)`` and their log q(z) ``(n,)`` (draws where log p(x, z) is
        not finite at l̂ keep log q but have log p = -∞: zero importance weight)."""
        g, log_qg = self._draw_g(n, generator)
        zs, lqs = [], []
        for i in range(0, n, self._chunk):
            mode, chol = self.conditional(g[i : i + self._chunk])
            e = randn((mode.shape[0], self.model.dim - self.d_g), generator, g)
            l_part = mode[:, self.d_g :] + _solve_upper(chol, e)
            zs.append(torch.cat([mode[:, : self.d_g], l_part], 1))
            lqs.append(_log_normal(e, chol))
        z, log_ql = torch.cat(zs)[:, self.target.inverse], torch.cat(lqs)
        return z, (log_qg + log_ql) if log_q else None

    def log_prob(self, value):
        flat = value.reshape(-1, self.model.dim)[:, self.order]
        g, l_part = flat[:, : self.d_g], flat[:, self.d_g :]
        out = []
        for i in range(0, flat.shape[0], self._chunk):
            mode, chol = self.conditional(g[i : i + self._chunk])
            r = l_part[i : i + self._chunk] - mode[:, self.d_g :]
            e = (chol.transpose(-1, -2) @ r[..., None])[..., 0]  # e = Lᵀ(l - l̂), P = L Lᵀ
            out.append(_log_normal(e, chol))
        return (_log_t(g, self.loc_g, self.scale_tril_g) + torch.cat(out)).reshape(value.shape[:-1])

    def conditional(self, g):
        """Newton's l̂(g) as (g, l̂) ``(n, D)`` (in the family's order), and the Cholesky
        factor of P(g) ``(n, d_l, d_l)`` (the identity where P is not positive definite)."""
        z0 = torch.cat([g, _features(g) @ self.start], 1)
        with torch.enable_grad(), no_validation():
            z, _, neg_h = newton(self.target, z0, self.d_g)
        chol, info = torch.linalg.cholesky_ex(neg_h)
        eye = torch.eye(neg_h.shape[-1], dtype=g.dtype, device=g.device)
        return z, torch.where((info == 0)[:, None, None], chol, eye)

    def _draw_g(self, n, generator):
        """g ~ t_ν(loc, LLᵀ) = loc + L ε / √(χ²_ν / ν), and log q(g)."""
        e = randn((n, self.d_g + _DF), generator, self.loc_g)
        chi2 = (e[:, self.d_g :] ** 2).sum(1)
        g = self.loc_g + (e[:, : self.d_g] / (chi2 / _DF).sqrt()[:, None]) @ self.scale_tril_g.T
        return g, _log_t(g, self.loc_g, self.scale_tril_g)


def newton(model, z, d_g: int, max_iter: int = 20, tol: float = 1e-8):
    """Maximise log p(x, z) over z[:, d_g:] for each row of ``z`` (n, D), z[:, :d_g] held.

    Returns ``(z, log p, -H)`` with H the forward-difference Hessian in l at the result,
    or at the iterate before it when the result's gradient already meets the stopping
    rule by that curvature (one gradient row per draw instead of d_l + 1). Rows where
    log p is not finite at the start are left as they are."""
    lp, grad, neg_h = _value_grad_hessian(model, z, d_g)
    active = torch.nonzero(torch.isfinite(lp)).squeeze(1)
    eye = torch.eye(z.shape[1] - d_g, dtype=z.dtype, device=z.device)
    for _ in range(max_iter):
        p, g = neg_h[active], grad[active]
        chol, info = torch.linalg.cholesky_ex(p)
        bad = info != 0
        if bool(bad.any()):  # not concave there: P + (max |P_jj| + 1) I instead
            shift = p.diagonal(dim1=1, dim2=2).abs().amax(1) + 1.0
            damped, _ = torch.linalg.cholesky_ex(p + shift[:, None, None] * eye)
            chol = torch.where(bad[:, None, None], damped, chol)
        step = torch.cholesky_solve(g[..., None], chol)[..., 0]
        decrement = (g * step).sum(1)
        keep = decrement > tol
        active, step, decrement = active[keep], step[keep], decrement[keep]
        if active.numel() == 0:
            break
        za, lpa = z[active], lp[active]
        t = torch.ones(active.numel(), dtype=z.dtype, device=z.device)
        for _ in range(20):  # backtracking: f(l + t s) ≥ f(l) + 1e-4 t gᵀs, per row
            trial = torch.cat([za[:, :d_g], za[:, d_g:] + t[:, None] * step], 1)
            with torch.no_grad():
                lp_trial = model.log_density(trial)
            ok = (lp_trial >= lpa + 1e-4 * t * decrement) | (t < 1e-6)
            if bool(ok.all()):
                break
            t = torch.where(ok, t, t / 4)
        lp_new, g_new = _value_grad(model, trial, d_g)
        z[active], lp[active], grad[active] = trial, lp_new, g_new
        s_new = torch.cholesky_solve(g_new[..., None], chol[keep])[..., 0]
        done = torch.isfinite(lp_new) & ((g_new * s_new).sum(1) <= tol)
        active = active[~done]  # the others: the curvature at their new point
        if active.numel() == 0:
            break
        lp[active], grad[active], neg_h[active] = _value_grad_hessian(model, z[active], d_g)
    return z, lp, neg_h


def _value_grad(model, z, d_g):
    """log p (n,) and ∂/∂l (n, d_l) at the rows of ``z`` (0 where log p is not finite)."""
    rows = z.detach().requires_grad_(True)
    lp = model.log_density(rows)
    finite = torch.isfinite(lp)
    (grad,) = torch.autograd.grad(torch.where(finite, lp, 0.0).sum(), rows)
    return lp.detach(), grad[:, d_g:]


def _value_grad_hessian(model, z, d_g):
    """log p (n,), ∂/∂l (n, d_l) and -∂²/∂l² (n, d_l, d_l), the Hessian by forward
    differences of the gradient (one batched call of (d_l + 1) n rows), symmetrised."""
    n, d = z.shape
    d_l = d - d_g
    step = math.sqrt(torch.finfo(z.dtype).eps) * (1 + z[:, d_g:].abs())  # (n, d_l)
    rows = z.unsqueeze(0).repeat(d_l + 1, 1, 1)
    j = torch.arange(d_l, device=z.device)
    rows[1 + j, :, d_g + j] += step.T
    lp, grad = _value_grad(model, rows.reshape(-1, d), d_g)
    lp, grad = lp.view(d_l + 1, n), grad.view(d_l + 1, n, d_l)
    hess = ((grad[1:] - grad[0]) / step.T[..., None]).transpose(0, 1)  # (n, j, :)
    hess = 0.5 * (hess + hess.transpose(1, 2))
    ok = torch.isfinite(lp).all(0) & torch.isfinite(hess).flatten(1).all(1)
    lp0 = torch.where(ok, lp[0], -torch.inf)
    return lp0, torch.where(ok[:, None], grad[0], 0.0), -torch.where(ok[:, None, None], hess, 0.0)


def fit_nested(model, loc, scale_tril, generator, *, rounds: int = 2, draws: int = 256):
    """Fit the family from the full-rank fit N(``loc``, ``scale_tril`` ·ᵀ) (module
    docstring). Returns ``(NestedLaplace, message)``; a model it does not apply to is a
    ValueError saying why (see :func:`nested_split`)."""
    order, d_g, why = nested_split(model)
    if order is None:
        raise ValueError(f"guide='nested' does not apply: {why}")
    target = _Ordered(model, order)
    loc, cov = loc[order], (scale_tril @ scale_tril.T)[order][:, order]
    # E[l | g] under the full-rank fit, as a (linear) start for the first round
    cond = torch.linalg.solve(cov[:d_g, :d_g], cov[:d_g, d_g:])
    start = torch.zeros(_num_features(d_g), loc.shape[0] - d_g, dtype=loc.dtype)
    start[0] = loc[d_g:] - loc[:d_g] @ cond
    start[1 : 1 + d_g] = cond
    loc_g = loc[:d_g].clone()
    scale_g = torch.linalg.cholesky(4 * cov[:d_g, :d_g])
    modes, gs = [], []
    with torch.no_grad():
        for _ in range(rounds):
            q = NestedLaplace(model, order, d_g, loc_g, scale_g, start)
            g, log_qg = q._draw_g(draws, generator)
            mode, chol = q.conditional(g)
            with no_validation():
                log_p = target.log_density(mode)
            half_log_det = chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
            # log p̃(g) - log q(g): the Laplace marginal against the proposal
            log_w = log_p + 0.5 * mode[:, d_g:].shape[1] * _LOG_2PI - half_log_det - log_qg
            log_w = torch.where(torch.isfinite(log_w), log_w, -torch.inf)
            if not bool(torch.isfinite(log_w).any()):
                raise ValueError("guide='nested': log p(x, z) is not finite at any draw")
            w = torch.softmax(log_w, 0)
            loc_g = (w[:, None] * g).sum(0)
            c = g - loc_g
            cov_g = (w[:, None, None] * c[:, :, None] * c[:, None, :]).sum(0)
            scale_g = torch.linalg.cholesky(cov_g)
            keep = torch.isfinite(log_p)
            modes.append(mode[keep])
            gs.append(g[keep])
        # the quadratic regression of l̂ on g that starts every later solve
        g_all, mode_all = torch.cat(gs), torch.cat(modes)
        start = torch.linalg.lstsq(_features(g_all), mode_all[:, d_g:]).solution
    q = NestedLaplace(model, order, d_g, loc_g, scale_g, start)
    ess = float(1 / (w * w).sum())
    return q, f"nested Laplace: q(g) from {rounds} rounds of {draws} draws (last ESS {ess:.0f})"


def _num_features(d_g):
    return 1 + d_g + d_g * (d_g + 1) // 2


def _features(g):
    """1, g_i, g_i g_j (i ≤ j): (n, 1 + d_g + d_g(d_g + 1)/2)."""
    i, j = torch.triu_indices(g.shape[1], g.shape[1], device=g.device)
    return torch.cat([torch.ones_like(g[:, :1]), g, g[:, i] * g[:, j]], 1)


def _log_t(g, loc, scale_tril):
    """log of the multivariate Student-t_ν(loc, LLᵀ) density at the rows of g."""
    d = g.shape[1]
    r = torch.linalg.solve_triangular(scale_tril, (g - loc).T, upper=False).T
    maha = (r * r).sum(1)
    return (
        math.lgamma((_DF + d) / 2) - math.lgamma(_DF / 2) - 0.5 * d * math.log(_DF * math.pi)
        - scale_tril.diagonal().log().sum() - 0.5 * (_DF + d) * torch.log1p(maha / _DF)
    )  # fmt: skip


def _log_normal(e, chol):
    """log N(l; l̂, P⁻¹) at l = l̂ + L⁻ᵀ e (P = L Lᵀ): log |L| - |e|²/2 - (d/2) log 2π."""
    half_log_det = chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    return half_log_det - 0.5 * (e * e).sum(-1) - 0.5 * e.shape[-1] * _LOG_2PI


def _solve_upper(chol, e):
    """L⁻ᵀ e per row (a draw of N(0, P⁻¹) for P = L Lᵀ)."""
    return torch.linalg.solve_triangular(chol.transpose(-1, -2), e[..., None], upper=True)[..., 0]
