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
``"flow"``      the full-rank fit, then a normalizing flow on top of it, fitted by
                stochastic gradient ascent (:mod:`varbayes.vi.flow`): for a posterior
                that is not close to Gaussian (the full-rank k̂ > 0.7), at the cost of
                ``num_steps`` stochastic steps (tens of seconds).
``"nested"``    the full-rank fit, then an embedded Laplace approximation
                (:mod:`varbayes.vi.nested`): the largest site l | g ~ N(l̂(g), P(g)⁻¹)
                at its conditional mode (Newton's method per draw), the other sites g
                from a Student-t fitted by importance sampling; for a hierarchical model
                whose other sites hold at most 8 coordinates. Seconds.
``"auto"``      (the default) ``"fullrank"``; when the full-rank k̂ > 0.7, i.e. exactly
                when the Gaussian answer could not be trusted, continued as ``"nested"``
                (where it applies) and, if that k̂ is above 0.7 too, as ``"flow"``. The
                Posterior's ``guide`` says which it returned; ``info`` holds the
                full-rank k̂ (``fullrank_khat``) and the nested one (``nested_khat``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import traceback
import warnings

import torch
from torch.distributions import Independent, LowRankMultivariateNormal, MultivariateNormal, Normal

from varbayes._validation import check_int
from varbayes.monitor import ConvergenceWarning, NonFiniteObjectiveError
from varbayes.vi.flow import fit_flow
from varbayes.vi.guides import Guide
from varbayes.vi.model import Model, no_validation
from varbayes.vi.nested import fit_nested, nested_split
from varbayes.vi.posterior import Posterior, draw_with_log_q, log_density_chunked, point_mass
from varbayes.vi.psis import KHAT_THRESHOLD, psis
from varbayes.vi.spec import FAMILIES, ModelGuide, from_posterior
from varbayes.vi.spec import guide as guide_for

__all__ = ["GUIDES", "ModelError", "PSISWarning", "fit", "fit_model", "find_map", "laplace"]

GUIDES = FAMILIES
_LOG_2PI = math.log(2 * math.pi)


class PSISWarning(UserWarning):
    """k̂ > 0.7: q is too far from the posterior for its draws (or importance weights)."""


class ModelError(RuntimeError):
    """The user's model function raised during a phase of :func:`fit`; the original
    exception is chained (``__cause__``)."""


@contextlib.contextmanager
def _phase(model, phase: str):
    """Re-raise an exception that came out of ``model``'s function as a :class:`ModelError`
    naming the function and the phase, chained to it; other exceptions pass unchanged."""
    try:
        yield
    except NonFiniteObjectiveError:
        raise
    except Exception as err:
        if not _raised_in(model.fn, err):
            raise
        raise ModelError(
            f"the model function {model.name!r} raised {type(err).__name__} during {phase}: {err}"
        ) from err


def _raised_in(fn, err: BaseException) -> bool:
    """Whether ``fn``'s code is on the traceback of ``err`` (the error came from inside it)."""
    code = getattr(fn, "__code__", None) or getattr(type(fn).__call__, "__code__", None)
    return any(frame.f_code is code for frame, _ in traceback.walk_tb(err.__traceback__))


def fit_model(
    model: Model,
    guide: str | ModelGuide | Posterior = "auto",
    *,
    rank: int | None = None,
    num_draws: int | None = None,
    max_iter: int = 2000,
    gtol: float = 1e-4,
    num_check: int = 2000,
    num_steps: int = 1500,
    seed: int = 0,
) -> Posterior:
    """Fit q(z) to p(z | x) for a :class:`Model`; see the module docstring for the recipe.

    Parameters
    ----------
    model : Model
    guide : one of :data:`GUIDES` (default ``"auto"``: full rank, continued as ``"nested"``
        when its k̂ > 0.7 and as ``"flow"`` if that k̂ is above 0.7 too, which adds
        ``num_steps`` stochastic steps; ``"fullrank"`` never does); or a guide built for
        the model
        (:func:`varbayes.vi.guide`); or a fitted :class:`Posterior` of a model with the
        same latent sites, to warm start (its family; the MAP search starts from its
        mean). A guide or posterior of a model with other sites is a ValueError naming
        them.
    rank : r of the ``"lowrank"`` family (default ⌈√D⌉, or the guide's rank).
    num_draws : M, the fixed draws of the deterministic ELBO (default max(64, 2D), at
        most 1024).
    max_iter : L-BFGS iterations at most (each its own line search).
    gtol : convergence: max |∇_λ ELBO_M| ≤ gtol.
    num_check : fresh draws for the final ELBO and k̂.
    num_steps : the ``"flow"`` family's stochastic steps (Adam, 128 fresh draws each; also
        ``"auto"``'s when it goes on to the flow).
    seed : the draws (fixed ε, check, and :meth:`Posterior.sample`) come from it.

    Raises
    ------
    NonFiniteObjectiveError
        The objective or the parameters became non-finite (with the iteration); nothing
        is returned.
    ModelError
        The model function raised (outside a line search's trial points, where a failure
        just rejects the point): the message names the function and the phase (MAP,
        Laplace, ADVI, check); the original error is its ``__cause__``.
    """
    if not isinstance(model, Model):
        raise TypeError(f"model must be a varbayes.vi.Model; got {type(model).__name__}")
    spec = _as_guide(model, guide, rank)
    guide, rank = spec.family, spec.rank
    max_iter = check_int(max_iter, "max_iter", minimum=1)
    num_check = check_int(num_check, "num_check", minimum=2)
    num_steps = check_int(num_steps, "num_steps", minimum=1)
    seed = check_int(seed, "seed")
    if not (isinstance(gtol, (int, float)) and gtol > 0):
        raise ValueError(f"gtol must be a number > 0; got {gtol!r}")
    d = model.dim
    if num_draws is None:
        num_draws = min(max(64, 2 * d), 1024)
    num_draws = check_int(num_draws, "num_draws", minimum=2)
    gen = torch.Generator().manual_seed(seed)
    with no_validation():
        with _phase(model, "the MAP search (L-BFGS on log p(x, z))"):
            z_map, map_trace, map_ok = find_map(model, max_iter=max_iter, z0=spec.init)
        if guide == "map":
            value = float(model.log_density(z_map))
            return Posterior(
                model, point_mass(z_map.detach()), guide, -math.inf, 0.0, math.inf, map_trace,
                len(map_trace), map_ok, "MAP " + ("converged" if map_ok else "not converged"),
                seed, {"log_density": value},
            )  # fmt: skip
        with _phase(model, "the Laplace approximation (the Hessian at the MAP)"):
            neg_h = -laplace(model, z_map)
        family = _family(guide, model, z_map, neg_h, rank)
        if guide == "laplace":
            q, trace, steps, converged = family.to_q(None), map_trace, 0, map_ok
            message = "Laplace approximation at the MAP"
        else:
            eps = _fixed_draws(num_draws, family.noise_dim, d, gen, z_map)
            objective = _deterministic_elbo(model, family, eps)
            with _phase(model, "ADVI (L-BFGS on the deterministic ELBO)"):
                lam, trace, converged, message = _maximise(
                    objective, family.init(gen), max_iter, gtol
                )
            q, steps = family.to_q(lam), len(trace)
        info = {"map": z_map.detach(), "num_draws": num_draws, "rank": family.rank or None}
        check = "the check (fresh draws for the ELBO and k̂)"
        with _phase(model, check):
            elbo, se, khat = _check(model, q, num_check, gen)
        further = guide == "auto" and khat > KHAT_THRESHOLD  # the Gaussian is not trusted
        if further or guide in ("nested", "flow"):
            info.update(fullrank_elbo=elbo, fullrank_khat=khat)
        why = f" (full-rank k̂ {khat:.2f} > {KHAT_THRESHOLD})" if further else ""
        if guide == "nested" or (further and nested_split(model)[0] is not None):
            with _phase(model, "the nested Laplace approximation (Newton's method per draw)"):
                nested, nested_message = fit_nested(model, q.mean, q.scale_tril, gen)
            with _phase(model, check):
                n_elbo, n_se, n_khat = _check(model, nested, num_check, gen)
            info.update(nested_khat=n_khat)
            if guide == "nested" or n_khat <= KHAT_THRESHOLD:
                q, elbo, se, khat = nested, n_elbo, n_se, n_khat
                message = f"full rank {message}; {nested_message}{why}"
                guide = "nested"
        if guide == "flow" or (guide == "auto" and khat > KHAT_THRESHOLD):
            with _phase(model, "the flow (stochastic gradient ascent on the ELBO)"):
                q, flow_trace, flow_ok, flow_message = fit_flow(
                    model, q.mean, q.scale_tril, gen, num_steps=num_steps
                )
            trace, steps = trace + flow_trace, steps + len(flow_trace)
            converged = converged and flow_ok
            message = f"full rank {message}; flow{why} {flow_message}"
            guide = "flow"
            with _phase(model, check):
                elbo, se, khat = _check(model, q, num_check, gen)
        guide = "fullrank" if guide == "auto" else guide
    post = Posterior(
        model, q, guide, elbo, se, khat, trace, steps, converged, message, seed, info
    )  # fmt: skip
    if not converged:
        warnings.warn(
            f"fit did not converge ({message}); raise max_iter, or check the model",
            ConvergenceWarning,
            stacklevel=3,
        )
    if khat > KHAT_THRESHOLD:
        warnings.warn(
            f"PSIS k̂ = {khat:.2f} > {KHAT_THRESHOLD}: the {guide} q is far from the posterior; "
            "its draws are not importance-resampled and may be wrong ("
            + {
                "fullrank": "try guide='flow', or reparameterize the model",
                "flow": "reparameterize the model",
                "nested": "try guide='flow', or reparameterize the model",
            }.get(guide, "try guide='fullrank'")
            + ")",
            PSISWarning,
            stacklevel=3,
        )
    return post


# ----------------------------------------------------------------------------- MAP
def find_map(model: Model, *, max_iter: int = 2000, z0: torch.Tensor | None = None):
    """ẑ = argmax_z log p(x, z) by L-BFGS (strong Wolfe) from ``z0`` (default 0).

    Returns ``(ẑ (D,), trace of log p per iteration, converged)``; converged: the
    relative change of log p fell below 1e-12 or max |∇| below 1e-8·max(1, |log p|)."""
    if z0 is None:
        z = torch.zeros(model.dim, dtype=model.dtype)
    else:
        z = z0.detach().to(dtype=model.dtype).clone()
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
    """A Gaussian family q_λ(z), written in the whitened coordinates of the Laplace fit.

    With C the Cholesky factor of (-H)⁻¹ (``mean_map``), c = (-H_dd)^{-1/2} (``diag``)
    and s = e^ρ, a draw from fixed noise ε is

    ``"fullrank"``  z = ẑ + C(μ + s ⊙ (I + N)ε)            log|Σ|/2 = log|C| + Σρ
    ``"block"``     z = ẑ + Cμ + B(s ⊙ (I + N_b)ε)          log|B| + Σρ
    ``"meanfield"`` z = ẑ + Cμ + (c ⊙ s) ⊙ ε                Σ log(c s)
    ``"lowrank"``   z = ẑ + Cμ + (c ⊙ s) ⊙ ε₁ + (CW) ε₂     Σ log(c s) + ½ log|I + VᵀD⁻²V|

    (N strictly lower; N_b its within-site blocks, B the block-diagonal Cholesky factor
    of the per-site (-H_bb)⁻¹; V = CW, D = c ⊙ s). The mean is always mapped by the
    full C, which leaves the family unchanged but makes the objective well conditioned
    in μ however correlated the posterior; λ = 0 is the Laplace fit (μ = 0, s = 1, N = 0,
    W ≈ 0)."""

    def __init__(self, kind, z_map, neg_h, blocks, rank):
        d = z_map.shape[0]
        self.kind, self.d, self.z_map, self.rank = kind, d, z_map, rank
        self.mean_map = _chol_of_inverse(neg_h)
        self.diag = _conditional_scales(neg_h)
        self.scale_map = self.mean_map
        self.mask = None
        if kind == "block":
            self.scale_map = torch.zeros_like(self.mean_map)
            site = torch.zeros(d, dtype=torch.long)
            for k, (a, b) in enumerate(blocks):
                self.scale_map[a:b, a:b] = _chol_of_inverse(neg_h[a:b, a:b])
                site[a:b] = k
            i, j = torch.tril_indices(d, d, -1)
            self.mask = (site[i] == site[j]).to(z_map.dtype)
        self.noise_dim = d + rank
        n_tril = d * (d - 1) // 2 if kind in ("fullrank", "block") else 0
        self.num_params = 2 * d + n_tril + d * rank

    def init(self, gen):
        lam = torch.zeros(self.num_params, dtype=self.z_map.dtype)
        if self.rank:  # W = 0 is a saddle point of the ELBO: start W small
            w = torch.randn(self.d * self.rank, generator=gen, dtype=lam.dtype)
            lam[2 * self.d :] = 1e-2 * w
        return lam

    def _parts(self, lam):
        d = self.d
        mu, rho, rest = lam[:d], lam[d : 2 * d], lam[2 * d :]
        return mu, rho, rest

    def _unit_lower(self, rest):
        d = self.d
        i, j = torch.tril_indices(d, d, -1)
        vals = rest if self.mask is None else rest * self.mask
        return rest.new_zeros(d, d).index_put((i, j), vals)

    def draw(self, lam, eps):
        """z (M, D) for the noise ε (M, noise_dim), and the entropy H[q_λ]."""
        mu, rho, rest = self._parts(lam)
        s = rho.exp()
        loc = self.z_map + self.mean_map @ mu
        e = eps[:, : self.d]
        const = 0.5 * self.d * (1 + _LOG_2PI)
        if self.kind in ("fullrank", "block"):
            w = (e + e @ self._unit_lower(rest).T) * s
            log_det = self.scale_map.diagonal().log().sum() + rho.sum()
            return loc + w @ self.scale_map.T, log_det + const
        sd = self.diag * s
        z = loc + e * sd
        log_det = sd.log().sum()
        if self.rank:
            v = self.mean_map @ rest.view(self.d, self.rank)
            z = z + eps[:, self.d :] @ v.T
            small = torch.eye(self.rank, dtype=lam.dtype) + (v.T / (sd * sd)) @ v
            log_det = log_det + 0.5 * torch.logdet(small)
        return z, log_det + const

    def to_q(self, lam):
        """q_λ as a torch Distribution over z (event shape (D,))."""
        if lam is None:  # the Laplace approximation N(ẑ, (-H)⁻¹)
            return MultivariateNormal(self.z_map, scale_tril=self.mean_map, validate_args=False)
        mu, rho, rest = self._parts(lam)
        s = rho.exp()
        loc = self.z_map + self.mean_map @ mu
        if self.kind in ("fullrank", "block"):
            eye = torch.eye(self.d, dtype=lam.dtype)
            tril = self.scale_map @ (s[:, None] * (eye + self._unit_lower(rest)))
            return MultivariateNormal(loc, scale_tril=tril, validate_args=False)
        sd = self.diag * s
        if self.rank:
            v = self.mean_map @ rest.view(self.d, self.rank)
            return LowRankMultivariateNormal(loc, v, sd * sd, validate_args=False)
        return Independent(Normal(loc, sd, validate_args=False), 1, validate_args=False)


def _as_guide(model, guide, rank) -> ModelGuide:
    """The :class:`ModelGuide` of ``guide`` (a family name, a guide or a Posterior), checked
    against ``model``'s sites."""
    if isinstance(guide, str):
        if guide not in GUIDES:
            raise ValueError(f"guide must be one of {GUIDES}; got {guide!r}")
        return guide_for(model, guide, rank=rank if guide == "lowrank" else None)
    if isinstance(guide, Posterior):
        guide = from_posterior(guide)
    if not isinstance(guide, ModelGuide):
        raise TypeError(
            f"guide must be one of {GUIDES}, a vi.guide(model, ...) or a fitted Posterior; "
            f"got {type(guide).__name__}"
        )
    guide.check(model)
    if rank is not None and guide.rank is not None and rank != guide.rank:
        raise ValueError(f"rank={rank} differs from the guide's rank {guide.rank}")
    if rank is not None and guide.rank is None:
        guide = dataclasses.replace(guide, rank=rank)
    return guide


def _family(guide, model, z_map, neg_h, rank):
    r = 0
    if guide == "lowrank":
        d = model.dim
        r = check_int(rank, "rank", minimum=1) if rank is not None else math.ceil(d**0.5)
    blocks = [(s.start, s.stop) for s in model.latents]
    kind = "fullrank" if guide in ("auto", "flow", "nested") else guide
    return _Gaussian(kind, z_map, neg_h, blocks, r)


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


def _deterministic_elbo(model, family, eps):
    """λ ↦ ELBO_M(λ) = mean_m log p(x, z_m(λ)) + H[q_λ] for the fixed noise ε."""

    def objective(lam):
        z, entropy = family.draw(lam, eps)
        return model.log_density(z).mean() + entropy

    return objective


def _maximise(objective, x0, max_iter, gtol, history=30):
    """Maximise a smooth deterministic ``objective`` by L-BFGS (Nocedal and Wright 2006,
    Alg. 7.4: two-loop recursion, initial scaling sᵀy/yᵀy) with a backtracking Armijo line
    search (c₁ = 1e-4, halving; a trial point where the objective is not finite or the
    model fails with a RuntimeError or ValueError, e.g. a Cholesky factorization, is
    rejected like a worse one; at the start point such a failure is raised).

    Stops, converged, when max |∇f| ≤ ``gtol`` (``None``: ≤ 1e-8·max(1, |f|)); when the
    line search finds no ascent even along the gradient it stops, converged only if
    max |∇f| ≤ 100·gtol. It also stops after 5 iterations in a row that raise f by no more
    than 1e-12·max(1, |f|) (f is then optimal to float64 precision, while ill-conditioning
    can keep ∇f above the tolerance): converged when ``gtol`` is ``None`` (the MAP), else
    only if max |∇f| ≤ 100·gtol. Returns ``(x, trace of f per iteration, converged, message)``;
    a non-finite f at the start raises :class:`NonFiniteObjectiveError`."""

    def value_and_grad(v, trial=True):
        v = v.detach().requires_grad_(True)
        try:
            f = objective(v)
        except (RuntimeError, ValueError):  # e.g. torch.linalg.LinAlgError at a trial point
            if not trial:  # at the start point the failure is the model's: raise it
                raise
            return -math.inf, None
        if not bool(torch.isfinite(f)):
            return -math.inf, None
        (g,) = torch.autograd.grad(f, v)
        if not bool(torch.isfinite(g).all()):
            return -math.inf, None
        return float(f.detach()), g

    x = x0.detach().clone()
    f, g = value_and_grad(x, trial=False)
    if g is None:
        raise NonFiniteObjectiveError("the objective is not finite at the start point", 0)
    pairs: list[tuple[torch.Tensor, torch.Tensor, float]] = []
    trace, converged, message = [], False, f"not converged after {max_iter} iterations"
    flat = 0  # iterations in a row that raised f by less than float64 precision
    for it in range(1, max_iter + 1):
        gmax = float(g.abs().max())
        tol = gtol if gtol is not None else 1e-8 * max(1.0, abs(f))
        if gmax <= tol:
            converged, message = True, f"converged at iteration {it - 1}: max|∇| = {gmax:.2g}"
            break
        d = _two_loop(g, pairs)
        slope = float(g @ d)
        if slope <= 0:  # not an ascent direction: forget the curvature pairs
            pairs.clear()
            d, slope = g.clone(), float(g @ g)
        t = 1.0 if pairs else min(1.0, 1.0 / float(g.abs().sum()))
        for _ in range(60):
            f_new, g_new = value_and_grad(x + t * d)
            if g_new is not None and f_new >= f + 1e-4 * t * slope:
                break
            t *= 0.5
        else:
            g_new = None
        if g_new is None:  # no ascent even with tiny steps: as far as f's precision goes
            if pairs:
                pairs.clear()
                continue
            converged = gmax <= 100 * tol
            message = (
                f"{'converged' if converged else 'stalled'} at iteration {it}: no ascent "
                f"along the gradient, max|∇| = {gmax:.2g}"
            )
            break
        s_k, y_k = t * d, g - g_new  # y for the minimisation of -f
        sy = float(s_k @ y_k)
        if sy > 1e-10 * float(s_k.norm() * y_k.norm()):
            pairs.append((s_k, y_k, 1.0 / sy))
            if len(pairs) > history:
                pairs.pop(0)
        flat = flat + 1 if f_new - f <= 1e-12 * max(1.0, abs(f)) else 0
        x, f, g = x + s_k, f_new, g_new
        trace.append(f)
        if flat >= 5:
            gmax = float(g.abs().max())
            converged = gtol is None or gmax <= 100 * gtol
            message = (
                f"{'converged' if converged else 'stalled'} at iteration {it}: f unchanged to "
                f"float64 precision for 5 iterations, max|∇| = {gmax:.2g}"
            )
            break
    else:
        gmax = float(g.abs().max())
        tol = gtol if gtol is not None else 1e-8 * max(1.0, abs(f))
        converged = gmax <= tol
        message = (
            f"{'converged' if converged else 'not converged'} after {max_iter} iterations: "
            f"max|∇| = {gmax:.2g}"
        )
    return x, trace, converged, message


def _two_loop(g, pairs):
    """The L-BFGS direction H g (ascent on f) from the stored (s, y, 1/sᵀy) pairs."""
    q = g.clone()
    alphas = []
    for s_k, y_k, rho in reversed(pairs):
        a = rho * float(s_k @ q)
        alphas.append(a)
        q -= a * y_k
    if pairs:
        s_k, y_k, _ = pairs[-1]
        q *= float(s_k @ y_k) / float(y_k @ y_k)
    for (s_k, y_k, rho), a in zip(pairs, reversed(alphas), strict=True):
        b = rho * float(y_k @ q)
        q += (a - b) * s_k
    return q


def _check(model, q, n, gen):
    """Fresh-draw ELBO, its standard error, and PSIS k̂."""
    with torch.no_grad():
        z, log_q = draw_with_log_q(q, n, gen)
        log_p = log_density_chunked(model, z)  # NaN: p = 0 there
    log_w = log_p - log_q
    finite = torch.isfinite(log_w)
    # Draws where p(x, z) = 0 (log w = -∞ at a finite log q) are zero weights: the ELBO is
    # then -∞ and k̂ that of the others; NaN, +∞ or fewer than half of the draws left: ∞.
    zero = (log_w == -math.inf) & torch.isfinite(log_q)
    if not bool((finite | zero).all()) or int(finite.sum()) < n // 2:
        return -math.inf, math.inf, math.inf
    _, khat = psis(log_w.cpu().numpy())
    if not bool(finite.all()):
        return -math.inf, math.inf, khat
    return float(log_w.mean()), float(log_w.std() / math.sqrt(n)), khat


def fit(model, guide=None, **options):
    """Variational inference. Two forms:

    * ``fit(model, guide="auto", **options) -> Posterior`` for a :class:`Model`
      (the recipe above; ``guide`` one of :data:`GUIDES`; options as :func:`fit_model`).
      The shipped :class:`~varbayes.vi.LinearRegression`, :class:`~varbayes.vi.
      LogisticRegression` and :class:`~varbayes.vi.LogJoint` are Models too;
    * ``fit(log_joint, guide_module, **options) -> SVIResult``: stochastic VI of a guide
      module (a :class:`varbayes.vi.Guide`) on a log joint (:func:`varbayes.vi.svi.fit`).
    """
    if isinstance(model, Model) and not isinstance(guide, Guide):
        return fit_model(model, "auto" if guide is None else guide, **options)
    from varbayes.vi.svi import fit as svi_fit

    return svi_fit(model, guide, **options)
