"""Data-parallel VAE training with torchrun (2 local CPU processes, gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
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
    r = train(cfg, sys.argv[1], data=VAEData(x[:160], x[160:]), progress=False,
              resume=sys.argv[3] == "resume", log_every=2)
    rank = int(os.environ["RANK"])
    flat = torch.cat([p.detach().double().flatten() for p in r.model.parameters()])
    out = {"rank": rank, "world": int(os.environ["WORLD_SIZE"]), "sum": flat.sum().item(),
           "sq": (flat * flat).sum().item(), "epochs": r.epochs_done,
           "val": r.history[-1]["val_elbo"], "first_val": r.history[0]["val_elbo"]}
    with open(os.path.join(sys.argv[4], f"rank{rank}.json"), "w") as f:
        json.dump(out, f)
    """
)


def _torchrun(tmp_path, run_dir, epochs, mode):
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        str(script), str(run_dir), str(epochs), mode, str(tmp_path),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]


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
