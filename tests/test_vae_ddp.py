"""Data-parallel VAE training with torchrun (2 local CPU processes, gloo)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}

SCRIPT = textwrap.dedent(
    """
    import json, os, sys, time
    import torch
    from varbayes.vae import VAEConfig
    from varbayes.vae.data import VAEData
    from varbayes.vae.train import train

    g = torch.Generator().manual_seed(0)
    protos = torch.rand(3, 36, generator=g)
    x = (protos[torch.randint(0, 3, (200,), generator=g)] + 0.1 * torch.randn(200, 36,
         generator=g)).clamp(0, 1)
    cfg = VAEConfig(image_shape=(6, 6), hidden=(16,), latent_dim=2, epochs=int(sys.argv[2]),
                    batch_size=32, val_size=0, likelihood="gaussian")
    def slow_down(trainer, epoch, batch):  # "interrupt": gives the test time to signal
        if epoch == 1:
            if batch == 0 and trainer.rank == 0:
                open(os.path.join(sys.argv[4], "marker"), "w").close()
            time.sleep(0.5)

    r = train(cfg, sys.argv[1], data=VAEData(x[:160], x[160:]), progress=False,
              resume=sys.argv[3] == "resume", log_every=1 if sys.argv[3] == "interrupt" else 2,
              callback=slow_down if sys.argv[3] == "interrupt" else None)
    rank = int(os.environ["RANK"])
    flat = torch.cat([p.detach().double().flatten() for p in r.model.parameters()])
    out = {"rank": rank, "world": int(os.environ["WORLD_SIZE"]), "sum": flat.sum().item(),
           "sq": (flat * flat).sum().item(), "epochs": r.epochs_done,
           "val": r.history[-1]["val_elbo"], "first_val": r.history[0]["val_elbo"],
           "interrupted": r.interrupted, "checkpoint": str(r.checkpoint)}
    with open(os.path.join(sys.argv[4], f"rank{rank}.json"), "w") as f:
        json.dump(out, f)
    """
)


def _command(tmp_path, run_dir, epochs, mode):
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        str(script), str(run_dir), str(epochs), mode, str(tmp_path),
    ]  # fmt: skip


def _results(tmp_path):
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]


def _torchrun(tmp_path, run_dir, epochs, mode):
    cmd = _command(tmp_path, run_dir, epochs, mode)
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return _results(tmp_path)


def _torchrun_interrupted(tmp_path, run_dir, epochs):
    """Start torchrun, press "Ctrl-C" (SIGINT to torchrun, as a terminal does) once rank 0
    is in epoch 2; torchrun forwards it to the workers. Returns the ranks' results."""
    marker = tmp_path / "marker"
    marker.unlink(missing_ok=True)
    cmd = _command(tmp_path, run_dir, epochs, "interrupt")
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), "the run never reached epoch 2"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    results = _results(tmp_path)
    assert all(r["interrupted"] for r in results), err[-3000:]
    return results


def test_two_processes_keep_identical_weights_and_rank0_alone_saves(tmp_path):
    """torchrun with 2 CPU ranks: same weights on both, ELBO rises, one checkpoint series."""
    run = tmp_path / "run"
    r0, r1 = _torchrun(tmp_path, run, 2, "new")
    assert r0["world"] == r1["world"] == 2
    assert r0["sum"] == r1["sum"] and r0["sq"] == r1["sq"]
    assert r0["val"] > r0["first_val"]
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(s)["epoch"] for s in lines] == [1, 2]
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["epoch-0001", "epoch-0002"]


@pytest.mark.slow
def test_two_process_run_resumes_under_torchrun(tmp_path):
    """A 1-epoch 2-rank run resumed for a 2nd epoch equals a 2-epoch 2-rank run."""
    a = _torchrun(tmp_path, tmp_path / "a", 2, "new")
    _torchrun(tmp_path, tmp_path / "b", 1, "new")
    b = _torchrun(tmp_path, tmp_path / "b", 2, "resume")
    assert b[0]["epochs"] == 2 and b[0]["sum"] == b[1]["sum"]
    assert (a[0]["sum"], a[0]["sq"]) == (b[0]["sum"], b[0]["sq"])


def test_ctrl_c_under_torchrun_saves_one_mid_epoch_checkpoint(tmp_path):
    """Ctrl-C to torchrun: both ranks stop at the same batch of epoch 2 and rank 0 saves."""
    run = tmp_path / "run"
    r0, r1 = _torchrun_interrupted(tmp_path, run, 3)
    assert r0["epochs"] == r1["epochs"] == 1
    assert r0["sum"] == r1["sum"] and r0["sq"] == r1["sq"]
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert len(names) == 2 and names[0] == "epoch-0001"
    assert names[1].startswith("epoch-0001-batch-") and r0["checkpoint"].endswith(names[1])


@pytest.mark.slow
def test_ctrl_c_under_torchrun_then_resume_equals_an_uninterrupted_run(tmp_path):
    """Interrupted mid-epoch under torchrun and resumed: the same weights as one 2-epoch run."""
    a = _torchrun(tmp_path, tmp_path / "a", 2, "new")
    _torchrun_interrupted(tmp_path, tmp_path / "b", 2)
    b = _torchrun(tmp_path, tmp_path / "b", 2, "resume")
    assert (a[0]["sum"], a[0]["sq"]) == (b[0]["sum"], b[0]["sq"])
    assert b[0]["sum"] == b[1]["sum"]
