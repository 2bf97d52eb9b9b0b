"""Bad flags and files on the command line: one error line naming the flag, exit 2, nothing written.

Each case runs ``varbayes ARGV`` in an empty working folder holding a few prepared
files, then checks the exit status, that stderr is one ``varbayes: error:`` line without
a traceback naming the flag or file, and that the folder is exactly as it was.
"""

from __future__ import annotations

import pytest
import torch

from .helpers import assert_one_line_error, run_cli, snapshot

H = ["conjugate", "heights", "--no-plot"]
V = ["vi", "demo", "--no-plot", "--steps", "20"]
T = ["vae", "train", "--no-progress", "--out", "newrun"]
G = ["gmm", "fit", "rows.csv", "-k", "2"]

# (argv, fragments the one error line must hold)
CASES = [
    # conjugate heights: prior, noise, level, synthetic data
    *[(H + [f"--prior-std={v}"], ["prior_std"]) for v in ("0", "-1", "nan", "inf", "-inf")],
    *[(H + ["--noise-std", v], ["noise_std"]) for v in ("0", "-1", "nan", "inf")],
    *[(H + [f"--prior-mean={v}"], ["prior_mean"]) for v in ("nan", "inf", "-inf")],
    *[(H + ["--level", v], ["level"]) for v in ("0", "1", "2", "-0.5", "nan")],
    *[(H + ["--n", v], ["n must be >= 1"]) for v in ("0", "-3")],
    *[(H + [f"--true-mean={v}"], ["--true-mean"]) for v in ("nan", "inf", "-inf")],
    *[(H + [f"--true-mean={v}"], ["--true-mean", "float64"]) for v in ("1e308", "-1e308", "1e300")],
    *[(H + ["--n", v], ["--n"]) for v in ("abc", "1.5")],  # argparse
    # conjugate heights: data files
    (H + ["--data", "missing.csv"], ["--data", "no such file", "missing.csv"]),
    (H + ["--data", "adir"], ["--data", "adir", "is a directory"]),
    (H + ["--data", "text.csv"], ["--data", "text.csv"]),
    (H + ["--data", "empty.csv"], ["--data", "empty.csv", "no numbers"]),
    (H + ["--data", "two.csv"], ["--data", "one height per line"]),
    (H + ["--data", "nan.csv"], ["--data", "nan.csv", "finite"]),
    (H + ["--data", "inf.csv"], ["--data", "inf.csv", "finite"]),
    (H + ["--data", "huge.csv"], ["--data", "huge.csv", "float64"]),
    (H + ["--data", "binary.csv"], ["--data", "binary.csv"]),
    (["conjugate", "heights", "--plot", "nodir/h.png"], ["--plot", "nodir", "does not exist"]),
    (["conjugate", "heights", "--plot", "adir"], ["--plot", "adir", "is a directory"]),
    # vi demo
    *[
        (V + [f"--{f}", v], [f"--{f} must be >= 1"])
        for f in ("n", "dim", "steps", "particles")
        for v in ("0", "-2")
    ],
    *[
        (V + [f"--{f}", v], [f"--{f} must be > 0"])
        for f in ("noise-std", "prior-std", "lr")
        for v in ("0", "-1", "nan")
    ],
    *[(V + ["--correlation", v], ["--correlation"]) for v in ("1", "1.5", "-1", "nan")],
    (V + ["--lr", "100"], ["--lr 100", "diverged"]),
    (V + ["--lr", "1e6"], ["--lr 1e+06", "diverged"]),
    (["vi", "demo", "--steps", "5", "--plot", "nodir/v.png"], ["--plot", "nodir"]),
    (["vi", "demo", "--steps", "5", "--plot", "adir"], ["--plot", "adir", "is a directory"]),
    # vae train: configuration flags (named by flag and field)
    *[
        (T + [flag, v], [flag, field])
        for flag, field, v in [
            ("--latent-dim", "latent_dim", "0"),
            ("--latent-dim", "latent_dim", "-1"),
            ("--k", "num_samples", "0"),
            ("--lr", "lr", "0"),
            ("--lr", "lr", "-1"),
            ("--lr", "lr", "nan"),
            ("--lr", "lr", "inf"),
            ("--beta", "beta", "-1"),
            ("--beta", "beta", "nan"),
            ("--epochs", "epochs", "0"),
            ("--val-size", "val_size", "-1"),
            ("--train-size", "train_size", "0"),
            ("--batch-size", "batch_size", "0"),
            ("--gaussian-std", "gaussian_std", "0"),
            ("--gaussian-std", "gaussian_std", "-2"),
            ("--warmup-epochs", "warmup_epochs", "-1"),
            ("--seed", "seed", "-1"),
        ]
    ],
    (T + ["--objective", "iwae", "--beta", "2"], ["iwae", "beta"]),
    (T + ["--likelihood", "gaussian", "--binarize", "dynamic"], ["binarize", "likelihood"]),
    *[
        (T + [flag, "bogus"], [flag])
        for flag in (
            "--activation",
            "--likelihood",
            "--objective",
            "--kl",
            "--arch",
            "--dataset",
            "--binarize",
            "--lr-schedule",
        )
    ],  # argparse choices
    *[
        (T + [flag, v], [flag])
        for flag, v in [
            ("--hidden", "a,b"),
            ("--epochs", "1.5"),
            ("--latent-dim", "two"),
            ("--lr", "fast"),
        ]
    ],  # argparse types
    (T + ["--log-every", "0"], ["--log-every must be >= 1"]),
    (T + ["--threads", "-1"], ["--threads must be >= 0"]),
    # vae train: device and run directory
    *[(T + ["--device", d], ["--device", "cpu"]) for d in ("nonsense", "", "cuda:x", "gpu")],
    *[(T + ["--device", d], ["--device", d, "not available"]) for d in ("cuda", "cuda:7")],
    (["vae", "train", "--out", "afile"], ["--out", "afile", "is a file"]),
    (["vae", "train", "--out", "afile/sub"], ["--out", "afile/sub", "is a file"]),
    (["vae", "train", "--resume", "--out", "adir"], ["adir", "not found"]),
    (["vae", "train", "--resume", "--out", "missing"], ["missing", "not found"]),
    # vae eval / plot without a checkpoint
    (["vae", "eval", "missing"], ["missing", "not found"]),
    (["vae", "eval", "adir"], ["adir", "not found"]),
    (["vae", "eval", "afile"], ["afile", "not found"]),
    (["vae", "plot", "missing"], ["missing", "not found"]),
    (["vae", "plot", "adir"], ["adir", "not found"]),
    (["vae", "eval", "adir", "--device", "nonsense"], ["--device", "nonsense"]),
    (["vae", "eval", "adir", "--device", "cuda"], ["--device", "not available"]),
    *[
        (["vae", "eval", "adir", flag, v], [f"{flag} must be >= {low}"])
        for flag, v, low in [
            ("--test-size", "0", 1),
            ("--test-size", "-1", 1),
            ("--k", "-1", 0),
            ("--batch-size", "0", 1),
        ]
    ],
    (["vae", "eval", "adir", "--threads", "-1"], ["--threads must be >= 0"]),
    (["vae", "eval", "adir", "--json", "nodir/e.json"], ["--json", "nodir", "does not exist"]),
    (["vae", "eval", "adir", "--json", "adir"], ["--json", "adir", "is a directory"]),
    *[
        (["vae", "plot", "adir", flag, v], [f"{flag} must be >= 1"])
        for flag, v in [
            ("--grid", "0"),
            ("--grid", "-3"),
            ("--test-size", "0"),
            ("--test-size", "-1"),
        ]
    ],
    (["vae", "plot", "adir", "--out-dir", "afile"], ["--out-dir", "afile", "is a file"]),
    # gmm fit (the mixture CLI)
    *[
        (G + [flag, v], [flag])
        for flag, v in [
            ("--seed", "-1"),
            ("--device", "nonsense"),
            ("--device", "cuda"),
            ("--device", "cuda:9"),
        ]
    ],
    *[
        (G + [flag, v], [name])
        for flag, v, name in [
            ("-k", "0", "n_components"),
            ("--tol", "-1", "tol"),
            ("--n-init", "0", "n_init"),
            ("--max-iter", "-1", "max_iter"),
        ]
    ],
    (["gmm", "fit", "adir", "-k", "2"], ["DATA", "adir", "is a directory"]),
    (["gmm", "fit", "missing.csv", "-k", "2"], ["DATA", "missing.csv"]),
    (["gmm", "fit", "text.csv", "-k", "2"], ["DATA", "text.csv"]),
    (["gmm", "fit", "fake.npy", "-k", "2"], ["DATA", "fake.npy", "not a NumPy .npy file"]),
    (G + ["--save", "model", "--plot", "nodir/fit.png"], ["--plot", "nodir"]),
    (G + ["--save", "afile/model"], ["--save", "afile", "is a file"]),
    (G + ["--covariance", "bogus"], ["--covariance"]),  # argparse choices
    # the command itself
    (["nosuchcommand"], ["invalid choice"]),
    (["vae", "nosuch"], ["invalid choice"]),
    (["conjugate", "heights", "--no-such-flag"], ["unrecognized arguments"]),
]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """An empty working folder with a few prepared inputs."""
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("not a directory\n")
    (tmp_path / "text.csv").write_text("180\nabc\n")
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "two.csv").write_text("1,2\n3,4\n")
    (tmp_path / "nan.csv").write_text("180\nnan\n")
    (tmp_path / "inf.csv").write_text("180\ninf\n")
    (tmp_path / "huge.csv").write_text("1e308\n" * 5)
    (tmp_path / "binary.csv").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    (tmp_path / "fake.npy").write_text("hello\n")
    rows = torch.randn(40, 2, generator=torch.Generator().manual_seed(0))
    (tmp_path / "rows.csv").write_text("\n".join(f"{a},{b}" for a, b in rows.tolist()))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("argv, fragments", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_input_is_one_line_naming_it_and_exit_2(argv, fragments, workdir, capsys):
    """Exit 2, one error line naming the flag or file, the folder unchanged."""
    before = snapshot(workdir)
    code, _, err = run_cli(argv, capsys)
    assert code == 2, err
    if "invalid choice" in fragments or any("unrecognized" in f for f in fragments):
        assert fragments[0] in err  # argparse's own usage message
    elif err.count("\n") > 1 and "usage:" in err:  # argparse type/choice errors: usage + 1 line
        assert "Traceback" not in err
        assert all(f in err for f in fragments), err
    else:
        assert_one_line_error(err, *fragments)
    assert snapshot(workdir) == before
