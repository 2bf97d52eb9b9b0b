"""The chunked E-step, as pure functions of the data and the coefficients of ρ.

For EM and CAVI alike the log-responsibilities are

    ρ_ik = const_k - ½ (x_i - μ_k)ᵀ Λ_k (x_i - μ_k),     Λ_k = P_k P_kᵀ,

with const_k from the model (log π_k + ½ log|Λ_k| + ..., or its expectation under q).
One of three records holds them in the form the pass evaluates fastest:

* :class:`Quadratic` (full, diag, spherical): ρ_ki = (Wᵀ φ(x_i))_k with the features
  φ(x) = [x, q(x), 1] (see :mod:`._covariance`) and Wᵀ = [Λ_k μ_k, -½ a_k, c_k]
  (K, D + T + 1), c_k = const_k - ½ μ_kᵀ Λ_k μ_k: ONE product per chunk for all K
  components, with no separate pass to add c; the statistics Rᵀ φ (K, D + T + 1) then
  hold N_k in their last column;
* :class:`Tied`: the quadratic part -½ q(x)·a is shared by all k;
* :class:`Blocks` (full, K < (D + 1)/4): the residuals x_i P_k - μ_k P_k of all K
  components from ONE product x [P_1 ... P_K] (C, K·D), then sums of squares.

:func:`e_step` runs one pass over the rows in chunks and returns the sufficient
statistics (:class:`Statistics`) and Σ_i log Σ_k exp(ρ_ik); memory per chunk is
O(C x (K + D + T)) (blocks: O(C·K·D)); no (K, N, D) tensor is formed. All coordinates
are shifted by a fixed centre ``shift`` (D,), which keeps the expanded quadratic forms
well conditioned for data far from the origin.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from varbayes.mixture import _covariance as cv

__all__ = [
    "Blocks",
    "Quadratic",
    "Statistics",
    "Tied",
    "coefficients",
    "e_step",
    "iter_log_rho",
    "log_floor",
]

AllReduce = Callable[[list[torch.Tensor]], list[torch.Tensor]] | None


@dataclass(frozen=True)
class Statistics:
    """Sufficient statistics of responsibilities r_ik, in shifted coordinates.

    nk: N_k = Σ_i r_ik (K,); xbar_sum: Σ_i r_ik x_i (K, D); s2: Σ_i r_ik q(x_i) (K, T),
    or Σ_i q(x_i) (T,) for the tied type.
    """

    nk: torch.Tensor
    xbar_sum: torch.Tensor
    s2: torch.Tensor

    def scaled(self, factor: float) -> Statistics:
        return Statistics(self.nk * factor, self.xbar_sum * factor, self.s2 * factor)

    def blend(self, new: Statistics, rho: float) -> Statistics:
        """(1 - ρ) self + ρ new: a stochastic-approximation step on the statistics."""
        return Statistics(
            *((1.0 - rho) * a + rho * b for a, b in zip(self.tensors(), new.tensors(), strict=True))
        )

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.nk, self.xbar_sum, self.s2


@dataclass(frozen=True)
class Quadratic:
    """ρ (K, C) = Wᵀ (K, D + T + 1) φᵀ (D + T + 1, C), c in Wᵀ's last column."""

    wt: torch.Tensor

    def log_rho(self, ft: torch.Tensor) -> torch.Tensor:
        return self.wt @ ft


@dataclass(frozen=True)
class Tied:
    """ρ (K, C) = c (K,) + (Λ μ_k)ᵀ (K, D) xᵀ + (-½ a) (T,) · q(x) shared by all k."""

    lam_mu: torch.Tensor
    c: torch.Tensor
    half_a: torch.Tensor

    def log_rho(self, ft: torch.Tensor) -> torch.Tensor:
        d = self.lam_mu.shape[1]
        out = torch.addmm(self.c[:, None], self.lam_mu, ft[:d])
        out += (self.half_a @ ft[d:])[None, :]
        return out


@dataclass(frozen=True)
class Blocks:
    """ρ_ki = const_k - ½ |x_i P_k - μ_k P_k|², with P = [P_1 ... P_K] (D, K·D) and
    b = [μ_1 P_1 ... μ_K P_K] (K·D,)."""

    p_all: torch.Tensor
    b: torch.Tensor
    const: torch.Tensor

    def log_rho(self, xc: torch.Tensor) -> torch.Tensor:
        """ρ (K, C) for shifted rows ``xc`` (C, D)."""
        c, d = xc.shape
        y = torch.addmm(self.b, xc, self.p_all, alpha=1.0, beta=-1.0)  # (C, K·D)
        maha = y.square_().view(c, -1, d).sum(-1)  # (C, K)
        return maha.mul_(-0.5).add_(self.const).T


Coefficients = Quadratic | Tied | Blocks


def use_blocks(cov_type: str, k: int, d: int) -> bool:
    """Full covariances with K < (D + 1) / 4 use :class:`Blocks`.

    Its elementwise work per row is K·D against D + D(D + 1)/2 for the features; it is
    also the more accurate one (the Mahalanobis terms are sums of squares).
    """
    return cov_type == "full" and 4 * k < d + 1


def coefficients(
    cov_type: str,
    const: torch.Tensor,
    means: torch.Tensor,
    prec: torch.Tensor,
    pchol: torch.Tensor,
    iu: torch.Tensor,
) -> Coefficients:
    """The record for ρ_ik = const_k - ½ (x_i - μ_k)ᵀ Λ_k (x_i - μ_k) (shifted μ (K, D),
    Λ and P in the shapes of ``cov_type``)."""
    k, d = means.shape
    if use_blocks(cov_type, k, d):
        p_all = pchol.permute(1, 0, 2).reshape(d, k * d).contiguous()
        b = torch.einsum("ka,kab->kb", means, pchol).reshape(-1)
        return Blocks(p_all, b, const)
    lam_mu = cv.precision_matrix_times(prec, cov_type, means)
    c = const - 0.5 * (means * lam_mu).sum(1)
    a = cv.quad_weights(prec, cov_type, d, iu)
    if cov_type == "tied":
        return Tied(lam_mu.contiguous(), c, -0.5 * a)
    return Quadratic(torch.cat([lam_mu, -0.5 * a, c[:, None]], 1).contiguous())


def log_floor(dtype: torch.dtype) -> float:
    """f = log(smallest normal number) + 8: about -79 in float32, -700 in float64."""
    return math.log(torch.finfo(dtype).tiny) + 8.0


def _normalise(r: torch.Tensor) -> torch.Tensor:
    """r (K, C) ← softmax over k, in place; returns Σ_i log Σ_k exp(ρ_ik) of the chunk.

    ρ_ik - max_k ρ_ik is clamped from below at f = :func:`log_floor` before the exponential:
    torch's vectorised exp takes a path about ten times slower for arguments where it
    underflows (3.2M float32 values in (-300, 0) took 41 ms, in (-50, 0) 4 ms; float32 EM
    at N = 1e5, D = 16, K = 32 spent half its iteration there, and float64 does the same
    on well-separated clusters). e^f is below the largest term (1) by more than 10^30, so
    no sum changes to the last digit; a component whose N_k is at most 2 e^f N is empty.
    """
    m = r.amax(0, keepdim=True)
    r.sub_(m).clamp_(min=log_floor(r.dtype)).exp_()
    s = r.sum(0, keepdim=True)
    r.div_(s)
    return m.sum() + s.log().sum()


def e_step(
    x: torch.Tensor,
    coef: Coefficients | None,
    *,
    cov_type: str,
    k: int,
    shift: torch.Tensor,
    iu: torch.Tensor,
    chunk: int,
    allreduce: AllReduce = None,
    resp: torch.Tensor | None = None,
    cache: list | None = None,
) -> tuple[Statistics, torch.Tensor]:
    """One pass over the rows ``x`` (N, D): the statistics of r_ik and Σ_i log Σ_k exp(ρ_ik).

    With ``resp`` (labels (N,) or responsibilities (N, K)) the E-step is skipped and the
    statistics of those responsibilities are returned (initialisation). ``cache`` (a
    list) keeps the chunks' features φ(x) across calls. ``allreduce`` sums the
    statistics over processes holding shards of the rows.
    """
    if resp is None and isinstance(coef, Blocks):
        return _e_step_blocks(x, coef, k=k, shift=shift, iu=iu, chunk=chunk, allreduce=allreduce)
    d = x.shape[1]
    t = cv.quad_width(cov_type, d)
    tied = cov_type == "tied"
    g = x.new_zeros((k, d if tied else d + t + 1))  # + 1: N_k from φ's row of ones
    nk, s2 = (x.new_zeros(k), x.new_zeros(t)) if tied else (None, None)
    total = x.new_zeros(())
    for j, a in enumerate(range(0, x.shape[0], chunk)):
        if cache is not None and j < len(cache):
            ft = cache[j]
        else:
            ft = cv.features(x[a : a + chunk] - shift, cov_type, iu, ones=not tied)
            if cache is not None:
                cache.append(ft)
        if resp is None:
            r = coef.log_rho(ft)
            total += _normalise(r)
        elif resp.ndim == 1:
            r = torch.nn.functional.one_hot(resp[a : a + chunk], k).to(x.dtype).T
        else:
            r = resp[a : a + chunk].T
        if tied:
            nk += r.sum(1)
            g.addmm_(r, ft[:d].T)  # the first d rows of φᵀ are xᵀ
            s2 += ft[d:].sum(1)
        else:
            g.addmm_(r, ft.T)
    out = [g, total] + ([nk, s2] if tied else [])
    if allreduce is not None:
        out = allreduce(out)
    g, total = out[0], out[1]
    if tied:
        return Statistics(out[2], g, out[3]), total
    return Statistics(g[:, -1], g[:, :d], g[:, d : d + t]), total


def _e_step_blocks(x, coef: Blocks, *, k, shift, iu, chunk, allreduce):
    """:func:`e_step` in the per-component form (full Σ): N_k and Σ_i r_ik x_i from Rᵀ x,
    and the second moments of all K components from ONE product
    xᵀ [r_i1 x_i, ..., r_iK x_i] (D, K·D). Memory O(C·K·D) per chunk."""
    d = x.shape[1]
    nk = x.new_zeros(k)
    g = x.new_zeros((k, d))
    m2 = x.new_zeros((d, k * d))
    total = x.new_zeros(())
    for a in range(0, x.shape[0], chunk):
        xc = x[a : a + chunk] - shift
        r = coef.log_rho(xc)  # (K, C)
        total += _normalise(r)
        nk += r.sum(1)
        g.addmm_(r, xc)
        xr = (r.T[:, :, None] * xc[:, None, :]).view(xc.shape[0], k * d)
        m2.addmm_(xc.T, xr)
    if allreduce is not None:
        nk, g, m2, total = allreduce([nk, g, m2, total])
    s2 = m2.view(d, k, d).permute(1, 0, 2)[:, iu[0], iu[1]]  # (K, T)
    return Statistics(nk, g, s2), total


def iter_log_rho(
    x: torch.Tensor,
    coef: Coefficients,
    *,
    cov_type: str,
    shift: torch.Tensor,
    iu: torch.Tensor,
    chunk: int,
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Yield (start, stop, ρ (C, K)) over chunks of the rows ``x``."""
    for a in range(0, x.shape[0], chunk):
        xc = x[a : a + chunk] - shift
        if isinstance(coef, Blocks):
            yield a, a + xc.shape[0], coef.log_rho(xc).T
        else:
            ft = cv.features(xc, cov_type, iu, ones=isinstance(coef, Quadratic))
            yield a, a + xc.shape[0], coef.log_rho(ft).T
