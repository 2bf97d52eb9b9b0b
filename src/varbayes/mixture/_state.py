"""Named records of a mixture's state: the data summary, EM's θ and the variational q(θ).

Notation (the post's): data x_i (i = 1..N, D features), assignments z_i ∈ {1..K},
parameters θ = (π, μ, Σ). Every record is frozen; a step returns a new one
(``dataclasses.replace``).

All locations are in *shifted* coordinates: the data enter the E- and M-steps as
x_i - c with a fixed centre c (``shift``, the mean of the data of the fit that
initialised the state), which keeps the expanded quadratic forms of the E-step well
conditioned far from the origin. The fitted attributes add c back (``means_ = means +
shift``).

Covariance-shaped fields take the shape of the covariance type:
full (K, D, D), tied (D, D), diag (K, D), spherical (K,).

:meth:`_Record.tensors` and :meth:`_Record.from_tensors` map a record to the flat
``name -> tensor`` dict of a saved model (``state.<name>`` in ``model.safetensors``,
see :mod:`varbayes.mixture.io`); each field's saved name is fixed by its ``saved``
metadata, so files written before these records existed still load.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from varbayes.mixture import _covariance as cv
from varbayes.mixture._estep import Statistics

__all__ = [
    "DataSummary",
    "EMInit",
    "EMParameters",
    "Gaussians",
    "NormalWishartPrior",
    "Stream",
    "VariationalPosterior",
]


def _saved(name: str):
    """A tensor field saved as ``state.<name>``."""
    return field(metadata={"saved": name})


def _nested(record_type):
    """A field holding another record, saved as that record's tensors (flattened)."""
    return field(metadata={"record": record_type})


class _Record:
    """Conversion of a frozen dataclass of tensors to and from its saved tensors."""

    def tensors(self) -> dict[str, torch.Tensor]:
        """Saved name -> tensor, nested records flattened."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if "record" in f.metadata:
                out.update(value.tensors())
            else:
                out[f.metadata.get("saved", f.name)] = value
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]):
        """The record from saved name -> tensor (the inverse of :meth:`tensors`)."""
        kw = {}
        for f in dataclasses.fields(cls):
            if "record" in f.metadata:
                kw[f.name] = f.metadata["record"].from_tensors(tensors)
            else:
                kw[f.name] = tensors[f.metadata.get("saved", f.name)]
        return cls(**kw)


@dataclass(frozen=True)
class DataSummary:
    """The fixed summary of the data x (N, D) of one fit, computed once before the loop.

    n : float
        N, the number of rows (over all processes when the data are sharded).
    mean : (D,)
        x̄ = (1/N) Σ_i x_i, the centre c by which a new state shifts the data.
    cov : (D, D)
        The pooled covariance (1/N) Σ_i (x_i - x̄)(x_i - x̄)ᵀ, used for components that
        lose their data and for the default prior W₀⁻¹ of the variational mixture.
    """

    n: float
    mean: torch.Tensor
    cov: torch.Tensor

    @property
    def d(self) -> int:
        """D, the number of features."""
        return self.mean.shape[0]

    @property
    def iu(self) -> torch.Tensor:
        """Indices (2, D(D+1)/2) of the upper triangle a <= b (the features q(x))."""
        return cv.tri_indices(self.d, self.mean.device)


@dataclass(frozen=True)
class Gaussians(_Record):
    """The Gaussian part of a mixture's state: what the E-step, prediction and sampling need.

    shift : (D,)
        c, the centre of the shifted coordinates.
    means : (K, D)
        μ_k - c (EM), or the posterior mean m_k - c of q(μ_k) (variational).
    covariances : covariance-shaped
        Σ_k (EM), or E_q[Λ_k]⁻¹ = (ν_k W_k)⁻¹ (variational).
    precisions : covariance-shaped
        Λ_k = Σ_k⁻¹ (EM), or E_q[Λ_k] = ν_k W_k (variational).
    precisions_cholesky : covariance-shaped
        P_k with precisions Λ_k = P_k P_kᵀ (full, tied: upper triangular P = L⁻ᵀ for
        covariances L Lᵀ; diag, spherical: Λ_k^{1/2}).
    """

    shift: torch.Tensor = _saved("shift")
    means: torch.Tensor = _saved("means")
    covariances: torch.Tensor = _saved("cov")
    precisions: torch.Tensor = _saved("prec")
    precisions_cholesky: torch.Tensor = _saved("pchol")

    @property
    def d(self) -> int:
        """D, the number of features."""
        return self.means.shape[1]

    @property
    def iu(self) -> torch.Tensor:
        """Indices (2, D(D+1)/2) of the upper triangle a <= b (the features q(x))."""
        return cv.tri_indices(self.d, self.means.device)


@dataclass(frozen=True)
class EMParameters(Gaussians):
    """θ = (π, μ, Σ) of :class:`~varbayes.mixture.GaussianMixture`, with the fields of
    :class:`Gaussians` and

    weights : (K,)
        π_k, the mixing weights (Σ_k π_k = 1).
    """

    weights: torch.Tensor = _saved("weights")


@dataclass(frozen=True)
class NormalWishartPrior(_Record):
    """The prior p(π) p(μ, Λ) of :class:`~varbayes.mixture.VariationalGaussianMixture`.

    alpha0 : ()
        α₀, the concentration of Dirichlet(α₀ 1) or of the sticks Beta(1, α₀).
    beta0 : ()
        β₀, the precision scale of μ_k | Λ_k ~ N(m₀, (β₀ Λ_k)⁻¹).
    m0 : (D,)
        m₀ - c, the prior mean, shifted.
    nu0 : ()
        ν₀ > D - 1, the degrees of freedom of Λ_k ~ Wishart(W₀, ν₀).
    cov0 : full, tied (D, D); diag (D,); spherical ()
        W₀⁻¹, the inverse scale of the Wishart prior (``covariance_prior``).
    """

    alpha0: torch.Tensor = _saved("alpha0")
    beta0: torch.Tensor = _saved("beta0")
    m0: torch.Tensor = _saved("m0")
    nu0: torch.Tensor = _saved("nu0")
    cov0: torch.Tensor = _saved("cov0")


@dataclass(frozen=True)
class VariationalPosterior(Gaussians):
    """q(π) Π_k q(μ_k | Λ_k) q(Λ_k) of the variational mixture, with the fields of
    :class:`Gaussians` (``means`` m_k - c, ``precisions`` ν_k W_k, ...) and

    weight_concentration : (2, K) or (K,)
        q(π): the Beta (a_k, b_k) of each stick (Dirichlet process), or Dirichlet α_k.
    mean_precision : (K,)
        β_k of q(μ_k | Λ_k) = N(m_k, (β_k Λ_k)⁻¹).
    degrees_of_freedom : (K,), or () for tied
        ν_k of q(Λ_k) = Wishart(W_k, ν_k) (tied: the one ν of the shared q(Λ)).
    nk : (K,)
        N_k = Σ_i r_ik of the responsibilities the factors were updated from.
    prior : NormalWishartPrior
        The prior, fixed during a fit.
    """

    weight_concentration: torch.Tensor = _saved("wc")
    mean_precision: torch.Tensor = _saved("beta")
    degrees_of_freedom: torch.Tensor = _saved("nu")
    nk: torch.Tensor = _saved("nk")
    prior: NormalWishartPrior = _nested(NormalWishartPrior)


@dataclass(frozen=True)
class EMInit:
    """The validated ``*_init`` arrays of a :class:`~varbayes.mixture.GaussianMixture`
    (None: computed from ``init_params``), in the compute dtype and device.

    weights : (K,) or None
        π_k.
    means : (K, D) or None
        μ_k, not shifted.
    precisions, precisions_cholesky : covariance-shaped or None
        Λ_k and P_k with Λ_k = P_k P_kᵀ (both given or both None).
    """

    weights: torch.Tensor | None = None
    means: torch.Tensor | None = None
    precisions: torch.Tensor | None = None
    precisions_cholesky: torch.Tensor | None = None

    @property
    def complete(self) -> bool:
        """Whether every parameter is given (no initial E-step is needed)."""
        return not any(v is None for v in (self.weights, self.means, self.precisions))


@dataclass(frozen=True)
class Stream:
    """The running state of ``partial_fit`` (stepwise EM / stochastic VI).

    t : int
        Steps taken so far.
    summary : DataSummary
        The summary of the first batch (its mean is the centre c of the state).
    stats : Statistics or None
        s_t, the blended sufficient statistics per datum (None before the first step).
    rows : float
        Rows seen so far, over all processes.
    """

    t: int
    summary: DataSummary
    stats: Statistics | None
    rows: float
