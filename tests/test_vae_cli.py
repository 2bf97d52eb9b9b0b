"""``varbayes vae train|eval|plot`` from the command line."""

from __future__ import annotations

import json

import pytest

from varbayes.cli import main

TINY = ["--hidden", "32", "--latent-dim", "2", "--train-size", "256", "--val-size", "64"]


def test_vae_group_alone_prints_its_help(capsys):
    """`varbayes vae` with no sub-command prints the group's help, listing train/eval/plot."""
    main(["vae"])  # the exit status is the CLI's convention for groups
    out = capsys.readouterr().out
    assert "train" in out and "eval" in out and "plot" in out


def test_train_eval_plot_on_a_small_mnist_subset(tmp_path, mnist_root, capsys):
    """Train 1 epoch on 256 MNIST images, then eval (k=5) and plot: outputs are written."""
    run = tmp_path / "run"
    args = ["vae", "train", "--out", str(run), "--data-root", mnist_root, "--epochs", "1"]
    assert main([*args, *TINY, "--no-progress"]) == 0
    for name in ("manifold.png", "curves.png", "metrics.jsonl", "latest.json", "config.json"):
        assert (run / name).is_file(), name
    assert main([*args[:-1], "2", "--resume", "--no-progress"]) == 0
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2

    ev = ["vae", "eval", str(run), "--data-root", mnist_root, "--k", "5", "--test-size", "50"]
    assert main([*ev, "--no-progress"]) == 0
    res = json.loads((run / "eval.json").read_text())
    assert res["n"] == 50 and res["k"] == 5 and res["nll"] > 0
    assert "active units" in capsys.readouterr().out

    out = tmp_path / "figs"
    pl = ["vae", "plot", str(run), "--out-dir", str(out), "--data-root", mnist_root]
    assert main([*pl, "--test-size", "100", "--grid", "5"]) == 0
    for name in ("manifold", "reconstructions", "samples", "latent", "curves"):
        assert (out / f"{name}.png").is_file(), name


def test_cli_errors_are_reported_with_exit_status_2(tmp_path, capsys):
    """A missing checkpoint, --resume with changed options, bad lists and threads: exit 2."""
    assert main(["vae", "eval", str(tmp_path / "none")]) == 2
    assert "not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["vae", "train", "--hidden", "a,b"])
    assert "expected comma-separated integers" in capsys.readouterr().err
    assert main(["vae", "train", "--threads", "-1", "--out", str(tmp_path / "x")]) == 2
    assert "--threads must be >= 0" in capsys.readouterr().err
    assert main(["vae", "train", "--latent-dim", "0", "--out", str(tmp_path / "y")]) == 2
    assert "latent_dim must be an integer >= 1" in capsys.readouterr().err


def test_resume_refuses_changed_options(tmp_path, mnist_root, capsys):
    """--resume with an option other than --epochs exits 2 naming that option."""
    run = tmp_path / "run"
    base = ["vae", "train", "--out", str(run), "--data-root", mnist_root, "--no-progress"]
    assert main([*base, *TINY, "--epochs", "1", "--no-plot"]) == 0
    assert main([*base, "--resume", "--lr", "0.1"]) == 2
    assert "only --epochs may change; got --lr 0.1 (saved: 0.001)" in capsys.readouterr().err


def test_val_size_larger_than_mnist_rejected(tmp_path, mnist_root, capsys):
    """--val-size of 60,000 or more is refused naming val_size."""
    args = ["vae", "train", "--out", str(tmp_path / "r"), "--data-root", mnist_root]
    assert main([*args, "--val-size", "60000"]) == 2
    assert "val_size must be smaller than the 60000 training images" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:precision='bf16-matmul'.*no bfloat16 products:RuntimeWarning")
def test_precision_flag_is_saved_with_the_run_and_checked(tmp_path, capsys):
    """--precision bf16-mixed and bf16-matmul train (scikit-learn's digits, no download)
    and are saved in config.json; an unknown precision is refused by the parser with exit
    status 2."""
    for precision in ("bf16-mixed", "bf16-matmul"):
        run = tmp_path / precision
        args = ["vae", "train", "--dataset", "digits", "--epochs", "1", "--out", str(run)]
        assert main([*args, "--precision", precision, "--no-progress", "--no-plot"]) == 0
        assert json.loads((run / "config.json").read_text())["precision"] == precision
    with pytest.raises(SystemExit) as exc:
        main(["vae", "train", "--precision", "fp16", "--out", str(tmp_path / "x")])
    assert exc.value.code == 2
    assert "--precision: invalid choice: 'fp16'" in capsys.readouterr().err


@pytest.mark.slow
def test_compile_step_trains_and_bare_compile_means_the_loss(tmp_path, capsys):
    """`--compile step` trains (digits, 1 epoch) to the eager run's ELBO; `--compile`
    alone is `--compile loss`; an unknown value is refused by the parser."""
    bounds = {}
    for flags in ([], ["--compile", "step"]):
        run = tmp_path / ("-".join(flags) or "eager")
        args = ["vae", "train", "--dataset", "digits", "--epochs", "1", "--out", str(run)]
        assert main([*args, *flags, "--no-progress", "--no-plot"]) == 0
        line = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
        bounds[run.name] = line["train_bound"]
    assert bounds["--compile-step"] == pytest.approx(bounds["eager"], rel=1e-5)
    from varbayes.cli import build_parser

    assert build_parser().parse_args(["vae", "train", "--compile"]).compile == "loss"
    with pytest.raises(SystemExit) as exc:
        main(["vae", "train", "--compile", "graph", "--out", str(tmp_path / "x")])
    assert exc.value.code == 2
    assert "--compile: invalid choice: 'graph'" in capsys.readouterr().err


def test_compile_step_under_torchrun_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    args = ["vae", "train", "--dataset", "digits", "--out", str(tmp_path / "r")]
    assert main([*args, "--compile", "step", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "compile='step' runs in one process" in err and "\n" not in err
    assert not (tmp_path / "r").exists()
