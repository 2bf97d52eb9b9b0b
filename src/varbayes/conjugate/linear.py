"""Bayesian linear regression: exact posterior, predictive, evidence, MAP = ridge.

Model, for rows x_i of X (N, D) and targets y (N,):

    y_i | w, σ² ~ N(x_iᵀ w, σ²),       w ~ N(m₀, A₀⁻¹),  A₀ = diag(α).

Known noise σ²: the posterior is N(m_n, Λ_n⁻¹) with

    Λ_n = A₀ + XᵀX / σ²,      m_n = Λ_n⁻¹ (A₀ m₀ + Xᵀy / σ²).

Unknown noise (Normal-Inverse-Gamma prior): σ² ~ InvGamma(a₀, b₀) and
w | σ² ~ N(m₀, σ² A₀⁻¹); the posterior is NIG with

    Λ_n = A₀ + XᵀX,  m_n = Λ_n⁻¹ (A₀ m₀ + Xᵀy),  a_n = a₀ + N/2,
    b_n = b₀ + (yᵀy + m₀ᵀ A₀ m₀ - m_nᵀ Λ_n m_n) / 2.

MAP ("poor Bayes") with m₀ = 0 is ridge regression: θ_MP minimises
‖y - Xw‖² + λ‖w‖² with λ = σ² α (known noise) or λ = α (unknown noise, where the
prior scales with σ²) — the L2 penalty is a Gaussian prior.
"""

from __future__ import annotations

import copy
import math

import torch
from torch.distributions import MultivariateNormal, Normal, StudentT

from varbayes._validation import as_tensor, check_finite, check_nonempty
from varbayes.conjugate._base import scalar_param
from varbayes.distributions import NormalInverseGamma

__all__ = ["BayesianLinearRegression"]


class BayesianLinearRegression:
    """Exact Bayesian linear regression with known or unknown noise variance.

    Args:
        prior_precision: α > 0, scalar or a (D,) vector (a diagonal prior precision).
        noise_variance: σ² > 0 when known; ``None`` puts an InvGamma(noise_shape,
            noise_rate) prior on it (Normal-Inverse-Gamma model).
        prior_mean: m₀, scalar or (D,).
        noise_shape, noise_rate: a₀, b₀ > 0 of the InvGamma prior (unknown noise only).
        n_features: D; inferred from the first ``update`` when not given.

    Like the other conjugate models, :meth:`update` returns a new object, and updating
    on (X₁, y₁) then (X₂, y₂) equals updating on both at once. Data are float64.
    Intercepts are not treated specially: add a column of ones to X for one.
    """

    def __init__(
        self,
        prior_precision=1.0,
        noise_variance=None,
        *,
        prior_mean=0.0,
        noise_shape=1.0,
        noise_rate=1.0,
        n_features: int | None = None,
    ):
        self._alpha = _vector_param(prior_precision, "prior_precision", positive=True)
        self._m0 = _vector_param(prior_mean, "prior_mean")
        self.noise_variance = (
            None
            if noise_variance is None
            else scalar_param(noise_variance, "noise_variance", positive=True)
        )
        self._a0 = scalar_param(noise_shape, "noise_shape", positive=True)
        self._b0 = scalar_param(noise_rate, "noise_rate", positive=True)
        sizes = {t.shape[0] for t in (self._alpha, self._m0) if t.dim() == 1}
        if n_features is not None:
            sizes.add(int(n_features))
        if len(sizes) > 1:
            raise ValueError(
                f"prior_precision, prior_mean and n_features disagree on D: sizes {sorted(sizes)}"
            )
        self.n_features = sizes.pop() if sizes else None
        self._stats: dict[str, torch.Tensor] | None = None

    @property
    def known_noise(self) -> bool:
        """Whether σ² is fixed (Normal posterior) or inferred (Normal-Inverse-Gamma)."""
        return self.noise_variance is not None

    @property
    def prior_precision(self) -> torch.Tensor:
        """α: the prior precision of w (scalar, or (D,) for a diagonal prior)."""
        return self._alpha

    @property
    def ridge_penalty(self) -> torch.Tensor:
        """λ such that θ_MP = argmin ‖y - Xw‖² + λ‖w - m₀‖² (per coordinate if α is a vector)."""
        return self._alpha * self.noise_variance if self.known_noise else self._alpha

    # ------------------------------------------------------------------ data
    def _check_xy(self, X, y) -> tuple[torch.Tensor, torch.Tensor]:
        X = as_tensor(X, "X")
        y = as_tensor(y, "y")
        if X.dim() != 2:
            raise ValueError(f"X must be a 2-D tensor (N, D); got shape {tuple(X.shape)}")
        if y.dim() != 1:
            raise ValueError(f"y must be a 1-D tensor (N,); got shape {tuple(y.shape)}")
        if X.shape[0] != y.shape[0]:
            raise ValueError(
                f"X and y must have the same number of rows; got {X.shape[0]} and {y.shape[0]}"
            )
        if self.n_features is not None and X.shape[1] != self.n_features:
            raise ValueError(f"X must have D = {self.n_features} columns; got {X.shape[1]}")
        for t, name in ((X, "X"), (y, "y")):
            check_nonempty(t, name)
            check_finite(t, name)
        return X, y

    def update(self, X, y) -> BayesianLinearRegression:
        """Return the posterior after observing (X, y); this object is unchanged."""
        X, y = self._check_xy(X, y)
        stats = {
            "n": torch.tensor(float(X.shape[0]), dtype=torch.float64),
            "xtx": X.T @ X,
            "xty": X.T @ y,
            "yty": y @ y,
        }
        if self._stats is not None:
            stats = {k: self._stats[k] + stats[k] for k in stats}
        for key, name in (("xtx", "X"), ("xty", "X and y"), ("yty", "y")):
            if not bool(torch.isfinite(stats[key]).all()):
                big = max(float(X.abs().max()), float(y.abs().max()))
                raise ValueError(
                    f"{name}: the sums of squares and products overflow float64 (largest "
                    f"|value| {big:.3g}); rescale X's columns and y (other units)"
                )
        new = copy.copy(self)
        new.n_features = X.shape[1]
        new._stats = stats
        return new

    @property
    def n_observations(self) -> int:
        """Number of rows absorbed so far."""
        return 0 if self._stats is None else int(self._stats["n"])

    # --------------------------------------------------------- hyper-params
    def _prior_params(self) -> dict[str, torch.Tensor]:
        if self.n_features is None:
            raise ValueError("the number of features is unknown: pass n_features or update first")
        d = self.n_features
        alpha = self._alpha.expand(d)
        return {
            "mean": self._m0.expand(d).clone(),
            "precision": torch.diag(alpha),
            "a": self._a0,
            "b": self._b0,
        }

    def _params(self) -> dict[str, torch.Tensor]:
        """(m, Λ, a, b) of the current belief (the prior before any data)."""
        p = self._prior_params()
        if self._stats is None:
            return p
        s = self._stats
        scale = 1 / self.noise_variance if self.known_noise else 1.0
        a0m0 = p["precision"] @ p["mean"]
        prec = p["precision"] + scale * s["xtx"]
        chol, info = torch.linalg.cholesky_ex(prec)
        if int(info) != 0:
            raise ValueError(
                "X: the posterior precision A₀ + XᵀX/σ² is not positive definite in float64 "
                "(X's columns are too badly scaled or too large; rescale them)"
            )
        mean = torch.cholesky_solve((a0m0 + scale * s["xty"])[:, None], chol)[:, 0]
        b = p["b"] + 0.5 * (s["yty"] + p["mean"] @ a0m0 - mean @ prec @ mean)
        return {"mean": mean, "precision": prec, "a": p["a"] + s["n"] / 2, "b": b, "chol": chol}

    @property
    def posterior_mean(self) -> torch.Tensor:
        """E[w | data] = m_n, shape (D,)."""
        return self._params()["mean"]

    @property
    def posterior_covariance(self) -> torch.Tensor:
        """Cov[w | data], (D, D): Λ_n⁻¹, or b_n/(a_n - 1) Λ_n⁻¹ with unknown noise."""
        q = self._params()
        cov = torch.cholesky_inverse(_chol(q))
        return cov if self.known_noise else q["b"] / (q["a"] - 1) * cov

    @property
    def prior(self):
        """p(w) (known noise) or p(w, σ²) (unknown noise) as a torch Distribution."""
        return self._distribution(self._prior_params())

    @property
    def posterior(self):
        """p(w | data) (MultivariateNormal), or p(w, σ² | data) (NormalInverseGamma)."""
        return self._distribution(self._params())

    def _distribution(self, q):
        cov_tril = torch.linalg.cholesky(torch.cholesky_inverse(_chol(q)))  # of Λ⁻¹
        if self.known_noise:
            return MultivariateNormal(q["mean"], scale_tril=cov_tril)
        return NormalInverseGamma(q["mean"], cov_tril, q["a"], q["b"])

    # ----------------------------------------------------------- inference
    def posterior_predictive(self, X):
        """p(y_new | x_new, data) for each row of X (N*, D), independent per row.

        Known noise: N(x m_n, σ² + x Λ_n⁻¹ xᵀ). Unknown noise:
        StudentT(2a_n, x m_n, sqrt(b_n/a_n (1 + x Λ_n⁻¹ xᵀ))).
        """
        X = as_tensor(X, "X")
        if X.dim() != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"X must have shape (N, {self.n_features}); got {tuple(X.shape)}")
        check_finite(X, "X")
        q = self._params()
        mean = X @ q["mean"]
        v = torch.linalg.solve_triangular(_chol(q), X.T, upper=False)
        quad = (v * v).sum(0)  # x Λ⁻¹ xᵀ for each row
        if self.known_noise:
            return Normal(mean, torch.sqrt(self.noise_variance + quad))
        return StudentT(2 * q["a"], mean, torch.sqrt(q["b"] / q["a"] * (1 + quad)))

    def predict(self, X, return_std: bool = False):
        """Posterior predictive mean of y at X, and its standard deviation when asked."""
        pred = self.posterior_predictive(X)
        return (pred.mean, pred.stddev) if return_std else pred.mean

    def log_marginal_likelihood(self, X, y) -> torch.Tensor:
        """log p(y | X) with w (and σ²) integrated out under the current belief.

        Known noise: log N(y; X m, σ² I + X Λ⁻¹ Xᵀ). Unknown noise:
        -N/2 log 2π + ½ log(|Λ|/|Λ_n|) + a log b - a_n log b_n + log Γ(a_n) - log Γ(a).
        """
        X, y = self._check_xy(X, y)
        current = copy.copy(self)
        current.n_features = X.shape[1]
        before, after = current._params(), current.update(X, y)._params()
        n = y.shape[0]
        half_logdet = _logdet_half(before) - _logdet_half(after)  # ½ log |Λ| / |Λ_n|
        if self.known_noise:
            s2 = self.noise_variance
            resid = y - X @ after["mean"]
            dm = after["mean"] - before["mean"]
            return (
                -0.5 * n * torch.log(2 * math.pi * s2)
                - 0.5 * (resid @ resid) / s2
                - 0.5 * dm @ before["precision"] @ dm
                + half_logdet
            )
        a, b, an, bn = before["a"], before["b"], after["a"], after["b"]
        return (
            -0.5 * n * math.log(2 * math.pi)
            + half_logdet
            + a * torch.log(b)
            - an * torch.log(bn)
            + torch.lgamma(an)
            - torch.lgamma(a)
        )

    def map(self) -> torch.Tensor:
        """θ_MP = m_n: the posterior mode of w, i.e. the ridge solution with ``ridge_penalty``."""
        return self._params()["mean"]

    def mle(self) -> torch.Tensor:
        """Least squares w = (XᵀX)⁻¹ Xᵀy; needs XᵀX of full rank."""
        if self._stats is None:
            raise ValueError("mle() needs data: call update(X, y) first")
        chol, info = torch.linalg.cholesky_ex(self._stats["xtx"])
        if int(info) != 0:
            raise ValueError(
                "mle() is not unique: XᵀX is singular (fewer independent rows than features); "
                "use map(), whose prior makes the problem well posed"
            )
        return torch.cholesky_solve(self._stats["xty"][:, None], chol)[:, 0]

    # ------------------------------------------------------ empirical Bayes
    @classmethod
    def fit_evidence(
        cls, X, y, *, max_iter: int = 500, tol: float = 1e-10
    ) -> BayesianLinearRegression:
        """Choose α (scalar) and σ² by maximising the evidence log p(y | X, α, σ²).

        MacKay's fixed point (type-II maximum likelihood, zero prior mean): with
        λ_j the eigenvalues of XᵀX/σ² and γ = Σ_j λ_j / (α + λ_j) the effective number
        of parameters, iterate α ← γ / ‖m_n‖², σ² ← ‖y - X m_n‖² / (N - γ).
        Returns the model with those values, updated on (X, y).
        """
        X, y = cls()._check_xy(X, y)
        n, _ = X.shape
        eig, vec = torch.linalg.eigh(X.T @ X)
        eig = eig.clamp(min=0)
        xty_rot = vec.T @ (X.T @ y)
        alpha, beta = torch.tensor(1.0, dtype=X.dtype), 1 / torch.clamp(y.var(), min=1e-12)
        for _ in range(max_iter):
            mean = vec @ (beta * xty_rot / (alpha + beta * eig))
            gamma = (beta * eig / (alpha + beta * eig)).sum()
            resid = y - X @ mean
            if not bool(mean @ mean > 0):
                raise ValueError(
                    "y: the evidence grows without bound as the prior precision α → ∞: the "
                    "fitted w is 0 (y is all zero or orthogonal to the columns of X), so "
                    "there is no finite α to return; fix prior_precision instead"
                )
            if not bool(resid @ resid > (1e3 * torch.finfo(y.dtype).eps) ** 2 * (y @ y)):
                raise ValueError(
                    "y: X w reproduces y exactly (zero residuals; e.g. a constant y with an "
                    "intercept column), so the evidence grows without bound as "
                    "σ² → 0 and there is no finite noise variance to return; fix "
                    "noise_variance instead"
                )
            new_alpha = gamma / (mean @ mean)
            new_beta = (n - gamma) / (resid @ resid)
            done = bool(
                (new_alpha - alpha).abs() <= tol * alpha and (new_beta - beta).abs() <= tol * beta
            )
            alpha, beta = new_alpha, new_beta
            if done:
                break
        return cls(prior_precision=float(alpha), noise_variance=float(1 / beta)).update(X, y)

    def __repr__(self) -> str:
        noise = (
            f"noise_variance={float(self.noise_variance):.6g}"
            if self.known_noise
            else (f"noise ~ InvGamma({float(self._a0):.4g}, {float(self._b0):.4g})")
        )
        return f"BayesianLinearRegression(D={self.n_features}, {noise}; n={self.n_observations})"


def _chol(q: dict) -> torch.Tensor:
    return q["chol"] if "chol" in q else torch.linalg.cholesky(q["precision"])


def _logdet_half(q: dict) -> torch.Tensor:
    return torch.log(torch.diagonal(_chol(q))).sum()


def _vector_param(value, name: str, *, positive: bool = False) -> torch.Tensor:
    t = as_tensor(value, name)
    if t.dim() > 1:
        raise ValueError(f"{name} must be a scalar or a 1-D vector; got shape {tuple(t.shape)}")
    check_nonempty(t, name)
    check_finite(t, name)
    if positive and not bool((t > 0).all()):
        raise ValueError(f"{name} must be > 0; got {t[t <= 0].flatten()[0].item()!r}")
    return t
