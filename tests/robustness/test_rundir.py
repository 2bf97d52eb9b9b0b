"""Run directories: one writer at a time, leftovers of a killed writer removed, resume rules."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

from varbayes.runlock import RunDirBusyError, RunLock
from varbayes.vae import VAEConfig
from varbayes.vae.checkpoint import load_checkpoint, resolve_checkpoint
from varbayes.vae.train import train

from .helpers import TINY_CONFIG, assert_one_line_error, run_cli, snapshot, tiny_vae_data

CFG = VAEConfig(**TINY_CONFIG)

_HOLDER = textwrap.dedent(
    """
    import sys, time
    from varbayes.runlock import RunLock
    with RunLock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(60)
    """
)


def _hold_in_subprocess(run):
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(run)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_writer_is_refused_naming_the_holder(tiny_run):
    """While one process holds a run, train(resume) in another raises RunDirBusyError
    naming its pid and host; the run is unchanged."""
    before = snapshot(tiny_run)
    with RunLock(tiny_run):
        with pytest.raises(RunDirBusyError, match=rf"pid {os.getpid()} on host "):
            train(
                CFG.replace(epochs=3), tiny_run, resume=True, data=tiny_vae_data(), progress=False
            )
    assert snapshot(tiny_run) == before


def test_two_new_runs_on_one_directory_cannot_both_succeed(tmp_path):
    """A new run into a directory another writer holds is refused; nothing is created."""
    run = tmp_path / "run"
    with RunLock(run):
        with pytest.raises(RunDirBusyError, match="in use by another writer"):
            train(CFG, run, data=tiny_vae_data(), progress=False)
        assert sorted(p.name for p in run.iterdir()) == [".lock"]
    assert not run.exists()  # the lock made the folder and took it away again


def test_cli_second_writer_exits_2_and_the_lock_dies_with_its_holder(tiny_run, capsys):
    """`vae train --resume` against a live holder in another process: exit 2 naming the
    holder's pid and host. After kill -9 of the holder the lock is free at once."""
    proc = _hold_in_subprocess(tiny_run)
    try:
        argv = ["vae", "train", "--resume", "--out", tiny_run, "--no-progress", "--epochs", "3"]
        before = snapshot(tiny_run)
        code, _, err = run_cli(argv, capsys)
        assert code == 2
        assert_one_line_error(
            err, "in use by another writer", f"pid {proc.pid}", socket.gethostname()
        )
        assert snapshot(tiny_run) == before
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with RunLock(tiny_run):  # released by the kernel when the holder died
        pass


def test_a_finished_run_is_never_overwritten(tiny_run):
    """A second new run on a finished run's directory is refused; the run is unchanged."""
    before = snapshot(tiny_run)
    with pytest.raises(ValueError, match="already holds a run"):
        train(CFG, tiny_run, data=tiny_vae_data(), progress=False)
    assert snapshot(tiny_run) == before


def test_leftovers_of_a_killed_writer_are_removed_on_the_next_start(tiny_run):
    """.tmp-* and .old-* checkpoint folders and .*.part-* files go when a writer starts."""
    (tiny_run / "checkpoints" / ".tmp-abc123").mkdir()
    (tiny_run / "checkpoints" / ".tmp-abc123" / "model.safetensors").write_bytes(b"half")
    (tiny_run / "checkpoints" / ".old-epoch-0001-999").mkdir()
    (tiny_run / ".metrics.jsonl.part-xyz.jsonl").write_text("partial")
    (tiny_run / ".latest.json.part-q.json").write_text("{")
    train(CFG.replace(epochs=3), tiny_run, resume=True, data=tiny_vae_data(), progress=False)
    names = {p.name for p in tiny_run.rglob("*")}
    assert not any(n.startswith((".tmp-", ".old-")) or ".part-" in n for n in names), names
    assert ".lock" not in names
    assert load_checkpoint(tiny_run).state["epoch"] == 3


def test_resume_with_nothing_left_returns_the_checkpoint_and_fewer_epochs_are_refused(tiny_run):
    """Resuming a 2-epoch run with epochs=2 trains nothing and names its checkpoint;
    epochs=1 is refused naming epochs."""
    before = snapshot(tiny_run)
    r = train(CFG, tiny_run, resume=True, data=tiny_vae_data(), progress=False)
    assert r.checkpoint == resolve_checkpoint(tiny_run) and r.epochs_done == 2
    with pytest.raises(ValueError, match=r"^epochs=1: .*already trained 2 epochs; resume needs"):
        train(CFG.replace(epochs=1), tiny_run, resume=True, data=tiny_vae_data(), progress=False)
    assert snapshot(tiny_run) == before


def test_cli_resume_accepts_restated_flags_and_refuses_too_few_epochs(tmp_path, mnist_root, capsys):
    """`--resume` with the original flags restated continues; `--epochs` not beyond the
    trained epochs and a changed flag are refused naming the flag."""
    run = tmp_path / "run"
    flags = ["--hidden", "16", "--train-size", "128", "--val-size", "32", "--batch-size", "64"]
    base = ["vae", "train", "--out", run, "--data-root", mnist_root, "--no-progress", "--no-plot"]
    assert run_cli([*base, *flags, "--epochs", "1"], capsys)[0] == 0
    code, out, err = run_cli([*base, *flags, "--epochs", "2", "--resume"], capsys)
    assert code == 0, err
    assert "trained 2 epochs" in out and "checkpoint None" not in out
    before = snapshot(run)
    code, _, err = run_cli([*base, "--epochs", "1", "--resume"], capsys)
    assert code == 2
    assert_one_line_error(err, "--epochs 1", "already trained 2 epochs", "--epochs >= 3")
    code, _, err = run_cli([*base, "--hidden", "32", "--epochs", "3", "--resume"], capsys)
    assert code == 2
    assert_one_line_error(err, "--hidden (32,) (saved: (16,))")
    assert snapshot(run) == before


def test_cli_val_size_0_reports_the_training_bound(tmp_path, mnist_root, capsys):
    """`--val-size 0` trains, reports the training bound and draws its figures (exit 0)."""
    run = tmp_path / "run"
    argv = [
        "vae",
        "train",
        "--out",
        run,
        "--data-root",
        mnist_root,
        "--no-progress",
        "--hidden",
        "16",
        "--train-size",
        "128",
        "--val-size",
        "0",
        "--epochs",
        "1",
    ]
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    assert "no validation set" in out
    assert (run / "manifold.png").is_file() and (run / "curves.png").is_file()


def test_lock_file_records_the_holder(tmp_path):
    """While held, RUN/.lock names this process and host; released, the file is gone."""
    run = tmp_path / "run"
    run.mkdir()
    with RunLock(run) as lock:
        pid, host, *_ = lock.path.read_text().split()
        assert int(pid) == os.getpid() and host == socket.gethostname()
    assert not (run / ".lock").exists() and run.is_dir()
