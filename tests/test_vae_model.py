"""The VAE model and its objectives against independent oracles."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn
from torch.distributions import Normal

from varbayes.vae import VAE, GaussianLikelihood, VAEConfig, make_likelihood
from varbayes.vae.likelihoods import (
    BernoulliLikelihood,
    ContinuousBernoulliLikelihood,
)

SMALL = dict(image_shape=(4, 4), hidden=(8,), latent_dim=3)


def small_vae(seed=0, **kw) -> VAE:
    torch.manual_seed(seed)
    return VAE(VAEConfig(**{**SMALL, **kw})).double()


def grey(n, seed=0, shape=(4, 4)):
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_shapes_of_every_method():
    """encode/decode/reconstruct/sample/elbo/iwae/log_likelihood return the documented shapes."""
    m = small_vae()
    x = grey(5)
    q = m.encode(x)
    assert q.batch_shape == (5,) and q.event_shape == (3,)
    z = torch.zeros(2, 5, 3, dtype=torch.float64)
    assert m.decode(z).batch_shape == (2, 5) and m.decode(z).event_shape == (16,)
    assert m.reconstruct(x).shape == (5, 4, 4)
    assert m.sample(7).shape == (7, 4, 4)
    assert m.sample(2, mean=False).shape == (2, 4, 4)
    assert all(t.shape == (5,) for t in m.elbo(x))
    assert m.iwae_bound(x, 4).shape == (5,)
    assert m.log_likelihood(x, 9, max_rows=10).shape == (5,)


@pytest.mark.parametrize("arch", ["mlp", "conv"])
@pytest.mark.parametrize("lik", ["bernoulli", "gaussian", "continuous-bernoulli"])
def test_every_architecture_and_likelihood_trains_one_step(arch, lik):
    """Each network/likelihood pair gives a finite loss whose gradient reaches every weight."""
    torch.manual_seed(0)
    m = VAE(
        VAEConfig(
            image_shape=(8, 8),
            hidden=(16,),
            conv_channels=(4, 8),
            latent_dim=2,
            architecture=arch,
            likelihood=lik,
            learn_std=lik == "gaussian",
        )
    )
    x = torch.rand(6, 64)
    loss, sums = m(x)
    loss.backward()
    assert torch.isfinite(loss) and sums.shape == (3,)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
    assert m.decoder(torch.zeros(2, 3, 2)).shape == (2, 3, 64)  # leading dims kept


def test_analytic_kl_matches_closed_form_and_monte_carlo():
    """KL(q(z|x)||N(0,I)) equals ½Σ(μ²+σ²−log σ²−1) and the Monte Carlo KL average.

    Monte Carlo: S = 200,000 draws; the tolerance is 5 standard errors (failure rate < 1e-6).
    """
    m = small_vae()
    x = grey(4)
    loc, scale = m._encode(m.flatten(x))
    closed = 0.5 * (loc**2 + scale**2 - 2 * scale.log() - 1).sum(-1)
    analytic = m.elbo(x).kl
    torch.testing.assert_close(analytic, closed)
    g = torch.Generator().manual_seed(1)
    z = m._draw(loc, scale, 200_000, g)
    log_ratio = m._log_q(z, loc, scale) - m._log_prior(z)
    se = log_ratio.std(0) / math.sqrt(z.shape[0])
    assert ((log_ratio.mean(0) - analytic).abs() < 5 * se + 1e-9).all()
    mc = m.elbo(x, kl="mc", num_samples=200_000, generator=torch.Generator().manual_seed(2)).kl
    assert ((mc - analytic).abs() < 5 * se + 1e-9).all()


def test_reparameterized_draw_has_the_posterior_moments():
    """z = μ + σ ⊙ ε has mean μ and std σ (100,000 draws; tolerance 5 standard errors)."""
    m = small_vae()
    x = grey(2)
    loc, scale = m._encode(m.flatten(x))
    z = m._draw(loc, scale, 100_000, torch.Generator().manual_seed(0))
    se = scale / math.sqrt(z.shape[0])
    assert ((z.mean(0) - loc).abs() < 5 * se).all()
    torch.testing.assert_close(z.std(0), scale, rtol=0.02, atol=0)


def test_bernoulli_log_likelihood_matches_hand_formula():
    """log p(x|z) = Σ_d x_d log p_d + (1−x_d) log(1−p_d), p = sigmoid(logits), incl. grey x."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 16, generator=g, dtype=torch.float64) * 4
    x = torch.rand(5, 16, generator=g, dtype=torch.float64)
    x[0] = (x[0] > 0.5).double()
    p = 1 / (1 + np.exp(-logits.numpy()))
    hand = (x.numpy() * np.log(p) + (1 - x.numpy()) * np.log1p(-p)).sum(-1)
    got = BernoulliLikelihood().log_prob(x, logits)
    np.testing.assert_allclose(got.numpy(), hand, rtol=1e-10)
    binary = x[0].expand(3, 16)
    via_dist = BernoulliLikelihood().distribution(logits[:, 0]).log_prob(binary)
    torch.testing.assert_close(got[:, 0], via_dist)


def test_gaussian_log_likelihood_matches_scipy():
    """Gaussian log p(x|z) = Σ_d log N(x_d; sigmoid(out_d), s²), checked with scipy.stats.norm."""
    g = torch.Generator().manual_seed(0)
    out = torch.randn(4, 16, generator=g, dtype=torch.float64)
    x = torch.rand(4, 16, generator=g, dtype=torch.float64)
    lik = GaussianLikelihood(16, std=0.3).double()
    want = stats.norm.logpdf(x.numpy(), 1 / (1 + np.exp(-out.numpy())), 0.3).sum(-1)
    np.testing.assert_allclose(lik.log_prob(x, out).numpy(), want, rtol=1e-10)
    np.testing.assert_allclose(lik.distribution(out).log_prob(x).numpy(), want, rtol=1e-10)


def test_learned_gaussian_std_is_a_parameter():
    """learn_std=True makes log s a trainable per-pixel parameter; otherwise it is a buffer."""
    assert isinstance(GaussianLikelihood(5, 0.2, learn_std=True).log_std, nn.Parameter)
    assert not any(True for _ in GaussianLikelihood(5, 0.2).parameters())


def test_continuous_bernoulli_matches_hand_formula():
    """CB log-density = log C(λ) + x log λ + (1−x) log(1−λ), C(λ) = 2 artanh(1−2λ)/(1−2λ)."""
    g = torch.Generator().manual_seed(0)
    out = torch.randn(3, 16, generator=g, dtype=torch.float64) * 2 + 0.3
    x = torch.rand(3, 16, generator=g, dtype=torch.float64)
    lam = 1 / (1 + np.exp(-out.numpy()))
    log_c = np.log(2 * np.arctanh(1 - 2 * lam) / (1 - 2 * lam))
    hand = (log_c + x.numpy() * np.log(lam) + (1 - x.numpy()) * np.log1p(-lam)).sum(-1)
    got = ContinuousBernoulliLikelihood().log_prob(x, out)
    np.testing.assert_allclose(got.numpy(), hand, rtol=1e-8)


def _repeat(fn, x, r):
    """Mean and standard error over r independent estimates fn(x) per image (one batched call)."""
    b = x.shape[0]
    vals = fn(x.repeat(r, *([1] * (x.dim() - 1)))).reshape(r, b)
    return vals.mean(0), vals.std(0) / math.sqrt(r)


def test_elbo_below_iwae_k_below_iwae_larger_k_on_average():
    """E[log w_1] ≤ E[IWAE_5] ≤ E[IWAE_50] ≤ log p(x) per image (4,000 repeats, 4 std errors).

    log w_1 is a one-sample ELBO estimate. Linear-Gaussian model with a diagonal proposal
    (ELBO about 1 nat under the exact log p(x)). Paired differences of the same draws keep
    the noise small; the claim is about expectations, so each gap is tested on its mean.
    """
    g = torch.Generator().manual_seed(1)
    w = torch.randn(5, 2, generator=g, dtype=torch.float64)
    b = torch.randn(5, generator=g, dtype=torch.float64)
    m = linear_gaussian_vae(w, b, 0.6, var_scale=1.5)
    z = torch.randn(3, 2, generator=g, dtype=torch.float64)
    x = z @ w.T + b + 0.6 * torch.randn(3, 5, generator=g, dtype=torch.float64)
    exact = torch.as_tensor(exact_log_px(x, w, b, 0.6))
    r = 4000
    with torch.no_grad():
        lw = m._log_weights(m.flatten(x.repeat(r, 1)), 50, torch.Generator().manual_seed(5))
    lw = lw.reshape(50, r, 3)
    one = lw[0]
    i5 = torch.logsumexp(lw[:5], 0) - math.log(5)
    i50 = torch.logsumexp(lw, 0) - math.log(50)
    for lo, hi in ((one, i5), (i5, i50)):
        d = hi - lo
        assert (d.mean(0) > 4 * d.std(0) / math.sqrt(r)).all()
    assert (i50.mean(0) < exact + 4 * i50.std(0) / math.sqrt(r)).all()


def test_log_likelihood_with_k1_is_the_elbo_in_expectation():
    """IWAE_1 = log p(x|z) + log p(z) − log q(z|x) averages to the ELBO (20,000 repeats, 5 s.e.)."""
    m = small_vae(seed=4)
    x = (grey(3, seed=2) > 0.5).double()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        ll1, se1 = _repeat(lambda xx: m.log_likelihood(xx, 1, generator=g), x, 20_000)
        e, se = _repeat(lambda xx: m.elbo(xx, generator=g).elbo, x, 20_000)
    assert ((ll1 - e).abs() < 5 * (se1 + se)).all()


def test_iwae_bound_is_log_mean_exp_of_log_weights():
    """iwae_bound = logsumexp_i(log w_i) − log k with log w from the same noise."""
    m = small_vae()
    x = grey(4)
    got = m.iwae_bound(x, 7, generator=torch.Generator().manual_seed(5))
    lw = m._log_weights(m.flatten(x), 7, torch.Generator().manual_seed(5))
    want = torch.tensor(
        [math.log(np.mean(np.exp(lw[:, b].detach().numpy()))) for b in range(4)],
        dtype=torch.float64,
    )
    torch.testing.assert_close(got, want)


class FixedEncoder(nn.Module):
    """q(z|x) = N(A(x − b), diag v), a fixed linear encoder."""

    def __init__(self, a, b, var):
        super().__init__()
        self.a, self.b, self.log_var = a, b, var.log()

    def forward(self, x):
        loc = (x - self.b) @ self.a.T
        return loc, self.log_var.expand_as(loc)


def linear_gaussian_vae(w, b, sigma, var_scale=1.0):
    """x = Wz + b + σ·noise, encoder = exact posterior mean with diag(posterior cov)·var_scale."""
    d, L = w.shape
    dec = nn.Linear(L, d).double()
    with torch.no_grad():
        dec.weight.copy_(w)
        dec.bias.copy_(b)
    prec = torch.eye(L, dtype=torch.float64) + w.T @ w / sigma**2
    cov = torch.linalg.inv(prec)
    enc = FixedEncoder(cov @ w.T / sigma**2, b, torch.diagonal(cov) * var_scale)
    cfg = VAEConfig(image_shape=(1, d), hidden=(), latent_dim=L, likelihood="gaussian")
    lik = GaussianLikelihood(d, sigma, link="identity").double()
    return VAE(cfg, encoder=enc, decoder=dec, likelihood=lik).double()


def exact_log_px(x, w, b, sigma):
    cov = (w @ w.T).numpy() + sigma**2 * np.eye(w.shape[0])
    return stats.multivariate_normal(b.numpy(), cov).logpdf(x.numpy())


def test_exact_posterior_makes_elbo_and_iwae_equal_log_px():
    """With W of orthogonal columns the posterior is diagonal: ELBO = IWAE_k = log p(x) exactly."""
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(6, 2, generator=g, dtype=torch.float64))
    w = q * torch.tensor([2.0, 0.7], dtype=torch.float64)
    b = torch.randn(6, generator=g, dtype=torch.float64)
    m = linear_gaussian_vae(w, b, 0.5)
    x = torch.randn(5, 6, generator=g, dtype=torch.float64) * 2
    exact = exact_log_px(x, w, b, 0.5)
    np.testing.assert_allclose(m.elbo(x, kl="mc").elbo.detach().numpy(), exact, rtol=1e-10)
    # With the analytic KL only the expectation is exact: 200,000 draws, se < 0.002 nats.
    e = m.elbo(x, num_samples=200_000, generator=torch.Generator().manual_seed(1)).elbo
    np.testing.assert_allclose(e.detach().numpy(), exact, atol=0.02)
    np.testing.assert_allclose(m.log_likelihood(x, 3).numpy(), exact, rtol=1e-10)


def test_iwae_approaches_exact_log_likelihood_of_linear_gaussian_model():
    """With a non-diagonal posterior, ELBO < log p(x) and IWAE_5000 is within 0.02 nats of it.

    log p(x) = log N(x; b, WWᵀ + σ²I) (scipy). The proposal is the exact posterior mean with
    1.5× the posterior marginal variances; the remaining IWAE bias ≈ Var(w)/(2k·E[w]²) is
    below 1e-3 nats here, and the Monte Carlo error below 0.01 (checked against k = 20000).
    """
    g = torch.Generator().manual_seed(1)
    w = torch.randn(5, 2, generator=g, dtype=torch.float64)
    b = torch.randn(5, generator=g, dtype=torch.float64)
    m = linear_gaussian_vae(w, b, 0.6, var_scale=1.5)
    x = torch.randn(4, 5, generator=g, dtype=torch.float64) * 2
    exact = exact_log_px(x, w, b, 0.6)
    ll = m.log_likelihood(x, 5000, max_rows=4000, generator=torch.Generator().manual_seed(2))
    elbo = m.elbo(x, num_samples=20_000, generator=torch.Generator().manual_seed(3))
    elbo = elbo.elbo.detach().numpy()
    assert np.all(np.abs(ll.numpy() - exact) < 0.02)
    assert np.all(exact - elbo > 0.05)


# ------------------------------------------------------------------ bad input
def test_wrong_image_size_names_x_and_the_expected_shape():
    """Images of the wrong size raise ValueError naming x and the expected (B, 4, 4)."""
    m = small_vae()
    with pytest.raises(ValueError, match=r"x must be images of shape \(B, 4, 4\)"):
        m.elbo(torch.rand(2, 5, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="x must be images"):
        m.reconstruct(torch.rand(2, 15, dtype=torch.float64))


def test_non_tensor_and_integer_images_raise_type_error_naming_x():
    """A list or a uint8 tensor raises TypeError naming x."""
    m = small_vae()
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        m.elbo([[0.0] * 16])
    with pytest.raises(TypeError, match="x must be a floating tensor"):
        m.elbo(torch.zeros(2, 16, dtype=torch.uint8))


@pytest.mark.parametrize("lik", ["bernoulli", "continuous-bernoulli"])
def test_values_outside_unit_interval_rejected_for_bernoulli(lik):
    """Values outside [0, 1] raise ValueError naming x and the interval."""
    m = small_vae(likelihood=lik)
    x = grey(2)
    x[0, 0, 0] = 1.5
    with pytest.raises(ValueError, match=r"x must hold values in \[0, 1\]"):
        m.elbo(x)


def test_nan_images_rejected():
    """NaN pixels raise ValueError naming x."""
    m = small_vae(likelihood="gaussian")
    x = grey(2)
    x[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="x must be finite"):
        m.elbo(x)


def test_latent_size_zero_and_unknown_likelihood_rejected():
    """latent_dim=0 and an unknown likelihood name raise ValueError naming the field."""
    with pytest.raises(ValueError, match="latent_dim must be an integer >= 1; got 0"):
        VAEConfig(latent_dim=0)
    with pytest.raises(ValueError, match=r"likelihood must be one of .*'poisson'"):
        VAEConfig(likelihood="poisson")
    with pytest.raises(ValueError, match=r"likelihood must be one of .*'poisson'"):
        make_likelihood("poisson", 4)


def test_bad_arguments_of_methods_name_the_argument():
    """kl, objective, k, n, num_samples, max_rows, z and config errors each name themselves."""
    m = small_vae()
    x = grey(2)
    with pytest.raises(ValueError, match="kl must be one of"):
        m.elbo(x, kl="exact")
    with pytest.raises(ValueError, match="objective must be one of"):
        m.objective(m.flatten(x), objective="wake-sleep")
    with pytest.raises(ValueError, match="k must be >= 1"):
        m.iwae_bound(x, 0)
    with pytest.raises(ValueError, match="k must be >= 1"):
        m.log_likelihood(x, 0)
    with pytest.raises(ValueError, match="max_rows must be >= 1"):
        m.log_likelihood(x, 2, max_rows=0)
    with pytest.raises(ValueError, match="num_samples must be >= 1"):
        m.elbo(x, num_samples=0)
    with pytest.raises(ValueError, match="n must be >= 1"):
        m.sample(0)
    with pytest.raises(ValueError, match=r"z must be a tensor of shape \(\.\.\., 3\)"):
        m.decode(torch.zeros(2, 4))
    with pytest.raises(TypeError, match="config must be a VAEConfig"):
        VAE({"latent_dim": 2})


def test_gaussian_likelihood_arguments_checked():
    """A bad link or std raises ValueError naming it."""
    with pytest.raises(ValueError, match="link must be"):
        GaussianLikelihood(4, 0.1, link="exp")
    with pytest.raises(ValueError, match="std must be a finite number > 0"):
        GaussianLikelihood(4, 0.0)


# ----------------------------------------------------------- IWAE, chunked
def test_chunked_and_unchunked_log_likelihood_agree():
    """With the same noise, IWAE_k over 1-sample chunks equals the one-batch value (float32)."""
    torch.manual_seed(0)
    m = VAE(VAEConfig(**SMALL))
    x = (torch.rand(5, 16, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    eps = torch.randn(300, 5, 3, generator=torch.Generator().manual_seed(2))
    one = m.log_likelihood(x, 300, max_rows=10**6, eps=eps)
    for rows in (5, 37, 512):  # chunks of 1, 7 and 102 samples
        torch.testing.assert_close(m.log_likelihood(x, 300, max_rows=rows, eps=eps), one)
    # and the one-batch value is the log-mean-exp of the log weights, computed apart
    lw = m._log_weights(x, 300, eps=eps).double()
    torch.testing.assert_close(one.double(), torch.logsumexp(lw, 0) - math.log(300))
    with pytest.raises(ValueError, match=r"eps must have shape \(k, B, noise_dim\)"):
        m.log_likelihood(x, 300, eps=eps[:10])


def test_chunked_iwae_estimate_rises_with_k_and_stays_below_log_px():
    """Through the chunked log_likelihood, E[IWAE_k] rises over k = 1, 3, 9, 27 and stays
    below the closed-form log p(x). A poor proposal (4× the posterior variances) makes the
    gaps large; 1,200 repeats with nested draws (IWAE_k uses the first k of the same ε),
    so each gap is a paired difference, tested at 3 standard errors (the smallest z over
    four seeds of ε was 4.1, the others 9-16). Exactness at k = 5000 is tested above."""
    g = torch.Generator().manual_seed(1)
    w = torch.randn(5, 2, generator=g, dtype=torch.float64)
    b = torch.randn(5, generator=g, dtype=torch.float64)
    m = linear_gaussian_vae(w, b, 0.6, var_scale=4.0)
    x = torch.randn(3, 5, generator=g, dtype=torch.float64) * 2
    exact = torch.as_tensor(exact_log_px(x, w, b, 0.6))
    r = 1200
    xr = x.repeat(r, 1)
    eps = torch.randn(27, 3 * r, 2, generator=g, dtype=torch.float64)
    est = [
        m.log_likelihood(xr, k, max_rows=15_000, eps=eps[:k]).reshape(r, 3) for k in (1, 3, 9, 27)
    ]  # chunks of 4 samples
    for lo, hi in zip(est[:-1], est[1:], strict=True):
        diff = hi - lo
        assert (diff.mean(0) > 3 * diff.std(0) / math.sqrt(r)).all()
    top = est[-1]
    assert (top.mean(0) < exact + 3 * top.std(0) / math.sqrt(r)).all()


# ----------------------------------------------------------------- VampPrior
def _vamp(seed=0, **kw):
    return small_vae(seed, prior="vampprior", kl="mc", **kw)


def test_vampprior_log_prior_equals_a_direct_logsumexp():
    """log p(z) = log (1/K) Σ_k Π_l N(z_l; μ_kl, σ_kl), from scipy's normal density."""
    from scipy.special import logsumexp

    m = _vamp(num_pseudo_inputs=7)
    with torch.no_grad():
        m.latent_prior.raw_pseudo_inputs.uniform_(-0.2, 1.2)  # some clipped to [0, 1]
    z = torch.randn(4, 5, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    u = m.latent_prior.raw_pseudo_inputs.detach().numpy().clip(0, 1)
    loc, log_var = (t.detach().numpy() for t in m.encoder(torch.as_tensor(u)))
    comp = stats.norm.logpdf(z.numpy()[..., None, :], loc, np.exp(0.5 * log_var)).sum(-1)
    want = logsumexp(comp, axis=-1) - np.log(7)
    got = m._log_prior(z).detach().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_vampprior_with_one_standard_pseudo_posterior_is_the_standard_model():
    """K = 1 and q(z|u_1) = N(0, I): log weights, ELBO and IWAE equal the N(0, I) model's."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 16, generator=g, dtype=torch.float64)
    u = torch.rand(16, generator=g, dtype=torch.float64)
    enc = FixedEncoder(a, u, torch.ones(3, dtype=torch.float64))  # μ(u) = 0, σ(u) = 1
    base = small_vae()
    std = VAE(base.config, encoder=enc, decoder=base.decoder).double()
    vamp_cfg = base.config.replace(prior="vampprior", num_pseudo_inputs=1, kl="mc")
    vamp = VAE(vamp_cfg, encoder=enc, decoder=base.decoder).double()
    with torch.no_grad():
        vamp.latent_prior.raw_pseudo_inputs.copy_(u[None])
    x = grey(6)
    eps = torch.randn(9, 6, 3, generator=g, dtype=torch.float64)
    flat = std.flatten(x)
    torch.testing.assert_close(
        vamp._log_weights(flat, 9, eps=eps), std._log_weights(flat, 9, eps=eps)
    )
    for kw in (dict(objective="elbo", kl="mc"), dict(objective="iwae")):
        (l1, s1), (l2, s2) = (
            mm.objective(flat, num_samples=9, eps=eps, **kw) for mm in (vamp, std)
        )
        torch.testing.assert_close(l1, l2)
    # and a pseudo-posterior away from N(0, I) changes them
    with torch.no_grad():
        vamp.latent_prior.raw_pseudo_inputs.add_(0.3).clamp_(0, 1)
    assert not torch.allclose(
        vamp._log_weights(flat, 9, eps=eps), std._log_weights(flat, 9, eps=eps)
    )


def test_vampprior_gradient_reaches_the_pseudo_inputs_and_sampling_works():
    """The loss depends on the pseudo-inputs; samples have the image shape."""
    m = _vamp(num_pseudo_inputs=4)
    loss, _ = m(m.flatten(grey(5)), kl="mc")
    loss.backward()
    grad = m.latent_prior.raw_pseudo_inputs.grad
    assert grad is not None and grad.abs().sum() > 0
    assert m.sample(3, generator=torch.Generator().manual_seed(0)).shape == (3, 4, 4)


def test_prior_and_layer_configuration_errors_name_the_field():
    """The analytic KL with a VampPrior or two layers, a VampPrior on two layers, 3 layers;
    without ``kl`` the closed form is chosen where it exists, the estimate otherwise."""
    with pytest.raises(ValueError, match="kl='analytic' needs the standard normal prior"):
        VAEConfig(prior="vampprior", kl="analytic")
    with pytest.raises(ValueError, match="kl='analytic' needs the standard normal prior"):
        VAEConfig(stochastic_layers=2, kl="analytic")
    assert VAEConfig(prior="vampprior").kl == "mc"
    assert VAEConfig(stochastic_layers=2).kl == "mc"
    assert VAEConfig().kl == "analytic"
    assert VAEConfig.from_json(VAEConfig(prior="vampprior").to_json()).kl == "mc"
    # replace re-resolves a default kl, and keeps an explicit one (and checks it)
    assert VAEConfig().replace(prior="vampprior").kl == "mc"
    assert VAEConfig(prior="vampprior").replace(prior="standard").kl == "analytic"
    assert VAEConfig(kl="mc").replace(stochastic_layers=1).kl == "mc"
    with pytest.raises(ValueError, match="kl='analytic' needs the standard normal prior"):
        VAEConfig(kl="analytic").replace(prior="vampprior")
    with pytest.raises(ValueError, match="stochastic_layers=2 .* needs prior='standard'"):
        VAEConfig(stochastic_layers=2, prior="vampprior", kl="mc")
    with pytest.raises(ValueError, match=r"stochastic_layers must be one of \[1, 2\]; got 3"):
        VAEConfig(stochastic_layers=3, kl="mc")
    with pytest.raises(ValueError, match="prior must be one of"):
        VAEConfig(prior="flow")
    with pytest.raises(ValueError, match="num_pseudo_inputs must be an integer >= 1"):
        VAEConfig(prior="vampprior", kl="mc", num_pseudo_inputs=0)
    m = small_vae()
    m2 = small_vae(stochastic_layers=2, kl="mc", top_hidden=(5,), top_latent_dim=2)
    assert m.elbo(grey(2)).elbo.shape == (2,)
    with pytest.raises(ValueError, match="kl='analytic' needs the standard normal prior"):
        m2.elbo(grey(2), kl="analytic")


# ---------------------------------------------------- two stochastic layers
def _two_layer(seed=0):
    return small_vae(seed, stochastic_layers=2, kl="mc", top_hidden=(6, 5), top_latent_dim=2)


def test_two_layer_elbo_equals_an_independent_computation():
    """ELBO = mean_s [log p(x|z1) + log p(z1|z2) + log N(z2; 0, I) − log q(z1|x) − log q(z2|z1)]
    rebuilt from the networks with torch.distributions, at the same ε."""
    from torch.distributions import Bernoulli

    m = _two_layer()
    x = (grey(4, seed=1) > 0.5).double().reshape(4, 16)
    eps = torch.randn(6, 4, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert m.noise_dim == 5
    loss, sums = m.objective(x, num_samples=6, kl="mc", eps=eps)
    loc1, lv1 = m.encoder(x)
    z1 = loc1 + (0.5 * lv1).exp() * eps[..., :3]
    loc2, lv2 = m.latent_prior.up(z1)
    z2 = loc2 + (0.5 * lv2).exp() * eps[..., 3:]
    ploc1, plv1 = m.latent_prior.down(z2)
    log_px = Bernoulli(logits=m.decoder(z1)).log_prob(x).sum(-1)
    log_p = (
        log_px
        + Normal(ploc1, (0.5 * plv1).exp()).log_prob(z1).sum(-1)
        + Normal(0.0, 1.0).log_prob(z2).sum(-1)
    )
    log_q = Normal(loc1, (0.5 * lv1).exp()).log_prob(z1).sum(-1) + Normal(
        loc2, (0.5 * lv2).exp()
    ).log_prob(z2).sum(-1)
    elbo = (log_p - log_q).mean(0)
    torch.testing.assert_close(-loss, elbo.mean())
    torch.testing.assert_close(sums[0], elbo.sum())
    torch.testing.assert_close(sums[1], log_px.mean(0).sum())
    iwae_loss, _ = m.objective(x, objective="iwae", num_samples=6, eps=eps)
    torch.testing.assert_close(-iwae_loss, (torch.logsumexp(log_p - log_q, 0) - math.log(6)).mean())


class _LinearGaussianLayer(nn.Module):
    """z2 ↦ (W z2 + c, log s²): the Gaussian p(z1|z2) of a linear model."""

    def __init__(self, w, c, s):
        super().__init__()
        self.w, self.c, self.log_var = (
            w,
            c,
            torch.full((w.shape[0],), 2 * math.log(s), dtype=w.dtype),
        )

    def forward(self, z2):
        loc = z2 @ self.w.T + self.c
        return loc, self.log_var.expand_as(loc)


def test_two_layer_iwae_approaches_the_exact_log_likelihood_of_a_linear_gaussian_model():
    """z2 ~ N(0, I), z1 = W2 z2 + c + s·n, x = W1 z1 + b + σ·n: x ~ N(b + W1 c, W1(W2W2ᵀ +
    s²I)W1ᵀ + σ²I). Proposals: exact posterior means with 1.5× the marginal variances.
    IWAE_5000 (chunked) is within 0.03 nats of log p(x) (scipy); the ELBO is below by > 0.05."""
    from varbayes.vae.priors import TwoLayerPrior

    g = torch.Generator().manual_seed(4)
    d, l1, l2, sigma, s = 5, 3, 2, 0.6, 0.7
    w1 = torch.randn(d, l1, generator=g, dtype=torch.float64)
    b = torch.randn(d, generator=g, dtype=torch.float64)
    w2 = torch.randn(l1, l2, generator=g, dtype=torch.float64)
    c = torch.randn(l1, generator=g, dtype=torch.float64) * 0.5
    eye = lambda n: torch.eye(n, dtype=torch.float64)  # noqa: E731
    cov1 = w2 @ w2.T + s**2 * eye(l1)  # marginal covariance of z1
    # q(z1|x): the posterior of z1 given x under the marginal p(z1) = N(c, cov1)
    post1 = torch.linalg.inv(torch.linalg.inv(cov1) + w1.T @ w1 / sigma**2)
    a1 = post1 @ w1.T / sigma**2  # E[z1|x] = c + a1 (x − b − W1 c)
    enc = FixedEncoder(a1, b + w1 @ c, torch.diagonal(post1) * 1.5)
    enc_forward = enc.forward
    enc.forward = lambda x: (enc_forward(x)[0] + c, enc_forward(x)[1])
    # q(z2|z1): the posterior of z2 given z1
    post2 = torch.linalg.inv(eye(l2) + w2.T @ w2 / s**2)
    up = FixedEncoder(post2 @ w2.T / s**2, c, torch.diagonal(post2) * 1.5)
    prior = TwoLayerPrior(up, _LinearGaussianLayer(w2, c, s), l2)
    dec = nn.Linear(l1, d).double()
    with torch.no_grad():
        dec.weight.copy_(w1)
        dec.bias.copy_(b)
    cfg = VAEConfig(image_shape=(1, d), hidden=(), latent_dim=l1, likelihood="gaussian",
                    stochastic_layers=2, top_latent_dim=l2, kl="mc")  # fmt: skip
    lik = GaussianLikelihood(d, sigma, link="identity").double()
    m = VAE(cfg, encoder=enc, decoder=dec, likelihood=lik, latent_prior=prior).double()
    x = torch.randn(4, d, generator=g, dtype=torch.float64) * 2 + b
    cov_x = w1 @ cov1 @ w1.T + sigma**2 * eye(d)
    exact = stats.multivariate_normal((b + w1 @ c).numpy(), cov_x.numpy()).logpdf(x.numpy())
    ll = m.log_likelihood(x, 5000, max_rows=4000, generator=torch.Generator().manual_seed(5))
    elbo = m.elbo(x, kl="mc", num_samples=20_000, generator=torch.Generator().manual_seed(6))
    assert np.all(np.abs(ll.numpy() - exact) < 0.03)
    assert np.all(exact - elbo.elbo.detach().numpy() > 0.05)


def test_two_layer_model_samples_and_trains_one_step():
    """Samples go z2 → z1 → x; the IWAE loss reaches every weight of both layers."""
    m = _two_layer()
    assert m.sample(4, generator=torch.Generator().manual_seed(0)).shape == (4, 4, 4)
    loss, sums = m(m.flatten(grey(5)), objective="iwae", num_samples=3)
    loss.backward()
    assert torch.isfinite(loss) and sums.shape == (3,)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
    names = {n.split(".")[0] + "." + n.split(".")[1] for n, _ in m.named_parameters()}
    assert {"latent_prior.up", "latent_prior.down"} <= names


@pytest.mark.parametrize("kl", ["analytic", "mc"])
def test_beta_weighted_training_loss_equals_a_hand_computation(kl):
    """loss = −mean_b [mean_s log p(x_b|z_s) − β·KL_b], KL closed form ½Σ(μ²+σ²−log σ²−1)
    or mean_s [log q(z_s|x_b) − log N(z_s; 0, I)], rebuilt with torch.distributions."""
    from torch.distributions import Bernoulli

    m = small_vae(seed=3)
    x = (grey(5, seed=4) > 0.5).double().reshape(5, 16)
    eps = torch.randn(4, 5, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    loss, sums = m.objective(x, num_samples=4, kl=kl, beta=0.5, eps=eps)
    loc, log_var = m.encoder(x)
    scale = (0.5 * log_var).exp()
    z = loc + scale * eps
    recon = Bernoulli(logits=m.decoder(z)).log_prob(x).sum(-1).mean(0)
    if kl == "analytic":
        kl_b = 0.5 * (loc**2 + scale**2 - log_var - 1).sum(-1)
    else:
        log_q = Normal(loc, scale).log_prob(z).sum(-1)
        kl_b = (log_q - Normal(0.0, 1.0).log_prob(z).sum(-1)).mean(0)
    torch.testing.assert_close(loss, -(recon - 0.5 * kl_b).mean())
    torch.testing.assert_close(sums, torch.stack([(recon - kl_b).sum(), recon.sum(), kl_b.sum()]))


def test_standard_normal_kl_is_torchs_kl_and_compiles_as_one_graph():
    """The written-out KL(N(μ, σ²) || N(0, I)) equals torch's ``kl_divergence`` of the two
    Normals bit for bit, and traces under ``torch.compile(fullgraph=True)``."""
    from torch.distributions import Independent, kl_divergence

    from varbayes.vae.priors import StandardNormalPrior

    g = torch.Generator().manual_seed(3)
    loc = torch.randn(64, 7, generator=g) * 3
    scale = torch.rand(64, 7, generator=g) * 4 + 1e-3
    prior = StandardNormalPrior()
    q = Independent(Normal(loc, scale), 1)
    p = Independent(Normal(torch.zeros_like(loc), torch.ones_like(loc)), 1)
    assert torch.equal(prior.kl(loc, scale), kl_divergence(q, p))
    compiled = torch.compile(prior.kl, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(loc, scale), kl_divergence(q, p))
