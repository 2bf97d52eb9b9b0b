"""Small per-covariance-type functions shared by EM and CAVI.

Every Gaussian log-density in a mixture is a quadratic form in the datum x_i,

    log N(x_i | μ_k, Λ_k^{-1}) = c_k + x_iᵀ Λ_k μ_k - ½ x_iᵀ Λ_k x_i,
    c_k = ½ log|Λ_k| - D/2 log 2π - ½ μ_kᵀ Λ_k μ_k,

so with the *features* φ(x_i) = [x_i, q(x_i)] (q: the distinct second-order
monomials that the covariance type needs) the log-densities of a chunk of rows
against all K components are ONE matrix product ``F @ W`` (shapes (C, D + T)
and (D + T, K)), and the sufficient statistics of the M-step,

    N_k = Σ_i r_ik,   Σ_i r_ik x_i,   Σ_i r_ik q(x_i),

are ONE more, ``Rᵀ @ F`` (shape (K, D + T)). No (K, N, D) tensor is formed and
no Python loop runs over components. T, the number of second-order features:

=========== ============================= =====================================
type        q(x) (shape (T,))             precision Λ_k
=========== ============================= =====================================
full        x_a x_b for a <= b, T=D(D+1)/2 one (D, D) matrix per component
tied        x_a x_b for a <= b            one (D, D) matrix shared by all
diag        x_a², T = D                   diagonal, (K, D)
spherical   Σ_a x_a², T = 1               λ_k I, (K,)
=========== ============================= =====================================

Data are shifted by a fixed centre before they reach these functions, which keeps
the expanded quadratic forms well conditioned.
"""

from __future__ import annotations

import functools
import math

import torch

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")

__all__ = ["COVARIANCE_TYPES", "DegenerateMixtureWarning"]


class DegenerateMixtureWarning(UserWarning):
    """A component lost its data or its variance; ``reg_covar`` (or a fallback) kept it valid."""


@functools.lru_cache(maxsize=64)
def tri_indices(d: int, device) -> torch.Tensor:
    """Row/column indices (2, D(D+1)/2) of the upper triangle a <= b (cached per D and
    device; never written to)."""
    return torch.triu_indices(d, d, device=device)


def quad_width(cov_type: str, d: int) -> int:
    """T, the number of second-order features for ``cov_type`` in dimension ``d``."""
    if cov_type in ("full", "tied"):
        return d * (d + 1) // 2
    return d if cov_type == "diag" else 1


def features(
    xc: torch.Tensor, cov_type: str, iu: torch.Tensor | None, ones: bool = False
) -> torch.Tensor:
    """φ(x)ᵀ = [x, q(x)]ᵀ for a chunk ``xc`` of shape (C, D); returns (D + T, C), or
    (D + T + 1, C) with a last row of ones when ``ones`` (φ(x) = [x, q(x), 1]).

    Features are rows (the chunk's samples run along the contiguous axis): each block
    of q is written as contiguous rows x_a * x_{a:} (a loop over the D features, not
    over components), and the two products of the pass, ρ = Wᵀ φᵀ (K, C) and
    Rᵀ φ (K, D + T), are plain BLAS calls on them.
    """
    c, d = xc.shape
    t = quad_width(cov_type, d)
    xt = xc.T.contiguous()
    out = torch.empty((d + t + int(ones), c), dtype=xc.dtype, device=xc.device)
    out[:d] = xt
    if ones:
        out[d + t :] = 1.0
    if cov_type in ("full", "tied"):
        o = d
        for a in range(d):
            torch.mul(xt[a : a + 1], xt[a:], out=out[o : o + d - a])
            o += d - a
    elif cov_type == "diag":
        torch.mul(xt, xt, out=out[d : d + t])
    else:
        torch.sum(xt * xt, dim=0, keepdim=True, out=out[d : d + t])
    return out


def sym_from_tri(v: torch.Tensor, d: int, iu: torch.Tensor) -> torch.Tensor:
    """Symmetric matrices (..., D, D) from their upper triangles (..., D(D+1)/2)."""
    m = v.new_zeros(v.shape[:-1] + (d, d))
    m[..., iu[0], iu[1]] = v
    m[..., iu[1], iu[0]] = v
    return m


def quad_weights(prec: torch.Tensor, cov_type: str, d: int, iu) -> torch.Tensor:
    """Coefficients a with x ᵀ Λ x = q(x) · a; shape (K, T) or (T,) for tied."""
    if cov_type in ("full", "tied"):
        a = prec[..., iu[0], iu[1]]
        off = iu[0] != iu[1]
        a = a.clone()
        a[..., off] *= 2.0
        return a
    if cov_type == "diag":
        return prec
    return prec[:, None]


def precision_matrix_times(prec: torch.Tensor, cov_type: str, v: torch.Tensor) -> torch.Tensor:
    """Λ_k v_k for means-like ``v`` of shape (K, D); returns (K, D)."""
    if cov_type == "full":
        return torch.einsum("kab,kb->ka", prec, v)
    if cov_type == "tied":
        return v @ prec
    if cov_type == "diag":
        return prec * v
    return prec[:, None] * v


ILL_DEFINED = (
    "Fitting the mixture model failed because some components have ill-defined empirical "
    "covariance (for instance caused by singleton or collapsed samples). Try to decrease "
    "the number of components, increase reg_covar, or scale the input data."
)


def cholesky_precision(cov: torch.Tensor, cov_type: str):
    """Precision Cholesky factors P (Λ = P Pᵀ, P = L⁻ᵀ with Σ = L Lᵀ) and precisions Λ.

    Shapes: full (K, D, D), tied (D, D), diag (K, D) (P = Σ^{-1/2}), spherical (K,).
    A covariance that is not positive definite (only possible with ``reg_covar`` 0 or
    tiny) raises scikit-learn's ValueError, naming the components.
    """
    if cov_type in ("full", "tied"):
        batch = cov if cov_type == "full" else cov[None]
        chol, info = torch.linalg.cholesky_ex(batch)
        bad = torch.nonzero(info != 0).flatten().tolist()
        if bad:
            raise ValueError(f"{ILL_DEFINED} (component(s) {bad})")
        eye = torch.eye(batch.shape[-1], dtype=cov.dtype, device=cov.device)
        pchol = torch.linalg.solve_triangular(chol, eye.expand_as(chol), upper=False).mT
        prec = pchol @ pchol.mT
        if cov_type == "tied":
            return pchol[0], prec[0]
        return pchol, prec
    bad = torch.nonzero((cov <= 0).reshape(cov.shape[0], -1).any(-1)).flatten().tolist()
    if bad:
        raise ValueError(f"{ILL_DEFINED} (component(s) {bad})")
    return cov.rsqrt(), 1.0 / cov


def log_det_cholesky(pchol: torch.Tensor, cov_type: str, d: int) -> torch.Tensor:
    """log|Λ_k| (K,) for full/diag/spherical, scalar for tied."""
    if cov_type in ("full", "tied"):
        return 2.0 * pchol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    if cov_type == "diag":
        return 2.0 * pchol.log().sum(-1)
    return 2.0 * d * pchol.log()


def precisions_from_cholesky(pchol: torch.Tensor, cov_type: str) -> torch.Tensor:
    """Λ = P Pᵀ (full/tied) or P² (diag/spherical)."""
    if cov_type in ("full", "tied"):
        return pchol @ pchol.mT
    return pchol * pchol


def covariances_from_precisions(prec: torch.Tensor, cov_type: str) -> torch.Tensor:
    """Σ = Λ^{-1}, by Cholesky for full/tied."""
    if cov_type in ("full", "tied"):
        return torch.cholesky_inverse(torch.linalg.cholesky(prec))
    return 1.0 / prec


def covariances_from_stats(
    nk: torch.Tensor,
    means: torch.Tensor,
    s2: torch.Tensor,
    cov_type: str,
    reg_covar: float,
    iu,
) -> torch.Tensor:
    """Weighted maximum-likelihood covariances from the statistics, plus ``reg_covar``.

    Σ_k = (Σ_i r_ik q(x_i)) / N_k - q(μ_k) + reg_covar, with ``s2`` the second-order
    statistic of shape (K, T) (full, diag, spherical) or (T,) (tied: Σ_i q(x_i)).
    Shapes of the result: full (K, D, D), tied (D, D), diag (K, D), spherical (K,).
    """
    k, d = means.shape
    if cov_type == "full":
        second = sym_from_tri(s2 / nk[:, None], d, iu)
        cov = second - means[:, :, None] * means[:, None, :]
        cov.diagonal(dim1=-2, dim2=-1).add_(reg_covar)
        return cov
    if cov_type == "tied":
        second = sym_from_tri(s2, d, iu)
        cov = (second - (nk[:, None] * means).mT @ means) / nk.sum()
        cov.diagonal().add_(reg_covar)
        return cov
    if cov_type == "diag":
        return s2 / nk[:, None] - means * means + reg_covar
    return (s2.reshape(-1) / nk - (means * means).sum(1)) / d + reg_covar


def raw_variance_floor_report(cov: torch.Tensor, cov_type: str, reg_covar: float) -> list[int]:
    """Components whose variance along some axis collapsed to (about) ``reg_covar``."""
    if cov_type == "tied":
        return []
    if cov_type == "full":
        var = cov.diagonal(dim1=-2, dim2=-1)
    elif cov_type == "diag":
        var = cov
    else:
        var = cov[:, None]
    tiny = reg_covar * (1.0 + 1e-6) + 8 * torch.finfo(cov.dtype).eps * var.abs().amax()
    return torch.nonzero((var <= tiny).any(-1)).flatten().tolist()


def n_parameters(cov_type: str, k: int, d: int) -> int:
    """Free parameters of a K-component mixture in dimension D (for BIC/AIC)."""
    cov = {
        "full": k * d * (d + 1) / 2.0,
        "diag": k * d,
        "tied": d * (d + 1) / 2.0,
        "spherical": k,
    }[cov_type]
    return int(cov + k * d + k - 1)


LOG_2PI = math.log(2.0 * math.pi)
