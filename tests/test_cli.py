"""The `varbayes` command: --help, --version, the heights job, and its errors."""

import subprocess
import sys

import pytest
import torch
from scipy import stats

import varbayes
from varbayes.cli import main
from varbayes.heights import heights_data, heights_example


def test_version_and_help(capsys):
    """--version prints the package version; --help lists the conjugate command."""
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert varbayes.__version__ in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "conjugate" in capsys.readouterr().out


def test_group_without_subcommand_prints_its_help(capsys):
    """`varbayes conjugate` alone prints the group's help listing `heights`."""
    assert main(["conjugate"]) == 0
    assert "heights" in capsys.readouterr().out


def test_heights_prints_three_estimates_and_writes_figure(tmp_path, capsys):
    """`varbayes conjugate heights` prints prior, MLE, posterior and writes a PNG."""
    out = tmp_path / "h.png"
    assert main(["conjugate", "heights", "--plot", str(out), "--n", "30", "--seed", "3"]) == 0
    text = capsys.readouterr().out
    for word in ("prior", "MLE", "posterior", "95% interval", "log evidence"):
        assert word in text
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list(tmp_path.iterdir()) == [out]  # no temporary files left
    # the printed posterior mean is the closed form (1/σ0² + n/σ²)^-1 (μ0/σ0² + Σx/σ²)
    x = heights_data(30, 183.0, 7.0, 3).numpy()
    prec = 1 / 10.0**2 + 30 / 7.0**2
    mean = (160.0 / 10.0**2 + x.sum() / 7.0**2) / prec
    line = next(l for l in text.splitlines() if l.startswith("posterior"))
    assert float(line.split()[1]) == pytest.approx(mean, abs=0.005)


def test_heights_reads_data_file_and_flags(tmp_path, capsys):
    """--data reads one height per line; flags change the prior."""
    data = tmp_path / "h.csv"
    data.write_text("180\n185\n190\n")
    assert (
        main(
            [
                "conjugate",
                "heights",
                "--data",
                str(data),
                "--prior-mean",
                "170",
                "--prior-std",
                "5",
                "--no-plot",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "n = 3" in text and "170.00" in text
    assert not list(tmp_path.glob("*.png"))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--prior-std", "0"], "prior_std must be > 0"),
        (["--noise-std", "-1"], "noise_std must be > 0"),
        (["--data", "missing.csv"], "--data: no such file"),
        (["--level", "2"], "level must lie in"),
        (["--n", "0"], "n must be >= 1"),
    ],
)
def test_heights_bad_flags_give_clear_errors(args, message, tmp_path, capsys, monkeypatch):
    """Bad flag values exit with status 2 and a message naming the argument; no figure."""
    monkeypatch.chdir(tmp_path)
    assert main(["conjugate", "heights", *args]) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.glob("*.png"))


def test_heights_bad_data_file(tmp_path, capsys):
    """A data file with text in it is an error naming --data."""
    bad = tmp_path / "bad.txt"
    bad.write_text("180\nabc\n")
    assert main(["conjugate", "heights", "--data", str(bad), "--no-plot"]) == 2
    assert "--data" in capsys.readouterr().err


def test_heights_intervals_match_scipy():
    """Prior/MLE/posterior intervals equal scipy.stats.norm.interval of the closed forms."""
    x = heights_data(12, 185.0, 6.0, 1)
    r = heights_example(x, prior_mean=160.0, prior_std=10.0, noise_std=6.0, level=0.9)
    assert r.prior[1] == pytest.approx(stats.norm.interval(0.9, 160.0, 10.0))
    xbar = float(x.mean())
    assert r.mle[1] == pytest.approx(stats.norm.interval(0.9, xbar, 6.0 / 12**0.5))
    prec = 1 / 100 + 12 / 36
    mean = (160.0 / 100 + float(x.sum()) / 36) / prec
    assert r.posterior[0] == pytest.approx(mean)
    assert r.posterior[1] == pytest.approx(stats.norm.interval(0.9, mean, prec**-0.5))


def test_console_script_runs(tmp_path):
    """`python -m varbayes` runs the command in a fresh process."""
    res = subprocess.run(
        [sys.executable, "-m", "varbayes", "conjugate", "heights", "--no-plot"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    assert "posterior" in res.stdout


def test_failed_figure_leaves_nothing(tmp_path):
    """A figure that fails to render leaves no file and no temporary behind."""
    from varbayes.plot import plot_densities

    class Broken(torch.distributions.Normal):
        def log_prob(self, value):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        plot_densities({"x": Broken(0.0, 1.0)}, tmp_path / "f.png", grid=torch.linspace(-1, 1, 5))
    assert list(tmp_path.iterdir()) == []


def _raise(exc):
    def func(args):
        raise exc

    return func


@pytest.mark.parametrize(
    "exc, code",
    [
        (ValueError("--x must be >= 1; got 0"), 2),
        (TypeError("--x must be an integer"), 2),
        (FileNotFoundError(2, "No such file or directory", "data.csv"), 2),
        (FloatingPointError("ELBO became nan at step 3"), 2),
        (RuntimeError("an unexpected failure"), 1),
        (KeyError("oops"), 1),
        (KeyboardInterrupt(), 130),
    ],
)
def test_one_error_policy_for_every_command(exc, code, monkeypatch, capsys):
    """Anticipated failures exit 2, bugs exit 1 pointing at --debug, Ctrl-C 130; always one
    line and no traceback, and --debug adds the traceback."""
    import varbayes.cli.conjugate as conj

    monkeypatch.setattr(conj, "_heights", _raise(exc))
    assert main(["conjugate", "heights"]) == code
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    if code == 2:
        assert err.startswith("varbayes: error: ")
        text = "data.csv: No such file or directory" if isinstance(exc, OSError) else str(exc)
        assert text in err
    if code == 1:
        assert f"internal error (a bug in varbayes): {type(exc).__name__}" in err
        assert "--debug" in err
    assert main(["--debug", "conjugate", "heights"]) == code
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err


def test_help_states_the_exit_statuses(capsys):
    """--help documents exit statuses 2 (bad input) and 1 (a bug) and the --debug flag."""
    with pytest.raises(SystemExit):
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "2 bad input" in out and "1 an unexpected error, which is a bug" in out
    assert "--debug" in out
