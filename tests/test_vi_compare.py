"""The four modes on Bayesian linear regression, and the ``varbayes vi demo`` command."""

import pytest
import torch

from varbayes.cli import main
from varbayes.vi.compare import compare_modes, plot_marginals, synthetic_linear_data

D64 = torch.float64


@pytest.fixture(scope="module")
def comparison():
    torch.set_num_threads(1)
    X, y, _ = synthetic_linear_data(n=40, d=3, correlation=0.8, noise_scale=0.8, seed=1)
    # the exact posterior, written out here independently of varbayes
    prec = X.T @ X / 0.8**2 + torch.eye(3, dtype=D64) / 1.5**2
    mean = torch.linalg.solve(prec, X.T @ y / 0.8**2)
    cov_y = 0.8**2 * torch.eye(40, dtype=D64) + 1.5**2 * X @ X.T
    log_z = torch.distributions.MultivariateNormal(torch.zeros(40, dtype=D64), cov_y).log_prob(y)
    comp = compare_modes(X, y, noise_scale=0.8, prior_scale=1.5, seed=0)
    return comp, mean, prec, float(log_z)


def test_exact_row_is_the_closed_form_posterior_with_elbo_equal_to_log_evidence(comparison):
    """The exact mode has the closed-form mean/stds, KL 0 and ELBO = log p(y)."""
    comp, mean, prec, log_z = comparison
    ex = comp["exact"]
    torch.testing.assert_close(ex.mean, mean)
    torch.testing.assert_close(ex.std, torch.linalg.inv(prec).diagonal().sqrt())
    assert ex.elbo == pytest.approx(log_z, abs=1e-9) and comp.log_evidence == pytest.approx(log_z)


def test_map_is_the_posterior_mode(comparison):
    """MAP (L-BFGS from zero) equals the posterior mean = mode of the Gaussian posterior."""
    comp, mean, _, _ = comparison
    torch.testing.assert_close(comp["MAP"].mean, mean, rtol=0, atol=1e-6)


def test_mean_field_has_exact_mean_and_too_small_variances(comparison):
    """Mean-field VI: mean exact, variances 1/Λ_dd, each below the exact marginal variance."""
    comp, mean, prec, log_z = comparison
    mf = comp["mean-field VI"]
    torch.testing.assert_close(mf.mean, mean, rtol=0, atol=1e-5)
    torch.testing.assert_close(mf.std**2, 1 / prec.diagonal())
    assert (mf.std < comp["exact"].std).all()
    assert mf.kl > 0.1 and mf.elbo < log_z


def test_full_rank_svi_recovers_the_exact_posterior_and_all_elbos_are_below_log_evidence(
    comparison,
):
    """Full-rank SVI: KL(q||p) < 1e-6; every ELBO <= log p(y) (SVI's within Monte Carlo error)."""
    comp, mean, _, log_z = comparison
    fr = comp["full-rank SVI"]
    assert fr.kl < 1e-6
    torch.testing.assert_close(fr.mean, mean, rtol=0, atol=1e-3)
    # ELBO estimate with 4096 particles: its sd is ~sqrt(2·KL)/64, tiny; allow 1e-3
    assert fr.elbo <= log_z + 1e-3 and fr.elbo == pytest.approx(log_z, abs=1e-3)
    assert comp["mean-field VI"].elbo < fr.elbo
    table = comp.to_string()
    for name in ("exact", "MAP", "mean-field VI", "full-rank SVI", "log evidence"):
        assert name in table


def test_plot_marginals_writes_a_png(comparison, tmp_path):
    """plot_marginals writes a PNG file."""
    out = tmp_path / "m.png"
    plot_marginals(comparison[0], out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_synthetic_data_rejects_bad_correlation():
    """correlation outside (-1, 1) is a ValueError naming correlation."""
    with pytest.raises(ValueError, match="correlation"):
        synthetic_linear_data(correlation=1.0)


def test_cli_vi_demo_prints_the_table_and_writes_the_figure(tmp_path, capsys):
    """`varbayes vi demo` prints the four rows and writes the PNG; `varbayes vi` prints help."""
    out = tmp_path / "fm.png"
    assert main(["vi", "demo", "--steps", "400", "--plot", str(out)]) == 0
    text = capsys.readouterr().out
    for name in ("exact", "MAP", "mean-field VI", "full-rank SVI"):
        assert name in text
    assert out.exists()
    assert main(["vi"]) == 0
    assert "demo" in capsys.readouterr().out


@pytest.mark.parametrize(
    "flag,value", [("--n", "0"), ("--steps", "0"), ("--lr", "-1"), ("--noise-std", "0")]
)
def test_cli_vi_demo_rejects_bad_values(flag, value, capsys):
    """Bad numbers exit with status 2 and an error naming the flag."""
    assert main(["vi", "demo", "--no-plot", flag, value]) == 2
    assert flag in capsys.readouterr().err
