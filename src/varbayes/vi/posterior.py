"""The fitted posterior: q(z) (a Gaussian, a nested Laplace or a flow) on the unconstrained z.

``Posterior.sample(n)`` draws z ~ q, maps them through the model's bijections and
returns named draws θ in the constrained space (latents and derived values). When the
PSIS diagnostic allows (k̂ ≤ 0.7) the draws are importance-resampled: M = 4n proposals
z_s ~ q get Pareto-smoothed weights w_s ∝ p(x, z_s)/q(z_s) and n of them are drawn with
probabilities w_s, which corrects q's too-narrow or shifted marginals; above 0.7 the
raw q draws are returned and :func:`varbayes.vi.fit` has warned.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.distributions import Distribution, Independent, LowRankMultivariateNormal

from varbayes._validation import check_int
from varbayes.vi.drawn import DrawnDistribution, randn
from varbayes.vi.psis import KHAT_THRESHOLD, psis

__all__ = ["Posterior", "Summary", "draw_with_log_q", "from_noise", "noise_dim", "point_mass"]

_LOG_2PI = math.log(2 * math.pi)


def draw_with_log_q(q, n: int, generator: torch.Generator | None = None):
    """n draws z ~ q and log q(z), shapes ``(n, D)`` and ``(n,)``, for the families a fit
    returns (``MultivariateNormal``, ``Independent(Normal)``, ``LowRankMultivariateNormal``,
    the :class:`~varbayes.vi.flow.Flow`, the :class:`~varbayes.vi.nested.NestedLaplace`; a
    point mass: log q = 0). The Gaussians draw ε ~ N(0, I) of shape ``(n,
    noise_dim(q))`` from ``generator`` and hand it to :func:`from_noise`."""
    if isinstance(q, DrawnDistribution):
        with torch.no_grad():
            return q.draw(n, generator)
    loc = q.mean
    if isinstance(q, _PointMass):
        return loc.expand(n, loc.shape[-1]).clone(), loc.new_zeros(n)
    return from_noise(q, randn((n, noise_dim(q)), generator, loc))


def noise_dim(q) -> int:
    """The number of N(0, 1) variables behind one draw of a Gaussian q: D, or D + r for
    a rank-r ``LowRankMultivariateNormal``."""
    d = q.event_shape[-1]
    if isinstance(q, LowRankMultivariateNormal):
        return d + q.cov_factor.shape[-1]
    return d


def from_noise(q, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """z = T(ε; λ) and log q(z) for a Gaussian q and noise ε of shape ``(n, noise_dim(q))``
    (differentiable in q's parameters; a pure function of them and ε). Full rank:
    z = μ + Lε and log q = -Σ log L_dd - |ε|²/2 - (D/2) log 2π, from ε (no triangular
    solve); mean field the same with L = diag σ; low rank: z = μ + √d ⊙ ε₁ + W ε₂ and
    :func:`lowrank_log_prob`."""
    loc = q.mean
    d = loc.shape[-1]
    if isinstance(q, LowRankMultivariateNormal):
        return lowrank_from_noise(loc, q.cov_factor, q.cov_diag, eps)
    if isinstance(q, Independent):
        scale = q.base_dist.scale
        z = loc + eps * scale
        log_det = scale.log().sum()
    else:
        L = q.scale_tril
        z = loc + eps @ L.T
        log_det = L.diagonal().log().sum()
    return z, -log_det - 0.5 * (eps * eps).sum(-1) - 0.5 * d * _LOG_2PI


def lowrank_from_noise(loc, W, d, eps) -> tuple[torch.Tensor, torch.Tensor]:
    """z = μ + √d ⊙ ε₁ + W ε₂ for ε = [ε₁ (D), ε₂ (r)] of shape ``(n, D + r)``, and
    log N(z | μ, WWᵀ + diag d) (:func:`lowrank_log_prob`)."""
    x = eps[:, : loc.shape[-1]] * d.sqrt() + eps[:, loc.shape[-1] :] @ W.T
    return loc + x, lowrank_log_prob(x, W, d)


def lowrank_log_prob(x: torch.Tensor, W: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """log N(x | 0, Σ), Σ = WWᵀ + diag(d), for x of shape ``(n, D)``, W ``(D, r)``, by
    Woodbury and the matrix determinant lemma with the capacitance C = I + WᵀD⁻¹W = LLᵀ:

        log det Σ = 2 Σ log L_jj + Σ log d_i,   xᵀΣ⁻¹x = xᵀD⁻¹x − |L⁻¹WᵀD⁻¹x|².

    The same value as torch's ``LowRankMultivariateNormal.log_prob``; written with
    ``cholesky_ex`` (C ⪰ I never fails for finite W, d), which compiles inside
    ``torch.while_loop`` where ``torch.linalg.cholesky`` does not (torch 2.13)."""
    Wd = W / d[:, None]  # D⁻¹W
    C = torch.eye(W.shape[-1], dtype=W.dtype, device=W.device) + W.T @ Wd
    L, _ = torch.linalg.cholesky_ex(C)
    u = torch.linalg.solve_triangular(L, (x @ Wd).T, upper=False)  # (r, n)
    maha = (x * x / d).sum(-1) - (u * u).sum(0)
    log_det = 2 * L.diagonal().log().sum() + d.log().sum()
    return -0.5 * (x.shape[-1] * _LOG_2PI + log_det + maha)


class _PointMass(Distribution):
    """δ(z - z₀): the MAP 'approximation' (no spread; its ELBO is -∞)."""

    arg_constraints = {}

    def __init__(self, loc):
        self.loc = loc
        super().__init__(event_shape=loc.shape, validate_args=False)

    @property
    def mean(self):
        return self.loc

    def sample(self, sample_shape=()):
        return self.loc.expand(torch.Size(sample_shape) + self.loc.shape).clone()


@dataclass
class Summary:
    """Per named element (``theta[0]``, ``L[1, 0]``, as ArviZ names them): mean, sd and
    the 5%, 50%, 95% quantiles of the posterior draws. ``str(summary)`` is a table;
    ``summary["mu"]`` a dict of the statistics; ``summary.to_dict()`` all of them."""

    names: list[str]
    columns: tuple[str, ...]
    values: np.ndarray  # (len(names), len(columns))

    def __getitem__(self, name: str) -> dict[str, float]:
        try:
            i = self.names.index(name)
        except ValueError:
            raise KeyError(f"no element {name!r}; elements are {self.names}") from None
        return dict(zip(self.columns, self.values[i].tolist(), strict=True))

    def to_dict(self) -> dict[str, dict[str, float]]:
        return {n: self[n] for n in self.names}

    def __str__(self):
        w = max(len(n) for n in self.names) + 2
        head = f"{'':<{w}}" + "".join(f"{c:>9}" for c in self.columns)
        rows = [
            f"{n:<{w}}" + "".join(f"{v:>9.3g}" for v in row)
            for n, row in zip(self.names, self.values, strict=True)
        ]
        return "\n".join([head, *rows])

    __repr__ = __str__


@dataclass
class Posterior:
    """What :func:`varbayes.vi.fit` returns for a :class:`~varbayes.vi.Model`.

    Attributes
    ----------
    model : the model fitted.
    q : q(z) over the unconstrained z (a torch Distribution, event ``(D,)``: a Gaussian,
        the :class:`~varbayes.vi.nested.NestedLaplace` of the ``"nested"`` family, or the
        :class:`~varbayes.vi.flow.Flow` of the ``"flow"`` family).
    guide : the family's name (``"fullrank"``, ``"meanfield"``, ``"lowrank"``, ``"block"``,
        ``"nested"``, ``"flow"``, ``"map"``, ``"laplace"``).
    elbo : a fresh Monte Carlo estimate of ELBO(q) with its standard error ``elbo_se``
        (-∞ when some draws of q fall where p(x, z) = 0; k̂ is then that of the others).
    khat : the PSIS k̂ of q (∞ for a point mass).
    trace : the objective after each optimizer iteration; ``steps`` their number.
    converged : whether the stopping rule held (see :func:`varbayes.vi.fit`).
    message : why the fit stopped.
    """

    model: object
    q: Distribution
    guide: str
    elbo: float
    elbo_se: float
    khat: float
    trace: list[float]
    steps: int
    converged: bool
    message: str
    seed: int = 0
    info: dict = field(default_factory=dict)

    @property
    def resamples(self) -> bool:
        """Whether :meth:`sample` importance-resamples by default (k̂ ≤ 0.7)."""
        return self.khat <= KHAT_THRESHOLD

    def sample_unconstrained(self, n: int, *, generator=None, resample: bool | None = None):
        """n draws of z, ``(n, D)``: importance-resampled when ``resample`` (default: when
        k̂ ≤ 0.7)."""
        n = check_int(n, "n", minimum=1)
        generator = generator or torch.Generator().manual_seed(self.seed)
        resample = self.resamples if resample is None else bool(resample)
        if not resample or isinstance(self.q, _PointMass):
            return draw_with_log_q(self.q, n, generator)[0]
        z, log_q = draw_with_log_q(self.q, 4 * n, generator)
        with torch.no_grad():
            log_p = log_density_chunked(self.model, z)
        log_w, _ = psis((log_p - log_q).cpu().numpy())
        probs = torch.as_tensor(np.exp(log_w), dtype=torch.float64)
        index = torch.multinomial(probs, n, replacement=True, generator=generator)
        return z[index.to(z.device)]

    def sample(self, n: int = 1000, *, seed: int | None = None, resample: bool | None = None):
        """Named draws in the constrained space: name → tensor ``(n, *shape)`` for every
        latent and derived value. ``seed`` fixes the draws (default: the fit's seed)."""
        gen = torch.Generator().manual_seed(self.seed if seed is None else check_int(seed, "seed"))
        z = self.sample_unconstrained(n, generator=gen, resample=resample)
        return self.model.constrain(z)

    def summary(self, n: int = 4000, *, seed: int | None = None) -> Summary:
        """mean, sd, 5%, 50%, 95% of each named element over ``n`` draws."""
        draws = self.sample(n, seed=seed)
        names, rows = [], []
        for name, value in draws.items():
            flat = value.reshape(n, -1).double()
            q = torch.quantile(flat, torch.tensor([0.05, 0.5, 0.95], dtype=flat.dtype), dim=0)
            stats = torch.stack([flat.mean(0), flat.std(0), *q], 1)
            shape = tuple(value.shape[1:])
            for i, idx in enumerate(np.ndindex(*shape) if shape else [()]):
                names.append(name + (f"[{', '.join(map(str, idx))}]" if idx else ""))
                rows.append(stats[i].numpy())
        return Summary(names, ("mean", "sd", "5%", "50%", "95%"), np.stack(rows))

    def predictive(self, data=None, n: int = 1000, *, seed: int | None = None) -> dict:
        """Posterior predictive draws: name → ``(n, *shape)`` for every site (observed sites
        drawn given θ), on ``data`` (default: the fitted data; an observed value may be None
        there)."""
        model = self.model if data is None else self.model.with_data(data)
        gen = torch.Generator().manual_seed(self.seed if seed is None else check_int(seed, "seed"))
        z = self.sample_unconstrained(n, generator=gen)
        return model.predict(z, generator=gen)

    def to_arviz(self, n: int = 1000, *, seed: int | None = None):
        """An ``arviz.InferenceData`` with ``n`` draws (one chain) in its posterior group
        (arviz is an optional dependency)."""
        try:
            import arviz as az
        except ImportError as exc:
            raise ImportError("to_arviz needs arviz: pip install arviz") from exc
        draws = self.sample(n, seed=seed)
        return az.from_dict(posterior={k: v[None].cpu().numpy() for k, v in draws.items()})

    def __repr__(self):
        return (
            f"Posterior({self.guide}, ELBO {self.elbo:.6g} ± {self.elbo_se:.2g}, "
            f"k̂ {self.khat:.2f}, {self.steps} steps, "
            f"{'converged' if self.converged else 'NOT converged'})"
        )


def log_density_chunked(model, z, chunk: int = 1024):
    """log p(x, z) at the rows of z, ``chunk`` rows at a time; a NaN density is p = 0
    (-∞) there, as a rejection is in Stan."""
    out = torch.cat([model.log_density(z[i : i + chunk]) for i in range(0, z.shape[0], chunk)])
    return torch.nan_to_num(out, nan=-math.inf)


def point_mass(loc: torch.Tensor) -> Distribution:
    """δ(z - loc) as a Distribution (for the MAP fit)."""
    return _PointMass(loc)
