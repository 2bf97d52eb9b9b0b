"""`varbayes gmm fit`: output, saved model, figure, and failures that write nothing."""

import numpy as np
import pytest
from sklearn.mixture import GaussianMixture as SkGaussianMixture

from varbayes.cli import main
from varbayes.mixture import load


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return np.concatenate([rng.normal(size=(200, 2)) + 6, rng.normal(size=(150, 2)) * 0.6])


def test_fit_npy_prints_likelihood_bic_aic_and_saves(tmp_path, data, capsys):
    """The printed log-likelihood and BIC agree with scikit-learn fitted to the same file;
    --save writes a loadable model and --plot a PNG."""
    np.save(tmp_path / "x.npy", data)
    rc = main(
        [
            "gmm", "fit", str(tmp_path / "x.npy"), "-k", "2",
            "--save", str(tmp_path / "model"), "--plot", str(tmp_path / "fig.png"),
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0
    sk = SkGaussianMixture(2, random_state=0).fit(data)
    ll = float(out.split("log-likelihood per datum: ")[1].split()[0])
    bic = float(out.split("BIC: ")[1].split()[0])
    assert ll == pytest.approx(sk.score(data), abs=1e-5)
    assert bic == pytest.approx(sk.bic(data), rel=1e-6)
    assert "converged: yes" in out and "iterations:" in out and "AIC:" in out
    assert load(tmp_path / "model").n_components == 2
    assert (tmp_path / "fig.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("cov", ["full", "tied"])
def test_fit_csv_variational_reports_effective_components(tmp_path, data, capsys, cov):
    """--variational on a CSV with a header prints the ELBO (the one of the Python API)
    and the effective components, for every covariance type."""
    np.savetxt(tmp_path / "x.csv", data, delimiter=",", header="a,b", comments="")
    args = ["gmm", "fit", str(tmp_path / "x.csv"), "-k", "5", "--variational"]
    rc = main([*args, "--covariance", cov, "--save", str(tmp_path / "m")])
    out = capsys.readouterr().out
    assert rc == 0
    assert "ELBO per datum:" in out and "effective components:" in out
    elbo = float(out.split("ELBO per datum: ")[1].split()[0])
    model = load(tmp_path / "m")
    assert model.covariance_type == cov
    assert elbo == pytest.approx(model.lower_bound_, abs=1e-6)


def test_unreadable_or_missing_data_fails_and_writes_nothing(tmp_path, capsys):
    """A missing, non-numeric or unsupported DATA file exits 2 naming DATA; nothing is saved."""
    (tmp_path / "bad.csv").write_text("a,b\nx,y\n")
    (tmp_path / "x.txt.gz").write_text("1")
    for path in ["missing.csv", "bad.csv", "x.txt.gz"]:
        rc = main(["gmm", "fit", str(tmp_path / path), "-k", "2", "--save", str(tmp_path / "m")])
        assert rc == 2
        assert "DATA" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_failing_fit_writes_nothing(tmp_path, capsys):
    """Fewer rows than components: exit 2 naming X, no model and no figure written."""
    np.save(tmp_path / "x.npy", np.ones((3, 2)))
    rc = main(
        [
            "gmm", "fit", str(tmp_path / "x.npy"), "-k", "5",
            "--save", str(tmp_path / "m"), "--plot", str(tmp_path / "f.png"),
        ]
    )  # fmt: skip
    assert rc == 2
    assert "n_components = 5, n_samples = 3" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [tmp_path / "x.npy"]


def test_gmm_without_subcommand_prints_its_help(capsys):
    """`varbayes gmm` alone prints the group's help listing `fit`."""
    main(["gmm"])
    assert "fit" in capsys.readouterr().out


def test_three_dimensional_array_is_rejected(tmp_path, capsys):
    """A .npy holding a 3-D array exits 2 naming DATA and the shape."""
    np.save(tmp_path / "x.npy", np.ones((4, 2, 2)))
    assert main(["gmm", "fit", str(tmp_path / "x.npy"), "-k", "2"]) == 2
    assert "DATA must hold a 2-D array" in capsys.readouterr().err


def test_overflowing_data_fails_cleanly_and_writes_nothing(tmp_path, capsys):
    """Values whose squares overflow float64: exit 2 naming X, nothing saved."""
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.normal(size=(50, 2)) * 1e200)
    rc = main(["gmm", "fit", str(tmp_path / "x.npy"), "-k", "2", "--save", str(tmp_path / "m")])
    assert rc == 2
    assert "X: the variance of the data overflows" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_distributed_fit_checks_its_data_before_starting(tmp_path, capsys):
    """`gmm fit --distributed` (what `torchrun -m varbayes.mixture` runs) names DATA for a
    1-D, missing or non-.npy file, exit 2, before any process group starts."""
    import torch.distributed

    np.save(tmp_path / "v.npy", np.ones(5))
    (tmp_path / "x.csv").write_text("1,2\n3,4\n")
    cases = [("v.npy", "DATA must hold a 2-D array"), ("missing.npy", "reads a .npy file")]
    for name, match in cases + [("x.csv", "reads a .npy file")]:
        assert main(["gmm", "fit", "--distributed", str(tmp_path / name), "-k", "2"]) == 2
        assert match in capsys.readouterr().err
    assert not torch.distributed.is_initialized()


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--seed", "-1"], "--seed must be an integer >= 0; got -1"),
        (["--device", "nonsense"], "--device 'nonsense' is not usable"),
        (["--plot", "nodir/x.png"], "--plot: directory '{tmp}/nodir' does not exist"),
    ],
)
def test_bad_options_fail_before_fitting_and_write_nothing(tmp_path, data, capsys, extra, match):
    """One line on stderr naming the flag, exit 2, no model directory (even with --save)."""
    np.save(tmp_path / "x.npy", data)
    extra = [str(tmp_path / e) if e.startswith("nodir") else e for e in extra]
    match = match.format(tmp=tmp_path)
    rc = main(
        ["gmm", "fit", str(tmp_path / "x.npy"), "-k", "2", "--save", str(tmp_path / "m")] + extra
    )
    err = capsys.readouterr().err
    assert rc == 2 and match in err
    assert len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]


def test_cuda_on_a_cpu_build_is_one_line(tmp_path, data, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    np.save(tmp_path / "x.npy", data)
    assert main(["gmm", "fit", str(tmp_path / "x.npy"), "-k", "2", "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "--device 'cuda' is not usable" in err and len(err.strip().splitlines()) == 1


def test_directory_or_text_named_npy_as_data_names_the_file(tmp_path, capsys):
    (tmp_path / "d.npy").mkdir()
    (tmp_path / "t.npy").write_text("1,2\n3,4\n")
    for name, match in [("d.npy", "is a directory"), ("t.npy", "could not read numbers")]:
        rc = main(["gmm", "fit", str(tmp_path / name), "-k", "2", "--save", str(tmp_path / "m")])
        err = capsys.readouterr().err
        assert (
            rc == 2
            and "DATA" in err
            and repr(str(tmp_path / name)) in err
            and match in err
            and len(err.strip().splitlines()) == 1
        )
    assert not (tmp_path / "m").exists()
