"""Faults while a run writes: a full disk at every write of a checkpoint, and kill -9 at
random points (mid-save included). The run always stays loadable, and resuming it ends
with the same weights as a run that never failed."""

from __future__ import annotations

import errno
import importlib
import os
import random
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

import varbayes.vae.checkpoint as checkpoint_module
from varbayes.vae import VAEConfig
from varbayes.vae.checkpoint import load_checkpoint
from varbayes.vae.train import train

from .helpers import TINY_CONFIG, assert_one_line_error, run_cli, snapshot, tiny_vae_data

CFG = VAEConfig(**TINY_CONFIG)
# os.fsync, os.replace, os.rename, torch.save and safetensors' save_file calls made while
# a resumed run trains one epoch and saves it (counted by test_the_fault_table_is_complete).
N_WRITES = 22


class DiskFull:
    """Counts the write-like calls; the ``fail_at``-th one raises ENOSPC."""

    def __init__(self, monkeypatch, fail_at: int | None):
        self.calls = 0
        self.fail_at = fail_at
        for owner, name in [
            (os, "fsync"),
            (os, "replace"),
            (os, "rename"),
            (torch, "save"),
            (checkpoint_module, "save_file"),
        ]:
            monkeypatch.setattr(owner, name, self._wrap(getattr(owner, name)))

    def _wrap(self, real):
        def call(*args, **kwargs):
            self.calls += 1
            if self.calls == self.fail_at:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(*args, **kwargs)

        return call


@pytest.fixture(scope="module")
def reference_weights(tmp_path_factory):
    """Weights after 3 epochs in one go: what every recovered run must end with."""
    r = train(
        CFG.replace(epochs=3),
        tmp_path_factory.mktemp("ref") / "run",
        data=tiny_vae_data(),
        progress=False,
    )
    return {k: v.clone() for k, v in r.model.state_dict().items()}


def _resume(run, epochs=3):
    return train(CFG.replace(epochs=epochs), run, resume=True, data=tiny_vae_data(), progress=False)


def _assert_recovers(run, reference):
    """Loadable now; a clean resume finishes with the reference weights and no leftovers."""
    epoch = load_checkpoint(run).state["epoch"]
    assert epoch in (2, 3)
    r = _resume(run)
    for k, v in r.model.state_dict().items():
        assert torch.equal(v, reference[k]), k
    names = [p.name for p in run.rglob("*")]
    assert not [n for n in names if n.startswith((".tmp-", ".old-", ".lock")) or ".part-" in n]
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3


def test_the_fault_table_is_complete(tiny_run, monkeypatch):
    """A clean resumed epoch makes exactly N_WRITES write-like calls (so every one of them
    gets a fault below)."""
    disk = DiskFull(monkeypatch, fail_at=None)
    _resume(tiny_run)
    assert disk.calls == N_WRITES


@pytest.mark.parametrize("fail_at", range(1, N_WRITES + 1))
def test_a_full_disk_at_any_write_leaves_a_loadable_run(
    fail_at, tiny_run, monkeypatch, reference_weights
):
    """ENOSPC at the k-th write: OSError(ENOSPC) reaches the caller, the run still loads
    (old or new checkpoint), and a resume once there is space ends bit-identical."""
    with monkeypatch.context() as m:
        DiskFull(m, fail_at)
        with pytest.raises(OSError) as info:
            _resume(tiny_run)
        assert info.value.errno == errno.ENOSPC
    _assert_recovers(tiny_run, reference_weights)


@pytest.mark.parametrize("fail_at", [1, 5, 12])
def test_cli_reports_a_full_disk_in_one_line(fail_at, tiny_run, monkeypatch, capsys):
    """Through the CLI a full disk is one line, exit 2; the run stays loadable."""
    trainer_module = importlib.import_module("varbayes.vae.train")
    monkeypatch.setattr(trainer_module, "load_vae_data", lambda *a, **k: tiny_vae_data())
    with monkeypatch.context() as m:
        DiskFull(m, fail_at)
        code, _, err = run_cli(
            [
                "vae",
                "train",
                "--resume",
                "--out",
                tiny_run,
                "--epochs",
                "3",
                "--no-progress",
                "--no-plot",
            ],
            capsys,
        )
    assert code == 2
    assert_one_line_error(err, "No space left on device")
    assert load_checkpoint(tiny_run).state["epoch"] in (2, 3)


_VICTIM = textwrap.dedent(
    """
    import sys, time
    import varbayes.vae.checkpoint as ck
    from varbayes.vae import VAEConfig
    from varbayes.vae.train import train
    sys.path.insert(0, sys.argv[2])
    from robustness.helpers import TINY_CONFIG, tiny_vae_data

    real = ck.fsync_dir
    def slow_fsync_dir(path):  # widen the save so that kills land inside it
        print("saving", flush=True)
        time.sleep(0.05)
        real(path)
    ck.fsync_dir = slow_fsync_dir
    cfg = VAEConfig(**TINY_CONFIG).replace(epochs=int(sys.argv[3]))
    train(cfg, sys.argv[1], resume=sys.argv[4] == "1", data=tiny_vae_data(), progress=False)
    print("done", flush=True)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(3))
def test_kill_9_at_random_points_then_resume_is_exact(seed, tmp_path):
    """kill -9 after a random number of "saving" marks (mid-save, or between saves) in each
    of four attempts, then a last attempt runs to the end: the run always loads, and ends
    bit-identical to an uninterrupted run."""
    epochs = 6
    ref = train(
        CFG.replace(epochs=epochs), tmp_path / "ref", data=tiny_vae_data(), progress=False
    ).model.state_dict()
    run, rng = tmp_path / "run", random.Random(seed)
    tests_dir = os.path.dirname(os.path.dirname(__file__))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for attempt in range(5):
        resume = "1" if (run / "latest.json").exists() else "0"
        proc = subprocess.Popen(
            [sys.executable, "-c", _VICTIM, str(run), tests_dir, str(epochs), resume],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        marks, target = 0, (rng.randint(1, 12) if attempt < 4 else None)
        for line in proc.stdout:
            if line.startswith("saving"):
                marks += 1
                if marks == target:
                    proc.send_signal(signal.SIGKILL)
                    break
        proc.wait()
        if proc.returncode == 0:
            break
        assert proc.returncode == -signal.SIGKILL
        if (run / "latest.json").exists():
            load_checkpoint(run)  # never half-written
    assert proc.returncode == 0, "the last, undisturbed attempt failed"
    final = load_checkpoint(run)
    assert final.state["epoch"] == epochs
    for k, v in final.model.state_dict().items():
        assert torch.equal(v, ref[k]), k
    assert snapshot(run)  # and nothing but the run's own files:
    assert not [
        p
        for p in run.rglob("*")
        if p.name.startswith((".tmp-", ".old-", ".lock")) or ".part-" in p.name
    ]
