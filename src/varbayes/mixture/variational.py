"""Gaussian mixture by mean-field variational inference (CAVI), Normal-Wishart components.

Model (Bishop, PRML §10.2; the post's notation):

    π ~ Dirichlet(α₀ 1)  or  stick-breaking  v_k ~ Beta(1, α₀), π_k = v_k Π_{j<k} (1 - v_j),
    Λ_k ~ Wishart(W₀, ν₀),  μ_k | Λ_k ~ N(m₀, (β₀ Λ_k)⁻¹),
    z_i | π ~ Categorical(π),  x_i | z_i = k ~ N(μ_k, Λ_k⁻¹).

Mean-field family q(z, π, μ, Λ) = Π_i q(z_i) · q(π) · Π_k q(μ_k | Λ_k) q(Λ_k), every factor
in closed form; CAVI updates one at a time:

* q(z_i = k) = r_ik ∝ exp(ρ_ik),
  ρ_ik = E[log π_k] + ½ E[log|Λ_k|] - D/2 log 2π - D / (2 β_k) - ν_k/2 (x_i - m_k)ᵀ W_k (x_i - m_k);
* q(π) = Dirichlet(α₀ + N_k)  (or Beta(1 + N_k, α₀ + Σ_{j>k} N_j) per stick);
* q(μ_k, Λ_k) = N(m_k, (β_k Λ_k)⁻¹) Wishart(W_k, ν_k) with β_k = β₀ + N_k,
  m_k = (β₀ m₀ + N_k x̄_k) / β_k, ν_k = ν₀ + N_k,
  W_k⁻¹ = W₀⁻¹ + N_k S_k + β₀ N_k / β_k (x̄_k - m₀)(x̄_k - m₀)ᵀ.

The bound is computed in full (no constant dropped), right after each E-step, where
Σ_i E_q[log p(x_i, z_i | θ)] - E_q[log q(z_i)] = Σ_i log Σ_k exp(ρ_ik):

    ELBO = Σ_i log Σ_k exp(ρ_ik) - KL(q(π) || p(π)) - Σ_k KL(q(μ_k, Λ_k) || p(μ_k, Λ_k)).

The KL terms are closed forms (Dirichlet, Beta, Wishart, Normal); the ELBO never
decreases from one iteration to the next (checked every iteration by the monitor).

Parameters are named as in scikit-learn's ``BayesianGaussianMixture``; with the same
initial responsibilities the posteriors agree with it. ``covariances_`` is
E_q[Λ_k]⁻¹ = (ν_k W_k)⁻¹, as there. The ``diag`` and ``spherical`` types restrict
W_k (and W₀) to diagonal or isotropic matrices, which gives scikit-learn's updates for
those types. ``tied`` is one precision Λ ~ Wishart(W₀, ν₀) shared by all components,
μ_k | Λ ~ N(m₀, (β₀ Λ)⁻¹), so q(μ, Λ) = q(Λ) Π_k q(μ_k | Λ) with

    q(Λ) = Wishart(W, ν),  ν = ν₀ + N,
    W⁻¹ = W₀⁻¹ + Σ_k [N_k S_k + β₀ N_k / β_k (x̄_k - m₀)(x̄_k - m₀)ᵀ],

the exact coordinate step of this ELBO (one Wishart KL in the bound). scikit-learn's
tied update (ν_k per component, W averaged over them) is not a step of one ELBO, so
the tied type is checked against the full type at K = 1, against Monte Carlo, and
for stationarity of the bound at its fixed point instead.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch.distributions import Beta, Dirichlet, kl_divergence

from varbayes.mixture import _covariance as cv
from varbayes.mixture._base import COMMON_PARAMETERS, BaseMixture, _Interval, _Optional, _Options
from varbayes.mixture._estep import Statistics
from varbayes.mixture._state import DataSummary, NormalWishartPrior, VariationalPosterior

__all__ = ["VariationalGaussianMixture"]


def _multi_digamma(a: torch.Tensor, d: int) -> torch.Tensor:
    """ψ_D(a) = Σ_{i=0}^{D-1} ψ(a - i/2), elementwise over ``a``."""
    i = torch.arange(d, dtype=a.dtype, device=a.device)
    return torch.digamma(a[..., None] - 0.5 * i).sum(-1)


class VariationalGaussianMixture(BaseMixture):
    """Bayesian Gaussian mixture fitted by coordinate-ascent mean-field VI (CAVI).

    Parameters (as in scikit-learn's ``BayesianGaussianMixture`` where they agree)
    ----------
    n_components : int
        K, an upper bound on the number of components used.
    covariance_type : {"full", "tied", "diag", "spherical"}
    weight_concentration_prior_type : {"dirichlet_process", "dirichlet_distribution"}
        Truncated stick-breaking (K sticks) or a symmetric Dirichlet prior on π.
    weight_concentration_prior : float, optional
        α₀ > 0 (default 1 / K). Small values favour few components.
    mean_precision_prior : float, optional
        β₀ > 0 (default 1).
    mean_prior : array-like (D,), optional
        m₀ (default: the mean of X).
    degrees_of_freedom_prior : float, optional
        ν₀ > D - 1 (default D).
    covariance_prior : array-like, optional
        W₀⁻¹: (D, D) for full, (D,) for diag, a float for spherical (default: the
        sample covariance of X, its diagonal, or the mean of its diagonal).
    resp_init : array-like (N, K), optional
        Initial responsibilities r_ik (rows sum to 1); replaces ``init_params``.
    tol, reg_covar, max_iter, n_init, init_params, random_state, warm_start, verbose,
    device, dtype, chunk_size, distributed, learning_decay, learning_offset :
        As in :class:`GaussianMixture`. ``tol`` applies to the ELBO *per datum*; its
        default, 1e-6, is tighter than for EM because unused components fade slowly
        (scikit-learn's ``tol=1e-3`` applies to the total bound, N times tighter still).

    Attributes
    ----------
    weight_concentration_ : tensor (K,) or tuple of two (K,)
        Parameters of q(π): Dirichlet α_k, or the Beta (a_k, b_k) of each stick.
    mean_precision_ (K,), means_ (K, D), degrees_of_freedom_ (K,), covariances_,
    precisions_, precisions_cholesky_ :
        Parameters of q(μ_k, Λ_k): β_k, m_k, ν_k, (ν_k W_k)⁻¹, ν_k W_k and its Cholesky factor
        (tied: one ν, a 0-d tensor, and one (D, D) matrix of each).
    weights_ (K,) :
        E_q[π_k].
    n_effective_components_ : int
        Number of components holding at least one datum in expectation (N_k >= 1).
    lower_bound_, lower_bounds_ : float, list of float
        The full ELBO per datum at the last iteration, and after every iteration.
    """

    _supported_covariance_types = ("full", "tied", "diag", "spherical")
    _parameter_table = {
        **COMMON_PARAMETERS,
        "weight_concentration_prior_type": _Options("dirichlet_process", "dirichlet_distribution"),
        "weight_concentration_prior": _Optional(_Interval(float, 0.0, closed="neither")),
        "mean_precision_prior": _Optional(_Interval(float, 0.0, closed="neither")),
        "degrees_of_freedom_prior": _Optional(_Interval(float, None, closed="neither")),
    }
    _state_type = VariationalPosterior

    def __init__(
        self,
        n_components: int = 1,
        *,
        covariance_type: str = "full",
        tol: float = 1e-6,
        reg_covar: float = 1e-6,
        max_iter: int = 100,
        n_init: int = 1,
        init_params: str = "kmeans",
        weight_concentration_prior_type: str = "dirichlet_process",
        weight_concentration_prior: float | None = None,
        mean_precision_prior: float | None = None,
        mean_prior=None,
        degrees_of_freedom_prior: float | None = None,
        covariance_prior=None,
        resp_init=None,
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
        self.weight_concentration_prior_type = weight_concentration_prior_type
        self.weight_concentration_prior = weight_concentration_prior
        self.mean_precision_prior = mean_precision_prior
        self.mean_prior = mean_prior
        self.degrees_of_freedom_prior = degrees_of_freedom_prior
        self.covariance_prior = covariance_prior
        self.resp_init = resp_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.device = device
        self.dtype = dtype
        self.chunk_size = chunk_size
        self.distributed = distributed
        self.learning_decay = learning_decay
        self.learning_offset = learning_offset

    @property
    def _dp(self) -> bool:
        return self.weight_concentration_prior_type == "dirichlet_process"

    def _state_shapes(self, d: int) -> dict[str, tuple]:
        k, ct = self.n_components, self.covariance_type
        return {
            **super()._state_shapes(d),
            "alpha0": (),
            "beta0": (),
            "nu0": (),
            "m0": (d,),
            "cov0": {"full": (d, d), "tied": (d, d), "diag": (d,), "spherical": ()}[ct],
            "wc": (2, k) if self._dp else (k,),
            "beta": (k,),
            "nu": () if ct == "tied" else (k,),
            "nk": (k,),
        }

    # ------------------------------------------------------------------ priors and init
    def _check_init_shapes(self, d: int) -> None:
        ct = self.covariance_type
        dof = self.degrees_of_freedom_prior
        if dof is not None and not dof > d - 1:
            raise ValueError(
                f"The parameter 'degrees_of_freedom_prior' should be greater than {d - 1}, "
                f"but got {float(dof):.3f}."
            )
        if self.mean_prior is not None:
            m0 = self._as_param(self.mean_prior, "mean_prior")
            if tuple(m0.shape) != (d,):
                raise ValueError(
                    f"The parameter 'mean_prior' should have the shape of ({d},), but got "
                    f"{tuple(m0.shape)}"
                )
        if self.covariance_prior is not None:
            cp = self._as_param(self.covariance_prior, "covariance_prior")
            shape = {"full": (d, d), "tied": (d, d), "diag": (d,), "spherical": ()}[ct]
            if tuple(cp.shape) != shape:
                raise ValueError(
                    f"The parameter '{ct} covariance_prior' should have the shape of {shape}, "
                    f"but got {tuple(cp.shape)}"
                )
            if ct in ("full", "tied"):
                ok = torch.allclose(cp, cp.mT) and int(torch.linalg.cholesky_ex(cp)[1]) == 0
                what = "symmetric, positive-definite"
            else:
                ok = bool((cp > 0).all())
                what = "positive"
            if not ok:
                raise ValueError(f"'{ct} covariance_prior' should be {what}")

    def _priors(self, summary: DataSummary) -> NormalWishartPrior:
        """p(π) p(μ, Λ) from the hyper-parameters, defaults from the data ``summary``
        (m₀ shifted by the summary's mean, the centre of a new state)."""
        kw = {"dtype": self._dtype, "device": self._device}
        d, k, ct = summary.d, self.n_components, self.covariance_type
        alpha0 = self.weight_concentration_prior
        m0 = summary.mean if self.mean_prior is None else self._as_param(self.mean_prior, "")
        if self.covariance_prior is None:
            n = summary.n
            emp = summary.cov * n / (n - 1.0)  # ddof = 1, as numpy.cov
            if int(torch.linalg.cholesky_ex(emp)[1]) != 0:
                # constant or collinear features (e.g. duplicated rows): W₀⁻¹ would be
                # singular and KL(q || p) infinite; add reg_covar (at least eps · scale)
                var = emp.diagonal()
                floor = max(
                    float(self.reg_covar), 16 * torch.finfo(emp.dtype).eps * float(var.max())
                )
                emp = emp + max(floor, torch.finfo(emp.dtype).tiny) * torch.eye(
                    d, dtype=emp.dtype, device=emp.device
                )
            cp = {"diag": emp.diagonal(), "spherical": emp.diagonal().mean()}.get(ct, emp)
        else:
            cp = self._as_param(self.covariance_prior, "covariance_prior")
        return NormalWishartPrior(
            alpha0=torch.tensor(1.0 / k if alpha0 is None else float(alpha0), **kw),
            beta0=torch.tensor(float(self.mean_precision_prior or 1.0), **kw),
            m0=m0 - summary.mean,
            nu0=torch.tensor(float(self.degrees_of_freedom_prior or d), **kw),
            cov0=cp.clone(),
        )

    def _initial_state(self, x, summary: DataSummary, draws) -> VariationalPosterior:
        """q(θ) by one CAVI step from ``resp_init`` or the responsibilities of
        ``init_params``."""
        if self.resp_init is not None:
            resp = self._as_param(self.resp_init, "resp_init")
            if tuple(resp.shape) != (x.shape[0], self.n_components):
                raise ValueError(
                    f"resp_init must have shape ({x.shape[0]}, {self.n_components}); "
                    f"got {tuple(resp.shape)}"
                )
            if bool((resp < 0).any()) or not torch.allclose(
                resp.sum(1), torch.ones((), dtype=resp.dtype, device=resp.device)
            ):
                raise ValueError("resp_init must be >= 0 with rows summing to 1")
        else:
            resp = self._initial_resp(x, draws, summary.mean)
        stats, _ = self._pass(x, None, resp=resp, shift=summary.mean)
        return self._m_step(stats, summary.mean, self._priors(summary))

    # ------------------------------------------------------------------ CAVI steps
    def _m_step(
        self, stats: Statistics, shift: torch.Tensor, prior: NormalWishartPrior
    ) -> VariationalPosterior:
        """q(π), q(μ_k, Λ_k) from N_k, x̄_k, S_k (the CAVI updates of the module docstring),
        in the coordinates shifted by ``shift``."""
        ct = self.covariance_type
        eps = torch.finfo(self._dtype).eps
        nk = stats.nk + 10 * eps
        xk = stats.xbar_sum / nk[:, None]
        iu = cv.tri_indices(shift.shape[0], shift.device)
        sk = cv.covariances_from_stats(nk, xk, stats.s2, ct, self.reg_covar, iu)
        if self._dp:
            tail = nk.flip(0).cumsum(0).flip(0) - nk  # Σ_{j>k} N_j
            wc = torch.stack([1.0 + nk, prior.alpha0 + tail])
        else:
            wc = prior.alpha0 + nk
        beta0, nu0, m0, cp = prior.beta0, prior.nu0, prior.m0, prior.cov0
        beta = beta0 + nk
        means = (beta0 * m0 + nk[:, None] * xk) / beta[:, None]
        nu = nu0 + nk
        diff = xk - m0
        shrink = nk * beta0 / beta
        if ct == "tied":  # one q(Λ): ν = ν₀ + N, W⁻¹ = W₀⁻¹ + Σ_k [N_k S_k + shrink_k d_k d_kᵀ]
            nu = nu0 + nk.sum()
            cov = cp + nk.sum() * sk + (shrink[:, None] * diff).mT @ diff
            cov = cov / nu
        elif ct == "full":
            cov = (
                cp
                + nk[:, None, None] * sk
                + shrink[:, None, None] * diff[:, :, None] * diff[:, None, :]
            )
            cov = cov / nu[:, None, None]
        elif ct == "diag":
            cov = (cp + nk[:, None] * sk + shrink[:, None] * diff * diff) / nu[:, None]
        else:
            cov = (cp + nk * sk + shrink * (diff * diff).mean(1)) / nu
        pchol, prec = cv.cholesky_precision(cov, ct)
        return VariationalPosterior(
            shift=shift,
            means=means,
            covariances=cov,
            precisions=prec,
            precisions_cholesky=pchol,
            weight_concentration=wc,
            mean_precision=beta,
            degrees_of_freedom=nu,
            nk=stats.nk,
            prior=prior,
        )

    def _update(self, stats: Statistics, st: VariationalPosterior, summary: DataSummary):
        """The CAVI step from the state ``st`` (its centre and prior are kept)."""
        return self._m_step(stats, st.shift, st.prior)

    def _expected_log_weights(self, st: VariationalPosterior) -> torch.Tensor:
        """E_q[log π_k] (K,)."""
        wc = st.weight_concentration
        if self._dp:
            a, b = wc[0], wc[1]
            dsum = torch.digamma(a + b)
            log_rest = torch.digamma(b) - dsum
            return torch.digamma(a) - dsum + torch.cumsum(log_rest, 0) - log_rest
        return torch.digamma(wc) - torch.digamma(wc.sum())

    def _expected_log_det(self, st: VariationalPosterior) -> torch.Tensor:
        """E_q[log|Λ_k|] = ψ_D(ν_k / 2) + D log 2 + log|W_k|, with W_k = Λ̄_k / ν_k (K,)."""
        d = st.d
        logdet_bar = cv.log_det_cholesky(st.precisions_cholesky, self.covariance_type, d)
        nu = st.degrees_of_freedom
        return _multi_digamma(0.5 * nu, d) + d * math.log(2.0) + logdet_bar - d * nu.log()

    def _rho_constant(self, st: VariationalPosterior) -> torch.Tensor:
        """const_k = E[log π_k] + ½ E[log|Λ_k|] - D/2 log 2π - D / (2 β_k), so that
        ρ_ik = const_k - ½ (x_i - m_k)ᵀ Λ̄_k (x_i - m_k) with Λ̄_k = E_q[Λ_k] = ν_k W_k."""
        d = st.d
        return (
            self._expected_log_weights(st)
            + 0.5 * self._expected_log_det(st)
            - 0.5 * d * cv.LOG_2PI
            - 0.5 * d / st.mean_precision
        )

    def _kl_weights(self, st: VariationalPosterior) -> torch.Tensor:
        """KL(q(π) || p(π)): Dirichlet, or the sum over sticks of Beta KLs."""
        wc, a0 = st.weight_concentration, st.prior.alpha0
        if self._dp:
            prior = Beta(torch.ones_like(wc[0]), a0.expand_as(wc[1]))
            return kl_divergence(Beta(wc[0], wc[1]), prior).sum()
        return kl_divergence(Dirichlet(wc), Dirichlet(a0.expand_as(wc)))

    def _kl_components(self, st: VariationalPosterior) -> torch.Tensor:
        """Σ_k KL(q(μ_k, Λ_k) || p(μ_k, Λ_k)), Normal-Wishart, in closed form.

        With V = W_k = Λ̄_k / ν_k and V₀ = W₀ = covariance_prior⁻¹:
        KL_W = ν₀/2 (log|V₀| - log|V|) + log Γ_D(ν₀/2) - log Γ_D(ν/2)
               + (ν - ν₀)/2 ψ_D(ν/2) + ν/2 (tr(V₀⁻¹ V) - D),
        KL_N = ½ [D (β₀/β - 1 - log(β₀/β)) + β₀ (m - m₀)ᵀ Λ̄ (m - m₀)].
        """
        ct, d, prior = self.covariance_type, st.d, st.prior
        nu, nu0, beta, beta0 = st.degrees_of_freedom, prior.nu0, st.mean_precision, prior.beta0
        prec, cp = st.precisions, prior.cov0
        logdet_bar = cv.log_det_cholesky(st.precisions_cholesky, ct, d)
        if ct in ("full", "tied"):
            logdet_cp = torch.linalg.slogdet(cp)[1]
            trace = (cp * prec).sum((-2, -1))  # tr(cp Λ̄_k), both symmetric
        elif ct == "diag":
            logdet_cp = cp.log().sum()
            trace = (cp * prec).sum(-1)
        else:
            logdet_cp = d * cp.log()
            trace = d * cp * prec
        log_v = logdet_bar - d * nu.log()
        kl_w = (
            0.5 * nu0 * (-logdet_cp - log_v)
            + torch.mvlgamma(0.5 * nu0, d)
            - torch.mvlgamma(0.5 * nu, d)
            + 0.5 * (nu - nu0) * _multi_digamma(0.5 * nu, d)
            + 0.5 * nu * (trace / nu - d)
        )
        dm = st.means - prior.m0
        quad = (dm * cv.precision_matrix_times(prec, ct, dm)).sum(1)
        ratio = beta0 / beta
        kl_n = 0.5 * (d * (ratio - 1.0 - ratio.log()) + beta0 * quad)
        return kl_w.sum() + kl_n.sum()  # tied: one Wishart KL

    def _elbo(self, lse, st: VariationalPosterior):
        """Full ELBO = Σ_i log Σ_k exp(ρ_ik) - KL(q(π)||p(π)) - Σ_k KL(q(μ_k,Λ_k)||p(μ_k,Λ_k))."""
        return lse - self._kl_weights(st) - self._kl_components(st)

    # ------------------------------------------------------------------ stochastic VI
    def partial_fit(self, X, y=None, *, n_samples: int | None = None):
        """One step of stochastic variational inference (Hoffman et al. 2013) on the
        minibatch X (B, D) of a data set of ``n_samples`` = N rows; returns ``self``.

        The global factors q(π), q(μ_k, Λ_k) are exponential families whose natural
        parameters are the prior's plus N times the per-datum expected statistics
        s = (1/N) Σ_i (r_ik, r_ik x_i, r_ik x_i x_iᵀ). With ŝ_t those of the batch
        (r_ik from the local step q(z_i) under the current global factors), the
        natural-gradient step of size ρ_t on the ELBO is

            s_t = (1 - ρ_t) s_{t-1} + ρ_t ŝ_t,   λ_t = λ₀ + N s_t,

        ρ_t = (t + τ₀)^(-κ) (``learning_offset``, ``learning_decay``; ρ_0 = 1): the CAVI
        updates of the module docstring with N_k, x̄_k, S_k from N·s_t. Each batch's
        ELBO estimate per datum, (N/B) Σ_batch log Σ_k exp(ρ_ik) / N - KL / N under the
        factors before the step, is appended to ``lower_bounds_``. The first call
        initialises from its batch, and the default ``mean_prior`` and
        ``covariance_prior`` are that batch's mean and covariance: give them explicitly
        for a stream whose first batch is not representative. A later ``fit`` starts
        afresh. ``n_samples`` must be at least the batch size; None (for a stream of
        unknown length) takes N as the number of rows seen so far, this batch included,
        so q(θ) is the posterior of the data seen so far.
        """
        if n_samples is not None and (
            isinstance(n_samples, bool)
            or not isinstance(n_samples, numbers.Integral)
            or n_samples < 1
        ):
            raise ValueError(
                "n_samples must be None or an integer >= 1 (N, rows in the data set); "
                f"got {n_samples!r}"
            )
        return self._partial_fit(X, None if n_samples is None else float(n_samples))

    def _online_step(self, s: Statistics, n_samples, st: VariationalPosterior, summary):
        """λ_t = λ₀ + N s_t: the CAVI step from the statistics N·s_t."""
        return self._update(s.scaled(n_samples), st, summary)

    def _weights(self, st: VariationalPosterior) -> torch.Tensor:
        """E_q[π_k] (K,): α_k / Σ α, or the expected stick-breaking weights."""
        wc = st.weight_concentration
        if not self._dp:
            return wc / wc.sum()
        frac = wc[1] / (wc[0] + wc[1])
        w = wc[0] / (wc[0] + wc[1]) * torch.cat([frac.new_ones(1), torch.cumprod(frac[:-1], 0)])
        return w / w.sum()

    def _attributes(self, st: VariationalPosterior) -> dict:
        """The fitted attributes (tensors, or floats for scalar priors) from the state."""
        wc, prior = st.weight_concentration, st.prior
        cov0 = prior.cov0
        return {
            "weight_concentration_": (wc[0], wc[1]) if self._dp else wc,
            "weights_": self._weights(st),
            "mean_precision_": st.mean_precision,
            "means_": st.means + st.shift,
            "degrees_of_freedom_": st.degrees_of_freedom,
            "covariances_": st.covariances,
            "precisions_": st.precisions,
            "precisions_cholesky_": st.precisions_cholesky,
            "n_effective_components_": int((st.nk >= 1.0).sum()),
            "weight_concentration_prior_": float(prior.alpha0),
            "mean_precision_prior_": float(prior.beta0),
            "mean_prior_": prior.m0 + st.shift,
            "degrees_of_freedom_prior_": float(prior.nu0),
            "covariance_prior_": float(cov0) if cov0.ndim == 0 else cov0,
        }


class BayesianGaussianMixture(VariationalGaussianMixture):
    """scikit-learn's name for :class:`VariationalGaussianMixture` (the same estimator),
    so that ``from varbayes.mixture import BayesianGaussianMixture`` replaces
    ``from sklearn.mixture import BayesianGaussianMixture``."""
