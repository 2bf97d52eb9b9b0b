"""The ``"flow"`` family: a normalizing flow on top of the full-rank Gaussian fit.

A Gaussian q is the right answer only for a posterior that is close to Gaussian in the
unconstrained z. When it is not (a curved ridge, as in a non-centred Gaussian process
whose latent values are pinned by the data: gp_pois_regr), the KL(q || p)-optimal Gaussian
is too narrow along the ridge and PSIS k̂ says so. The flow family bends q along it.

With q₀ = N(m, LLᵀ) the full-rank fit (steps 1-3 of :func:`varbayes.vi.fit`), a draw is

    z = m + L g_λ(ε),   ε ~ N(0, I),   g_λ = g_K ∘ ... ∘ g_1,

each g_k an affine coupling layer (Dinh, Sohl-Dickstein and Bengio 2017, "Density
estimation using Real NVP") with a binary mask b_k:

    g_k(x) = b_k ⊙ x + (1 - b_k) ⊙ (x ⊙ exp(s_k(b_k ⊙ x)) + t_k(b_k ⊙ x)),

s_k = tanh(·) (a bounded log-scale) and t_k from one small MLP (two tanh layers of H
units). Its Jacobian is triangular, so

    log q(z) = log N(ε; 0, I) - log |det L| - Σ_k Σ_d s_k,d(b_k ⊙ x_{k-1}),

and the inverse is as cheap as the forward map (x = (y - t) ⊙ exp(-s) on the free
coordinates), which gives :meth:`Flow.log_prob` at any z. The masks follow the model:
because L is lower triangular, ε's leading coordinates are those of the first declared
latents, so half the layers condition the coordinates after a site boundary on those
before it (and back), as a hierarchical prior does (the scale parameters ρ, α of the GP
first, its values after); the other half split the coordinates at random.

The last layer of every MLP starts at zero, so λ = 0 is q₀ itself. λ is fitted by
stochastic gradient ascent on the ELBO, the reparameterization trick with ``particles``
fresh draws per step (a fixed-draw objective, as for the Gaussians, would overfit the
draws with this many parameters), Adam with a learning rate decayed to 0 on a cosine.
The gradient is the "sticking the landing" estimator (Roeder, Wu and Duvenaud 2017):

    ∇_λ (1/S) Σ_s [log p(x, z_s(λ)) - log q_λ'(z_s(λ))] at λ' = λ held constant,

which drops the score term E_q[∇_λ log q_λ(z)] = 0 from the pathwise gradient; its
variance vanishes as q approaches p. On gp_pois_regr (before the sinh-arcsinh layers were
added), 3,000 steps gave k̂ 0.46 and sd ratios 0.97-1.03 with it, against k̂ 0.72 and sd
ratios 0.80-1.05 without; the flow as shipped gives k̂ 0.56, sd ratios 0.97-1.03.

The defaults, 1,500 steps of 128 draws, took about 40 s there on a 2-core VM (seeds 0-2:
k̂ 0.40-0.61, sd ratios 0.95-1.04) against 52-65 s for 3,000 steps of 64 (k̂ 0.32-0.56):
a step is mostly per-operation overhead, so twice the draws cost far less than twice
the steps, and more cores make the draws cheaper still. 1,000 steps of 128 (k̂ 0.50-0.63)
or of 256 (0.65-0.72) were not enough.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from varbayes.monitor import NonFiniteObjectiveError
from varbayes.vi.drawn import DrawnDistribution, randn
from varbayes.vi.svi import _make_optimizer

__all__ = ["Flow", "fit_flow"]

_LOG_2PI = math.log(2 * math.pi)


class _Coupling(nn.Module):
    """One affine coupling layer g(x) on coordinates whose mask b is 1 (kept) / 0 (moved)."""

    def __init__(self, mask: torch.Tensor, hidden: int, generator: torch.Generator):
        super().__init__()
        d = mask.shape[0]
        self.register_buffer("mask", mask)
        self.register_buffer("free", 1 - mask)
        dtype = mask.dtype
        self.inner = nn.ModuleList(
            [_linear(d, hidden, generator, dtype), _linear(hidden, hidden, generator, dtype)]
        )
        self.out = _linear(hidden, 2 * d, None, dtype)  # zero: g = identity at the start

    def _shift_scale(self, kept, detach=False):
        h = kept
        for layer in self.inner:
            h = torch.tanh(_apply(layer, h, detach))
        s, t = _apply(self.out, h, detach).chunk(2, dim=-1)
        return torch.tanh(s) * self.free, t * self.free

    def forward(self, x, log_det=True):
        s, t = self._shift_scale(x * self.mask)
        return x * s.exp() + t, s.sum(-1) if log_det else None

    def inverse(self, y, detach=False):
        s, t = self._shift_scale(y * self.mask, detach)
        return (y - t) * (-s).exp(), -s.sum(-1)


class _SinhArcsinh(nn.Module):
    """Per coordinate, y = sinh(δ asinh(x) - ε) (Jones and Pewsey 2009): ε skews, δ < 1
    fattens and δ > 1 thins the tails; log δ = 2 tanh(a/2) keeps δ in (e⁻², e²). The
    identity at a = ε = 0. log |dy/dx| = log δ + log cosh(δ asinh x - ε) - ½ log(1 + x²)."""

    def __init__(self, d: int, dtype):
        super().__init__()
        self.a = nn.Parameter(torch.zeros(d, dtype=dtype))
        self.skew = nn.Parameter(torch.zeros(d, dtype=dtype))

    def _params(self, detach):
        a, skew = (self.a.detach(), self.skew.detach()) if detach else (self.a, self.skew)
        return 2 * torch.tanh(a / 2), skew

    def forward(self, x, log_det=True):
        log_delta, skew = self._params(False)
        v = log_delta.exp() * torch.asinh(x) - skew
        if not log_det:
            return torch.sinh(v), None
        log_det = log_delta + _log_cosh(v) - 0.5 * torch.log1p(x * x)
        return torch.sinh(v), log_det.sum(-1)

    def inverse(self, y, detach=False):
        log_delta, skew = self._params(detach)
        x = torch.sinh((torch.asinh(y) + skew) * (-log_delta).exp())
        log_det = -log_delta - 0.5 * torch.log1p(y * y) + 0.5 * torch.log1p(x * x)
        return x, log_det.sum(-1)


def _log_cosh(v):
    """log cosh v without overflow: |v| + log(1 + e^{-2|v|}) - log 2."""
    a = v.abs()
    return a + torch.log1p(torch.exp(-2 * a)) - math.log(2)


def build_layers(d, blocks, num_layers, hidden, generator, dtype) -> nn.ModuleList:
    """The flow's layers: a sinh-arcsinh layer, then ``num_layers`` couplings (masks from
    :func:`masks`) with another sinh-arcsinh layer after every two."""
    layers = [_SinhArcsinh(d, dtype)]
    for k, b in enumerate(masks(d, blocks, num_layers, generator, dtype)):
        layers.append(_Coupling(b, hidden, generator))
        if k % 2 == 1:
            layers.append(_SinhArcsinh(d, dtype))
    return nn.ModuleList(layers)


def _apply(layer, h, detach):
    if detach:
        return torch.nn.functional.linear(h, layer.weight.detach(), layer.bias.detach())
    return layer(h)


def _linear(n_in, n_out, generator, dtype):
    """nn.Linear with PyTorch's default U(±1/√n_in) initialisation drawn from ``generator``
    (zero without one); the global RNG is left as it was."""
    with torch.random.fork_rng(devices=()):
        layer = nn.Linear(n_in, n_out, dtype=dtype)
    bound = 1 / math.sqrt(n_in)
    with torch.no_grad():
        for p in (layer.weight, layer.bias):
            if generator is None:
                p.zero_()
            else:
                p.copy_((torch.rand(p.shape, generator=generator, dtype=dtype) * 2 - 1) * bound)
    return layer


def masks(d: int, blocks, num_layers: int, generator: torch.Generator, dtype) -> list:
    """The layers' masks (1 = kept): in each group of four, two split at a site boundary
    (the coordinates before it kept, then those after it), cycling over the boundaries of
    ``blocks`` ((start, stop) of each latent), and two at a random half; without a site
    boundary (one latent) all are random halves."""
    bounds = [a for a, _ in blocks if 0 < a < d]
    out = []
    for k in range(num_layers):
        b = torch.zeros(d, dtype=dtype)
        if bounds and k % 4 < 2:
            b[: bounds[(k // 4) % len(bounds)]] = 1
            b = 1 - b if k % 2 else b
        else:
            b[torch.randperm(d, generator=generator)[: d // 2]] = 1
        out.append(b)
    return out


class Flow(DrawnDistribution):
    """q(z): z = m + L g(ε), ε ~ N(0, I), g a stack of affine coupling layers (see the
    module docstring). ``loc`` m (D,), ``scale_tril`` L (D, D), ``layers`` the
    ``nn.ModuleList`` of couplings. ``mean`` is the Monte Carlo mean of 4,096 draws
    (seed 0), computed once."""

    has_rsample = True

    def __init__(self, loc: torch.Tensor, scale_tril: torch.Tensor, layers: nn.ModuleList):
        self.loc, self.scale_tril, self.layers = loc, scale_tril, layers
        super().__init__(event_shape=loc.shape, validate_args=False)

    def draw(self, n: int, generator: torch.Generator | None = None, log_q: bool = True):
        """n draws z ``(n, D)`` and their log q(z) ``(n,)`` (None without ``log_q``),
        differentiable in λ."""
        d = self.loc.shape[0]
        eps = randn((n, d), generator, self.loc)  # the fit's generator is a CPU one
        x, log_det = eps, eps.new_zeros(n)
        for layer in self.layers:
            x, s = layer(x, log_q)
            log_det = log_det + s if log_q else None
        z = self.loc + x @ self.scale_tril.T
        return z, self._log_q(eps, -log_det) if log_q else None

    def _log_q(self, eps, log_det):
        """log N(ε; 0, I) - log |det L| + log |det ∂ε/∂x|, ε the base draw of z."""
        d = self.loc.shape[0]
        log_n = -0.5 * (eps * eps).sum(-1) - 0.5 * d * _LOG_2PI
        return log_n - self.scale_tril.diagonal().log().sum() + log_det

    def rsample(self, sample_shape=()):
        shape = torch.Size(sample_shape)
        z, _ = self.draw(max(1, shape.numel()))
        return z[: shape.numel()].reshape(shape + self.event_shape)

    def log_prob(self, value, detach=False):
        """log q(z) by the inverse map: ε = g⁻¹(L⁻¹(z - m)); ``detach``: with λ held
        constant (differentiable in z only)."""
        flat = value.reshape(-1, self.loc.shape[0])
        y = torch.linalg.solve_triangular(self.scale_tril, (flat - self.loc).T, upper=False).T
        log_det = y.new_zeros(y.shape[0])
        for layer in reversed(self.layers):
            y, s = layer.inverse(y, detach)
            log_det = log_det + s
        return self._log_q(y, log_det).reshape(value.shape[:-1])


def fit_flow(
    model,
    loc: torch.Tensor,
    scale_tril: torch.Tensor,
    generator: torch.Generator,
    *,
    num_steps: int = 1500,
    num_layers: int = 8,
    particles: int = 128,
    lr: float = 5e-3,
    tol: float = 0.1,
):
    """Fit the flow on q₀ = N(``loc``, ``scale_tril`` ·ᵀ) to ``model`` (see the module
    docstring). Returns ``(Flow, trace of the per-step ELBO estimates, converged,
    message)``. Converged: the mean ELBO of the last fifth of the steps exceeds that of
    the fifth before by at most ``tol`` nats (KL(q || p) = log p(x) - ELBO fell by no
    more than that), or by no more than two standard errors.

    A step whose ELBO estimate is not finite (a draw where log p(x, z) = -∞) changes
    nothing; 20 such steps in a row, or non-finite parameters, raise
    :class:`NonFiniteObjectiveError` with the step."""
    d = loc.shape[0]
    hidden = min(max(2 * d, 16), 256)
    blocks = [(s.start, s.stop) for s in model.latents]
    layers = build_layers(d, blocks, num_layers, hidden, generator, loc.dtype).to(loc.device)
    q = Flow(loc, scale_tril, layers)
    params = list(layers.parameters())
    opt = _make_optimizer(None, params, lr)  # svi.fit's default: torch's fused Adam
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, num_steps)
    trace, bad = [], 0
    for step in range(1, num_steps + 1):
        z, _ = q.draw(particles, generator, log_q=False)
        log_q = q.log_prob(z, detach=True)  # sticking the landing: no score term
        elbo = (model.log_density(z) - log_q).mean()
        if not bool(torch.isfinite(elbo)):
            bad += 1
            if bad >= 20:
                raise NonFiniteObjectiveError(
                    "the flow's ELBO estimate was not finite for 20 steps in a row", step
                )
            continue
        bad = 0
        opt.zero_grad(set_to_none=True)
        (-elbo).backward()
        opt.step()
        schedule.step()
        trace.append(float(elbo.detach()))
        if step % 100 == 0 and not all(bool(torch.isfinite(p).all()) for p in params):
            raise NonFiniteObjectiveError("the flow's parameters became non-finite", step)
    for p in params:
        p.requires_grad_(False)
    converged, message = _plateau(trace, num_steps, tol)
    return q, trace, converged, message


def _plateau(trace, num_steps, tol):
    """Whether the last fifth of the ELBO estimates rose by at most ``tol`` (or two standard
    errors) over the fifth before."""
    w = len(trace) // 5
    if w < 10:
        return False, f"not converged: {len(trace)} finite steps are too few to tell"
    last = torch.tensor(trace[-w:], dtype=torch.float64)
    before = torch.tensor(trace[-2 * w : -w], dtype=torch.float64)
    rise = float(last.mean() - before.mean())
    se = math.sqrt(float(last.var() / w + before.var() / w))
    if rise <= max(tol, 2 * se):
        return True, (
            f"converged after {num_steps} steps: the ELBO rose {rise:.3g} ± {se:.2g} over the "
            "last fifth"
        )
    return False, (
        f"not converged after {num_steps} steps: the ELBO still rose {rise:.3g} ± {se:.2g} "
        f"over the last fifth (more than {tol:g}); raise num_steps"
    )
