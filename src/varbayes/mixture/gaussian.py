"""Gaussian mixture fitted by expectation-maximisation (EM).

Model: z_i ~ Categorical(π), x_i | z_i = k ~ N(μ_k, Σ_k), θ = (π, μ, Σ).

EM maximises the ELBO over q(z) and θ in turn:

* E-step: r_ik = q(z_i = k) = π_k N(x_i | μ_k, Σ_k) / Σ_j π_j N(x_i | μ_j, Σ_j). After it
  KL(q || p(z | x, θ)) = 0, so the ELBO equals the log-likelihood
  log p(x | θ) = Σ_i log Σ_k π_k N(x_i | μ_k, Σ_k).
* M-step: weighted maximum likelihood from N_k = Σ_i r_ik,
  π_k = N_k / N,  μ_k = Σ_i r_ik x_i / N_k,
  Σ_k = Σ_i r_ik (x_i - μ_k)(x_i - μ_k)ᵀ / N_k + reg_covar I.

Each step cannot decrease the ELBO, so the log-likelihood after each E-step never falls
(the monitor checks it on every iteration).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from varbayes.mixture import _covariance as cv
from varbayes.mixture._base import COMMON_PARAMETERS, BaseMixture
from varbayes.mixture._estep import Statistics, log_floor
from varbayes.mixture._state import DataSummary, EMInit, EMParameters

__all__ = ["GaussianMixture"]


class GaussianMixture(BaseMixture):
    """Gaussian mixture model fitted by EM, with scikit-learn's estimator API.

    Parameters
    ----------
    n_components : int
        K, the number of mixture components.
    covariance_type : {"full", "tied", "diag", "spherical"}
        Form of Σ_k: full (K, D, D); one shared (D, D); diagonal (K, D); λ_k I (K,).
    tol : float
        Stop when the ELBO per datum (the mean log-likelihood) changes by less than tol.
    reg_covar : float
        Added to the diagonal of every Σ_k, keeping it positive definite.
    max_iter : int
        Largest number of EM iterations per initialisation.
    n_init : int
        Number of initialisations; the one with the largest final ELBO is kept.
    init_params : {"kmeans", "k-means++", "random", "random_from_data"}
        How the initial responsibilities r_ik are drawn (see :mod:`varbayes.mixture._init`).
    weights_init, means_init, precisions_init : array-like, optional
        Initial π (K,), μ (K, D) and precisions Λ = Σ⁻¹ (shapes of ``covariances_``).
        Given ones replace the ones computed from ``init_params``; they are never
        overwritten by ``fit``.
    random_state : None, int, numpy.random.RandomState or Generator, or torch.Generator
        Seed of every random draw (initialisation, :meth:`sample`). An int or a
        ``RandomState`` draws scikit-learn's own numbers in its order (greedy k-means++,
        then Lloyd), so the same seed gives scikit-learn's initial clusters and fit.
    warm_start : bool
        Start ``fit`` from the previous solution (``n_init`` is then 1).
    verbose : int
        > 0 shows a progress bar with the current ELBO.
    device, dtype :
        Where and in which precision to compute (default CPU, float64).
    chunk_size : int, optional
        Rows per chunk of the E-step (default: about 4 MiB of features and
        log-responsibilities per chunk); memory is O(chunk_size x (K + D²)) besides the
        data, plus the features of all rows, N (D + T + 1) values with T the width of
        the second-order terms (D(D + 1)/2 for full and tied), which are kept across
        iterations when they take at most 256 MiB (N = 1e5, D = 16, full: 122 MB; full
        covariances with K < (D + 1)/4 use per-component residuals and keep nothing).
    distributed : bool
        Under an initialised ``torch.distributed`` process group, treat X as this
        process's shard and all-reduce the statistics (see :mod:`.distributed`).
    learning_decay, learning_offset : float
        κ ∈ (0.5, 1] and τ₀ >= 0 of the step size ρ_t = (t + τ₀)^(-κ) of :meth:`partial_fit`.

    Attributes
    ----------
    weights_ (K,), means_ (K, D), covariances_, precisions_, precisions_cholesky_ :
        Fitted parameters (torch tensors). ``precisions_cholesky_`` P satisfies Λ = P Pᵀ.
    converged_ : bool
    n_iter_ : int
    lower_bound_ : float
        The ELBO per datum (= mean log-likelihood) at the last E-step of the best run.
    lower_bounds_ : list of float
        The ELBO per datum after every E-step of the best run (the whole trace).
    """

    _parameter_table = {
        **COMMON_PARAMETERS,
    }
    _state_type = EMParameters

    def __init__(
        self,
        n_components: int = 1,
        *,
        covariance_type: str = "full",
        tol: float = 1e-3,
        reg_covar: float = 1e-6,
        max_iter: int = 100,
        n_init: int = 1,
        init_params: str = "kmeans",
        weights_init=None,
        means_init=None,
        precisions_init=None,
        random_state=None,
        warm_start: bool = False,
        verbose: int = 0,
        device=None,
        dtype=None,
        chunk_size: int | None = None,
        distributed: bool = False,
        learning_decay: float = 0.7,
        learning_offset: float = 10.0,
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.device = device
        self.dtype = dtype
        self.chunk_size = chunk_size
        self.distributed = distributed
        self.learning_decay = learning_decay
        self.learning_offset = learning_offset

    # ------------------------------------------------------------------ init
    def _state_shapes(self, d: int) -> dict[str, tuple]:
        return {**super()._state_shapes(d), "weights": (self.n_components,)}

    def _init_array(self, value, name: str, shape: tuple) -> torch.Tensor:
        """A ``*_init`` array as a finite tensor of ``shape`` (scikit-learn's messages)."""
        t = self._as_param(value, name)
        if tuple(t.shape) != shape:
            raise ValueError(
                f"The parameter '{name}' should have the shape of {shape}, but got {tuple(t.shape)}"
            )
        return t

    def _check_init_shapes(self, d: int) -> None:
        k, ct = self.n_components, self.covariance_type
        w = means = p = chol = None
        if self.weights_init is not None:
            w = self._init_array(self.weights_init, "weights", (k,))
            if bool((w < 0).any()) or bool((w > 1).any()):
                raise ValueError(
                    "The parameter 'weights' should be in the range [0, 1], but got "
                    f"max value {float(w.min()):.5f}, min value {float(w.max()):.5f}"
                )
            atol = 1e-6 if w.dtype == torch.float32 else 1e-8
            if abs(1.0 - float(w.sum())) > atol:
                raise ValueError(
                    "The parameter 'weights' should be normalized, but got "
                    f"sum(weights) = {float(w.sum()):.5f}"
                )
        if self.means_init is not None:
            means = self._init_array(self.means_init, "means", (k, d))
        if self.precisions_init is not None:
            p = self._init_array(self.precisions_init, f"{ct} precision", self._precision_shape(d))
            if ct in ("full", "tied"):
                sym = torch.allclose(p, p.mT, rtol=1e-5, atol=1e-8)
                chol, info = torch.linalg.cholesky_ex(p)
                if not sym or bool((info != 0).any()):
                    raise ValueError(f"'{ct} precision' should be symmetric, positive-definite")
            else:
                if bool((p <= 0).any()):
                    raise ValueError(f"'{ct} precision' should be positive")
                chol = p.sqrt()
        self._inits = EMInit(weights=w, means=means, precisions=p, precisions_cholesky=chol)

    def _initial_state(self, x, summary: DataSummary, draws) -> EMParameters:
        """θ from ``init_params`` (one M-step from the initial responsibilities), with
        the given ``*_init`` arrays in place of the computed ones."""
        shift, inits = summary.mean, self._inits
        if inits.complete:
            return EMParameters(
                shift=shift,
                means=inits.means - shift,
                covariances=cv.covariances_from_precisions(inits.precisions, self.covariance_type),
                precisions=inits.precisions,
                precisions_cholesky=inits.precisions_cholesky,
                weights=inits.weights,
            )
        resp = self._initial_resp(x, draws, shift)
        stats, _ = self._pass(x, None, resp=resp, shift=shift)
        state = self._m_step(stats, shift, summary)
        given = {}
        if inits.weights is not None:
            given["weights"] = inits.weights
        if inits.means is not None:
            given["means"] = inits.means - shift
        if inits.precisions is not None:
            given["precisions"] = inits.precisions
            given["precisions_cholesky"] = inits.precisions_cholesky
            given["covariances"] = cv.covariances_from_precisions(
                inits.precisions, self.covariance_type
            )
        return dataclasses.replace(state, **given)

    # ------------------------------------------------------------------ steps
    def _rho_constant(self, st: EMParameters) -> torch.Tensor:
        """const_k = log π_k + ½ log|Λ_k| - D/2 log 2π, so that
        ρ_ik = const_k - ½ (x_i - μ_k)ᵀ Λ_k (x_i - μ_k) = log π_k N(x_i | μ_k, Σ_k)."""
        d = st.d
        logdet = cv.log_det_cholesky(st.precisions_cholesky, self.covariance_type, d)
        return st.weights.log() + 0.5 * logdet - 0.5 * d * cv.LOG_2PI

    def _m_step(self, stats: Statistics, shift: torch.Tensor, summary: DataSummary):
        """θ = argmax_θ Σ_ik r_ik log π_k N(x_i | μ_k, Σ_k) from the statistics (in the
        coordinates shifted by ``shift``); ``summary`` gives the pooled covariance that
        a component without data takes."""
        ct, d = self.covariance_type, shift.shape[0]
        iu = cv.tri_indices(d, shift.device)
        eps = torch.finfo(self._dtype).eps
        nk_raw = stats.nk
        nk = nk_raw + 10 * eps
        means = stats.xbar_sum / nk[:, None]
        cov = cv.covariances_from_stats(nk, means, stats.s2, ct, self.reg_covar, iu)
        # only N_k at the E-step's floor (every r_ik <= e^f, see _estep._normalise): tiny
        # but larger N_k still give exact weighted averages, as in scikit-learn
        empty = nk_raw <= 2 * math.exp(log_floor(self._dtype)) * nk_raw.sum()
        if bool(empty.any()):
            self._warn_once(
                "empty",
                f"component(s) {torch.nonzero(empty).flatten().tolist()} received no data "
                "(N_k = 0); they were moved to the centre of the data with its covariance "
                "and keep a weight near 0",
            )
            means = torch.where(empty[:, None], torch.zeros_like(means), means)
            if ct != "tied":
                eye = torch.eye(d, dtype=cov.dtype, device=cov.device)
                pooled = summary.cov.to(cov.device) + self.reg_covar * eye
                fill = {
                    "full": pooled,
                    "diag": pooled.diagonal(),
                    "spherical": pooled.diagonal().mean(),
                }[ct]
                shape = (-1,) + (1,) * (cov.ndim - 1)
                cov = torch.where(empty.view(shape), fill, cov)
        collapsed = [
            k for k in cv.raw_variance_floor_report(cov, ct, self.reg_covar) if not empty[k]
        ]
        if collapsed and self.reg_covar == 0:
            raise ValueError(f"{cv.ILL_DEFINED} (component(s) {collapsed})")
        if collapsed:
            self._warn_once(
                "collapsed",
                f"component(s) {collapsed} have zero variance along some feature "
                "(duplicated points or a constant feature); their covariance is "
                f"reg_covar={self.reg_covar:g} there",
            )
        pchol, prec = cv.cholesky_precision(cov, ct)
        return EMParameters(
            shift=shift,
            means=means,
            covariances=cov,
            precisions=prec,
            precisions_cholesky=pchol,
            weights=nk / nk.sum(),
        )

    def _update(self, stats: Statistics, st: EMParameters, summary: DataSummary):
        """The M-step from the state ``st`` (its centre is kept)."""
        return self._m_step(stats, st.shift, summary)

    def _elbo(self, lse, st: EMParameters):
        """After the E-step the ELBO is the log-likelihood Σ_i log Σ_k exp(ρ_ik)."""
        return lse

    def _weights(self, st: EMParameters) -> torch.Tensor:
        return st.weights

    def _attributes(self, st: EMParameters) -> dict:
        """The fitted attributes (as tensors) from the state."""
        return {
            "weights_": st.weights,
            "means_": st.means + st.shift,
            "covariances_": st.covariances,
            "precisions_cholesky_": st.precisions_cholesky,
            "precisions_": st.precisions,
        }

    # ------------------------------------------------------------------ online EM
    def partial_fit(self, X, y=None):
        """One step of stepwise (online) EM on the minibatch X (B, D); returns ``self``.

        With ŝ the sufficient statistics of the batch per datum (Σ_i r_ik,
        Σ_i r_ik x_i, Σ_i r_ik q(x_i), divided by B) under the current θ, the running
        statistics are blended and the M-step is taken from them:

            s_t = (1 - ρ_t) s_{t-1} + ρ_t ŝ_t,  ρ_t = (t + τ₀)^(-κ),  θ_t = M(s_t),

        with κ = ``learning_decay`` ∈ (0.5, 1] and τ₀ = ``learning_offset`` (Σ ρ_t = ∞,
        Σ ρ_t² < ∞: the Robbins-Monro conditions; Cappé & Moulines 2009). The first
        call (t = 0) initialises θ from its batch (``init_params`` / ``*_init``) and
        takes ρ_0 = 1. Use batches of at least a few times K rows. The per-datum
        log-likelihood of each batch (before its step) is appended to ``lower_bounds_``.
        ``fit`` starts afresh (it forgets the running statistics).
        """
        return self._partial_fit(X, None)

    def _online_step(self, s: Statistics, n_samples, st: EMParameters, summary: DataSummary):
        """θ = M(s_t) from the blended statistics per datum (N does not enter)."""
        return self._update(s, st, summary)

    # ------------------------------------------------------------------ model criteria
    def _n_parameters(self) -> int:
        return cv.n_parameters(self.covariance_type, self.n_components, self.n_features_in_)

    def bic(self, X) -> float:
        """Bayesian information criterion −2 log p(X | θ) + p log N (lower is better)."""
        self._check_fitted()
        n = self._check_X(X, reset=False).shape[0]
        return float(-2.0 * self.score(X) * n + self._n_parameters() * np.log(n))

    def aic(self, X) -> float:
        """Akaike information criterion −2 log p(X | θ) + 2p (lower is better)."""
        self._check_fitted()
        n = self._check_X(X, reset=False).shape[0]
        return float(-2.0 * self.score(X) * n + 2.0 * self._n_parameters())
