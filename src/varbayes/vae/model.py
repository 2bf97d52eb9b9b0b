"""The variational autoencoder: amortized stochastic VI with the reparameterization trick.

Generative model:  z ~ p(z),   x | z ~ p_θ(x|z) (decoder + likelihood), with p(z) = N(0, I_L),
the VampPrior, or a second stochastic layer z₂ (:mod:`varbayes.vae.priors`).
Inference model:   q_φ(z|x) = N(μφ(x), diag σφ²(x))  (encoder).
Reparameterization: z = μφ(x) + σφ(x) ⊙ ε,  ε ~ N(0, I), so the Monte Carlo estimate of

    ELBO(x) = E_q[log p_θ(x|z)] − KL(q_φ(z|x) || p(z))  ≤  log p_θ(x)

is differentiable in φ and θ, and both are trained together by SGD. The KL between two
Gaussians is available in closed form (``torch.distributions.kl_divergence``; standard
prior only), or estimated by log q(z|x) − log p(z) at the drawn z. The importance-weighted bound

    IWAE_k(x) = E[log (1/k) Σ_i p_θ(x, z_i)/q_φ(z_i|x)],  z_i ~ q(z|x),

satisfies ELBO = IWAE_1 ≤ IWAE_k ≤ IWAE_{k+1} ≤ log p(x) and tends to log p(x) as k grows
(Burda et al. 2015); at k = 5000 it is the standard estimate of the test log-likelihood.

Both bounds are handed to :func:`varbayes.vi.elbo.objective`, the one function that turns
log p and log q of the draws into the objective: the ELBO with the analytic KL as its
``"analytic"`` estimator, with the Monte Carlo KL as ``"pathwise"`` (β weighting log p(z)
and log q(z|x)), IWAE as ``"iwae"``. The per-datum terms (:class:`ELBOTerms`) are kept
beside it for the metrics. All k samples go through the decoder as one (k, B, L) batch;
:meth:`VAE.log_likelihood` cuts k into chunks so memory stays bounded.

Images enter as tensors of shape (B, H, W), (B, 1, H, W) or (B, H·W), floating point.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn
from torch.distributions import Distribution, Independent, Normal

from varbayes._validation import check_int
from varbayes.vae.config import KL_ESTIMATORS, OBJECTIVES, VAEConfig
from varbayes.vae.likelihoods import Likelihood, likelihood_from_config
from varbayes.vae.networks import build_networks
from varbayes.vae.priors import Prior, prior_from_config
from varbayes.vi.elbo import objective as _vi_objective

__all__ = ["ELBOTerms", "VAE"]

_LOG_2PI = math.log(2 * math.pi)
_MAX_ROWS = 16384


class ELBOTerms(NamedTuple):
    """Per-datum terms, each of shape (B,): ``elbo = recon − kl``.

    ``recon`` = E_q[log p(x|z)] (Monte Carlo), ``kl`` = KL(q(z|x) || p(z)) (closed form
    or Monte Carlo).
    """

    elbo: torch.Tensor
    recon: torch.Tensor
    kl: torch.Tensor


class _SampleLogDensities:
    """log p(x|z_i), log p(z_i), log q(z_i|x) of k draws z_i = μ + σ ⊙ ε_i, each (k, B).

    log p(z_i) and log q(z_i|x) are computed on first use: the ELBO with the closed-form
    KL needs neither. With a prior that needs noise of its own (a second layer), log p(z_i)
    is its one-sample estimate (:mod:`varbayes.vae.priors`). (Plain attributes rather than
    ``functools.cached_property``, whose lock on Python 3.11 ``torch.compile`` cannot trace.)
    """

    def __init__(self, log_px_z, z, e, e_prior, loc, scale, log_prior):
        self.log_px_z = log_px_z
        self.z, self.e, self.e_prior = z, e, e_prior  # (k, B, L), (k, B, L), (k, B, prior noise)
        self.loc, self.scale = loc, scale  # (B, L): μφ(x), σφ(x)
        self._log_prior = log_prior
        self._log_pz = self._log_qz = None

    @property
    def log_pz(self) -> torch.Tensor:
        if self._log_pz is None:
            self._log_pz = self._log_prior(self.z, self.e_prior if self.e_prior.shape[-1] else None)
        return self._log_pz

    @property
    def log_qz(self) -> torch.Tensor:
        # log q(z|x) at z = μ + σ ⊙ ε is −½ Σ ε² − Σ log σ − (L/2) log 2π (same value and
        # total gradient as scoring z, without the division).
        if self._log_qz is None:
            e = self.e
            self._log_qz = (
                -0.5 * (e * e).sum(-1) - self.scale.log().sum(-1) - 0.5 * e.shape[-1] * _LOG_2PI
            )
        return self._log_qz

    @property
    def log_weights(self) -> torch.Tensor:
        """log w_i = log p(x|z_i) + log p(z_i) − log q(z_i|x), shape (k, B)."""
        return self.log_px_z + self.log_pz - self.log_qz


class VAE(nn.Module):
    """A VAE with encoder q_φ(z|x) = N(μφ(x), diag σφ²(x)), prior p(z), decoder p_θ(x|z).

    Parameters
    ----------
    config : VAEConfig
        Sizes, architecture, prior and likelihood (see
        :class:`~varbayes.vae.config.VAEConfig`).
    encoder, decoder, likelihood, latent_prior : optional
        Replace the networks, the likelihood or the prior built from ``config`` (the
        encoder maps (B, D) to ``(loc, log_var)``, each (B, L); the decoder maps (..., L)
        to (..., D); the prior is a :class:`~varbayes.vae.priors.Prior`).
    """

    def __init__(
        self,
        config: VAEConfig | None = None,
        *,
        encoder: nn.Module | None = None,
        decoder: nn.Module | None = None,
        likelihood: Likelihood | None = None,
        latent_prior: Prior | None = None,
    ):
        super().__init__()
        config = VAEConfig() if config is None else config
        if not isinstance(config, VAEConfig):
            raise TypeError(f"config must be a VAEConfig; got {type(config).__name__}")
        self.config = config
        enc, dec = (
            (None, None) if encoder is not None and decoder is not None else build_networks(config)
        )
        self.encoder = encoder if encoder is not None else enc
        self.decoder = decoder if decoder is not None else dec
        self.likelihood = likelihood if likelihood is not None else likelihood_from_config(config)
        self.latent_prior = latent_prior if latent_prior is not None else prior_from_config(config)

    # ---------------------------------------------------------------- shapes
    @property
    def latent_dim(self) -> int:
        """L, the size of z."""
        return self.config.latent_dim

    @property
    def noise_dim(self) -> int:
        """Standard-normal values per sample of z: L, plus the prior's own (second layer)."""
        return self.latent_dim + self.latent_prior.noise_dim

    @property
    def analytic_kl(self) -> bool:
        """Whether KL(q(z|x) || p(z)) has a closed form (the standard normal prior)."""
        return self.latent_prior.analytic_kl

    @property
    def data_dim(self) -> int:
        """D = H·W, the number of pixels."""
        return self.config.data_dim

    def _param(self) -> torch.Tensor:
        return next(self.parameters())

    def flatten(self, x: torch.Tensor, name: str = "x", *, check_values: bool = True):
        """Return ``x`` as (B, D) in the model's dtype, checking its size and values.

        Accepts (B, H, W), (B, 1, H, W) or (B, D). Raises ``TypeError`` naming ``name``
        for a non-tensor or non-floating tensor, ``ValueError`` for a wrong image size or
        (with ``check_values``) values outside the likelihood's support.
        """
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of images; got {type(x).__name__}")
        if not x.dtype.is_floating_point:
            raise TypeError(
                f"{name} must be a floating tensor with values in [0, 1]; got dtype {x.dtype} "
                "(divide uint8 images by 255)"
            )
        h, w = self.config.image_shape
        d = h * w
        shape = tuple(x.shape)
        ok = (
            (x.dim() == 2 and shape[1] == d)
            or (x.dim() == 3 and shape[1:] == (h, w))
            or (x.dim() == 4 and shape[1:] == (1, h, w))
        )
        if not ok:
            raise ValueError(
                f"{name} must be images of shape (B, {h}, {w}), (B, 1, {h}, {w}) or (B, {d}) "
                f"for this model; got shape {shape}"
            )
        x = x.reshape(shape[0], d)
        p = self._param()
        x = x.to(dtype=p.dtype, device=p.device)
        if check_values:
            self.likelihood.check_data(x, name)
        return x

    def _images(self, flat: torch.Tensor) -> torch.Tensor:
        return flat.reshape(*flat.shape[:-1], *self.config.image_shape)

    # ---------------------------------------------------------------- pieces
    def prior(self) -> Distribution:
        """p(z) = N(0, I_L) as an ``Independent(Normal)`` with event shape (L,).

        Only for the standard prior; other priors are scored by ``latent_prior``.
        """
        if not self.analytic_kl:
            raise ValueError(
                f"prior() is N(0, I) only for the standard prior; this model's prior is "
                f"{type(self.latent_prior).__name__} (use model.latent_prior)"
            )
        p = self._param()
        zeros = torch.zeros(self.latent_dim, dtype=p.dtype, device=p.device)
        return Independent(Normal(zeros, torch.ones_like(zeros), validate_args=False), 1)

    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, log_var = self.encoder(x)
        return loc, torch.exp(0.5 * log_var)

    def encode(self, x: torch.Tensor) -> Distribution:
        """q_φ(z|x) = N(μφ(x), diag σφ²(x)): batch shape (B,), event shape (L,)."""
        loc, scale = self._encode(self.flatten(x))
        return Independent(Normal(loc, scale, validate_args=False), 1)

    def decode(self, z: torch.Tensor) -> Distribution:
        """p_θ(x|z) for z of shape (..., L): batch shape (...), event shape (D,)."""
        if not isinstance(z, torch.Tensor) or z.dim() < 1 or z.shape[-1] != self.latent_dim:
            got = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(
                f"z must be a tensor of shape (..., {self.latent_dim}) (latent_dim); got {got}"
            )
        return self.likelihood.distribution(self.decoder(z.to(self._param().dtype)))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """E[x | z = μφ(x)]: the decoded posterior mean, shape (B, H, W)."""
        loc, _ = self._encode(self.flatten(x))
        return self._images(self.likelihood.mean(self.decoder(loc)))

    @torch.no_grad()
    def sample(
        self, n: int, *, generator: torch.Generator | None = None, mean: bool = True
    ) -> torch.Tensor:
        """n images from the model: z ~ p(z), then E[x|z] (``mean=True``) or x ~ p(x|z).

        Returns shape (n, H, W).
        """
        n = check_int(n, "n", minimum=1)
        p = self._param()
        like = torch.empty(self.latent_dim, dtype=p.dtype, device=p.device)
        z = self.latent_prior.sample(n, like, self.encoder, generator)
        out = self.decoder(z)
        if mean:
            return self._images(self.likelihood.mean(out))
        return self._images(self.likelihood.distribution(out).sample())

    # ------------------------------------------------------------ objectives
    def _noise(self, k: int, b: int, generator, like: torch.Tensor) -> torch.Tensor:
        """ε ~ N(0, I) of shape (k, b, noise_dim) from ``generator``."""
        shape = (k, b, self.noise_dim)
        return torch.randn(shape, generator=generator, dtype=like.dtype, device=like.device)

    def _draw(self, loc, scale, k: int, generator, eps=None) -> torch.Tensor:
        """z = μ + σ ⊙ ε with ε ~ N(0, I) of shape (k, B, L) (from ``generator``)."""
        if eps is None:
            eps = self._noise(k, loc.shape[0], generator, loc)
        return loc + scale * eps[..., : self.latent_dim]

    def _log_prior(self, z: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
        """log p(z) (shape z.shape[:-1]); ``eps`` (..., prior noise) feeds a second layer."""
        return self.latent_prior.log_prob(z, eps, self.encoder)

    @staticmethod
    def _log_q(z, loc, scale) -> torch.Tensor:
        r = (z - loc) / scale
        return -0.5 * (r * r).sum(-1) - scale.log().sum(-1) - 0.5 * z.shape[-1] * _LOG_2PI

    def _log_densities(self, x, k: int, generator=None, eps=None) -> _SampleLogDensities:
        """Draw z_1..z_k ~ q(z|x) for flattened x (B, D) and score each: (k, B) tensors.

        ``eps`` (k, B, noise_dim) replaces the drawn noise. The k draws go through the
        decoder as one batch of k·B rows.
        """
        loc, scale = self._encode(x)
        if eps is None:
            eps = self._noise(k, x.shape[0], generator, loc)
        e, e_prior = eps[..., : self.latent_dim], eps[..., self.latent_dim :]
        z = loc + scale * e  # (k, B, L)
        log_px_z = self.likelihood.log_prob(x, self.decoder(z))
        return _SampleLogDensities(log_px_z, z, e, e_prior, loc, scale, self._log_prior)

    def _kl_terms(self, d: _SampleLogDensities, kl: str) -> torch.Tensor:
        """KL(q(z|x) || p(z)) per datum (B,): closed form, or the mean of log q − log p."""
        if kl == "analytic":
            return self.latent_prior.kl(d.loc, d.scale)
        return (d.log_qz - d.log_pz).mean(0)

    def _terms(self, x, *, num_samples: int, kl: str, generator=None, eps=None) -> ELBOTerms:
        """ELBO terms of flattened, checked x (B, D) from ``num_samples`` draws of z."""
        d = self._log_densities(x, num_samples, generator, eps)
        return self._elbo_terms(d, kl)

    def _elbo_terms(self, d: _SampleLogDensities, kl: str) -> ELBOTerms:
        recon = d.log_px_z.mean(0)
        kl_term = self._kl_terms(d, kl)
        return ELBOTerms(recon - kl_term, recon, kl_term)

    def _log_weights(self, x, k: int, generator=None, eps=None) -> torch.Tensor:
        """log w_i = log p(x|z_i) + log p(z_i) − log q(z_i|x), shape (k, B)."""
        return self._log_densities(x, k, generator, eps).log_weights

    def elbo(
        self,
        x: torch.Tensor,
        *,
        num_samples: int = 1,
        kl: str = "analytic",
        generator: torch.Generator | None = None,
    ) -> ELBOTerms:
        """ELBO(x) = E_q[log p(x|z)] − KL(q(z|x) || p(z)) per datum, with S = ``num_samples``.

        ``kl="analytic"`` uses the closed form, ``"mc"`` the estimate log q(z|x) − log p(z)
        at the same draws z_s = μ + σ ⊙ ε_s. Differentiable (reparameterized). Returns
        :class:`ELBOTerms` of shape (B,) each.
        """
        num_samples = check_int(num_samples, "num_samples", minimum=1)
        self._check_kl(kl)
        return self._terms(self.flatten(x), num_samples=num_samples, kl=kl, generator=generator)

    def _check_kl(self, kl: str) -> None:
        if kl not in KL_ESTIMATORS:
            raise ValueError(f"kl must be one of {list(KL_ESTIMATORS)}; got {kl!r}")
        if kl == "analytic" and not self.analytic_kl:
            raise ValueError(
                "kl='analytic' needs the standard normal prior; this model's prior is "
                f"{type(self.latent_prior).__name__} (use kl='mc')"
            )

    def iwae_bound(
        self, x: torch.Tensor, k: int, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """IWAE_k(x) = log (1/k) Σ_i p(x, z_i)/q(z_i|x), z_i = μ + σ ⊙ ε_i; shape (B,).

        Differentiable (use it as a training objective); the log-mean-exp of the log
        weights is :func:`varbayes.vi.elbo.objective` with ``estimator="iwae"``.
        """
        k = check_int(k, "k", minimum=1)
        log_w = self._log_weights(self.flatten(x), k, generator)
        return _vi_objective(log_w, torch.zeros_like(log_w), estimator="iwae")

    @torch.no_grad()
    def log_likelihood(
        self,
        x: torch.Tensor,
        k: int = 5000,
        *,
        max_rows: int = _MAX_ROWS,
        generator: torch.Generator | None = None,
        eps: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Estimate log p(x) by IWAE_k, shape (B,); memory bounded by chunking the k samples.

        The decoder sees at most ``max(max_rows, B)`` rows (samples × images) at once;
        each chunk's log weights are folded into a running log-sum-exp, so memory does not
        grow with k. ``eps`` (k, B, noise_dim) replaces the drawn noise (the result then
        does not depend on ``max_rows``). With k = 1 this is a one-sample ELBO estimate
        (Monte Carlo KL).
        """
        k = check_int(k, "k", minimum=1)
        max_rows = check_int(max_rows, "max_rows", minimum=1)
        x = self.flatten(x)
        if eps is not None and tuple(eps.shape) != (k, x.shape[0], self.noise_dim):
            raise ValueError(
                f"eps must have shape (k, B, noise_dim) = {(k, x.shape[0], self.noise_dim)}; "
                f"got {tuple(eps.shape)}"
            )
        chunk = max(1, max_rows // max(1, x.shape[0]))
        total = None
        for start in range(0, k, chunk):
            c = min(chunk, k - start)
            e = None if eps is None else eps[start : start + c].to(x.dtype)
            lse = torch.logsumexp(self._log_weights(x, c, generator, e), 0)
            total = lse if total is None else torch.logaddexp(total, lse)
        return total - math.log(k)

    def forward(self, x: torch.Tensor, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        """Same as :meth:`objective` (so that DDP and ``torch.compile`` wrap the loss)."""
        return self.objective(x, **kwargs)

    def objective(
        self,
        x: torch.Tensor,
        *,
        objective: str = "elbo",
        num_samples: int = 1,
        kl: str = "analytic",
        beta: float | torch.Tensor = 1.0,
        generator: torch.Generator | None = None,
        eps: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The training loss and detached metric sums for one batch of flattened x (B, D).

        ``objective="elbo"``: loss = −mean_b [recon_b − β·kl_b]; ``"iwae"``: loss =
        −mean_b IWAE_k(x_b) with k = ``num_samples``. ``x`` is not checked here (the
        trainer checks the data once). ``eps`` (S, B, noise_dim) replaces the drawn noise.

        Returns ``(loss, sums)``: a scalar, and a (3,) tensor [Σ_b bound_b, Σ_b recon_b,
        Σ_b kl_b] (bound = the ELBO, or the IWAE bound) kept on the device.
        """
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {list(OBJECTIVES)}; got {objective!r}")
        d = self._log_densities(x, num_samples, generator, eps)
        if objective == "elbo":
            t = self._elbo_terms(d, kl)
            if kl == "analytic":
                bound = _vi_objective(
                    d.log_px_z, torch.zeros_like(d.log_px_z), estimator="analytic",
                    kl=(beta * t.kl).mean(),
                )  # fmt: skip
            else:  # β weighs the KL: log p = log p(x|z) + β log p(z), log q = β log q(z|x)
                bound = _vi_objective(d.log_px_z + beta * d.log_pz, beta * d.log_qz)
            sums = torch.stack((t.elbo.sum(), t.recon.sum(), t.kl.sum())).detach()
            return -bound, sums
        log_w = d.log_weights
        bound = _vi_objective(log_w, torch.zeros_like(log_w), estimator="iwae")  # (B,)
        with torch.no_grad():
            kl_term = self._kl_terms(d, "analytic" if self.analytic_kl else "mc")
            sums = torch.stack((bound.sum(), d.log_px_z.mean(0).sum(), kl_term.sum()))
        return -bound.mean(), sums.detach()
