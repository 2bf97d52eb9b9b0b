"""Quality per CPU-minute: test NLL reached by varbayes and by the PyTorch-examples loop in
the same wall-clock budget, trained side by side.

Model (both): 784-200-200-50 tanh MLP encoder, the mirrored decoder, Bernoulli p(x|z),
N(0, I) prior, analytic KL, dynamic binarization (x ~ Bernoulli(grey level) afresh for
every batch), Adam(lr=1e-3), batch 128, all 60,000 training images, one intra-op thread.

* reference: the loop of ``pytorch/examples`` ``vae/main.py`` (torchvision is not
  importable here, so its per-sample ``MNIST`` + ``ToTensor`` pipeline is re-implemented
  in :mod:`vae_throughput`), with this architecture, ``torch.bernoulli(data)`` on each
  batch, sigmoid outputs with ``F.binary_cross_entropy(reduction="sum")`` and
  ``loss.item()`` every batch, as the example does.
* varbayes: :class:`varbayes.vae.train.Trainer` with the same settings (checkpoints every
  epoch included in its wall time); it stops through ``request_stop`` at the budget.

The two sides run **at the same time** in two processes (one thread each), so both see
the same machine load; each trains for ``--budget`` seconds of wall time and keeps a copy
of its weights at 1/4, 1/2, 3/4 and all of the budget. Afterwards both are scored by the
same evaluator (:func:`varbayes.vae.evaluate.evaluate`, the reference's weights copied
into a varbayes ``VAE`` of the same shape): NLL = −mean IWAE_k over a seeded random subset
of the test images (binarized once, seed 123), with its standard error over the images;
``--k`` and ``--test-size`` for the final weights, ``--curve-k`` and ``--curve-size`` for
the intermediate ones. Run::

    VARBAYES_DATA=/path/to/data python benchmarks/vae_time_to_quality.py --budget 1200
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from varbayes.data import load_mnist
from varbayes.vae import VAE, VAEConfig
from varbayes.vae.data import VAEData, load_test_data
from varbayes.vae.evaluate import evaluate
from varbayes.vae.train import Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vae_throughput import MNISTPerSample  # noqa: E402  (the reference's data pipeline)

HIDDEN, LATENT, BATCH, LR = (200, 200), 50, 128, 1e-3
MARKS = (0.25, 0.5, 0.75, 1.0)


def config(seed: int) -> VAEConfig:
    return VAEConfig(
        latent_dim=LATENT, hidden=HIDDEN, activation="tanh", batch_size=BATCH, lr=LR,
        val_size=0, epochs=100_000, seed=seed,
    )  # fmt: skip


# ----------------------------------------------------------------- the reference
class RefVAE(nn.Module):
    """pytorch/examples' VAE with Burda et al.'s one-layer architecture (tanh)."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 200)
        self.fc2 = nn.Linear(200, 200)
        self.fc31 = nn.Linear(200, LATENT)
        self.fc32 = nn.Linear(200, LATENT)
        self.fc4 = nn.Linear(LATENT, 200)
        self.fc5 = nn.Linear(200, 200)
        self.fc6 = nn.Linear(200, 784)

    def encode(self, x):
        h = torch.tanh(self.fc2(torch.tanh(self.fc1(x))))
        return self.fc31(h), self.fc32(h)

    def reparameterize(self, mu, logvar):
        std = torch.exp(0.5 * logvar)
        return mu + torch.randn_like(std) * std

    def decode(self, z):
        return torch.sigmoid(self.fc6(torch.tanh(self.fc5(torch.tanh(self.fc4(z))))))

    def forward(self, x):
        mu, logvar = self.encode(x.view(-1, 784))
        return self.decode(self.reparameterize(mu, logvar)), mu, logvar


def ref_loss(recon_x, x, mu, logvar):
    bce = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction="sum")
    return bce - 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())


def as_varbayes(ref_state: dict, seed: int) -> VAE:
    """The reference's weights in a varbayes VAE of the same shape (for the shared evaluator)."""
    m = VAE(config(seed))
    s = ref_state
    enc, dec = m.encoder.net, m.decoder.net
    pairs = [
        (enc[0], s["fc1.weight"], s["fc1.bias"]),
        (enc[2], s["fc2.weight"], s["fc2.bias"]),
        (enc[4], torch.cat([s["fc31.weight"], s["fc32.weight"]]),
         torch.cat([s["fc31.bias"], s["fc32.bias"]])),
        (dec[0], s["fc4.weight"], s["fc4.bias"]),
        (dec[2], s["fc5.weight"], s["fc5.bias"]),
        (dec[4], s["fc6.weight"], s["fc6.bias"]),
    ]  # fmt: skip
    with torch.no_grad():
        for layer, w, b in pairs:
            layer.weight.copy_(w)
            layer.bias.copy_(b)
    return m


def train_reference(budget: float, seed: int) -> list[dict]:
    tr = load_mnist("train")
    torch.manual_seed(seed)
    model = RefVAE()
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    loader = DataLoader(MNISTPerSample(tr.images, tr.labels), batch_size=BATCH, shuffle=True)
    snaps, mark, steps, epoch = [], 0, 0, 0
    t0 = time.perf_counter()
    while mark < len(MARKS):
        model.train()
        train_loss = 0.0
        for data, _ in loader:
            data = torch.bernoulli(data)  # dynamic binarization
            opt.zero_grad()
            recon, mu, logvar = model(data)
            loss = ref_loss(recon, data, mu, logvar)
            loss.backward()
            train_loss += loss.item()
            opt.step()
            steps += 1
            t = time.perf_counter() - t0
            if t >= MARKS[mark] * budget:
                state = {k: v.clone() for k, v in model.state_dict().items()}
                snaps.append({"t": t, "steps": steps, "epochs": steps * BATCH / 60_000,
                              "state": state})  # fmt: skip
                mark += 1
                if mark == len(MARKS):
                    break
        epoch += 1
    return snaps


# ------------------------------------------------------------------- varbayes
def train_varbayes(budget: float, seed: int, run_dir: Path) -> list[dict]:
    tr = load_mnist("train")
    x = tr.images.reshape(-1, 784).float() / 255
    snaps, steps = [], [0]
    t0 = time.perf_counter()

    def callback(trainer, epoch, batch):
        steps[0] += 1
        t = time.perf_counter() - t0
        if len(snaps) < len(MARKS) and t >= MARKS[len(snaps)] * budget:
            state = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
            snaps.append({"t": t, "steps": steps[0], "epochs": steps[0] * BATCH / 60_000,
                          "state": state})  # fmt: skip
            if len(snaps) == len(MARKS):
                trainer.request_stop()

    Trainer(config(seed), run_dir, data=VAEData(x, x[:0]), progress=False,
            callback=callback).fit()  # fmt: skip
    return snaps


# ------------------------------------------------------------------ evaluation
def test_subset(n: int, seed: int) -> torch.Tensor:
    x, _ = load_test_data(config(seed), None, None)  # binarized once (seed 123)
    idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
    return x[idx]


def score(snaps: list[dict], side: str, args) -> list[dict]:
    rows = []
    for i, s in enumerate(snaps):
        last = i == len(snaps) - 1
        k, n = (args.k, args.test_size) if last else (args.curve_k, args.curve_size)
        model = as_varbayes(s["state"], args.seed) if side == "reference" else VAE(config(0))
        if side == "varbayes":
            model.load_state_dict(s["state"])
        t0 = time.perf_counter()
        res = evaluate(model.eval(), test_subset(n, args.seed), k=k, seed=args.seed)
        rows.append({
            "side": side, "t": s["t"], "steps": s["steps"], "epochs": s["epochs"], "k": k,
            "n": n, "nll": res["nll"], "nll_se": res["nll_se"], "elbo": res["elbo"],
            "active_units": res["active_units"], "eval_s": time.perf_counter() - t0,
        })  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    return rows


def worker(args) -> None:
    torch.set_num_threads(args.threads)
    # The first optimizer built in a process imports torch._dynamo (about 10 s on a busy
    # machine); both sides pay it here, before their clocks start.
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    with tempfile.TemporaryDirectory() as d:
        if args.side == "reference":
            snaps = train_reference(args.budget, args.seed)
        else:
            snaps = train_varbayes(args.budget, args.seed, Path(d) / "run")
    rows = score(snaps, args.side, args)
    Path(args.result).write_text(json.dumps(rows, indent=2) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--budget",
        type=float,
        default=1200.0,
        help="training wall-clock seconds per side (default 1200 = 20 min)",
    )
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads per side")
    ap.add_argument("--k", type=int, default=5000, help="importance samples, final NLL")
    ap.add_argument("--test-size", type=int, default=2000, help="test images, final NLL")
    ap.add_argument("--curve-k", type=int, default=500, help="k of the intermediate NLLs")
    ap.add_argument("--curve-size", type=int, default=500, help="images, intermediate NLLs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="write all results here")
    ap.add_argument("--side", choices=("reference", "varbayes"), help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()  # fmt: skip
    if args.side:
        return worker(args)
    with tempfile.TemporaryDirectory() as d:
        procs, files = [], {}
        for side in ("reference", "varbayes"):
            files[side] = Path(d) / f"{side}.json"
            cmd = [sys.executable, __file__, "--side", side, "--result", str(files[side])]
            for flag in ("budget", "threads", "k", "test_size", "curve_k", "curve_size", "seed"):
                cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
            procs.append(subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}))
        for p in procs:
            if p.wait() != 0:
                raise SystemExit(f"a side failed (exit status {p.returncode})")
        rows = {side: json.loads(f.read_text()) for side, f in files.items()}
    print(f"\n{'side':>9} | {'wall s':>7} | {'epochs':>6} | {'k':>5} | {'images':>6} | NLL (nats)")
    for side in ("reference", "varbayes"):
        for r in rows[side]:
            print(f"{side:>9} | {r['t']:7.0f} | {r['epochs']:6.2f} | {r['k']:5d} | {r['n']:6d} | "
                  f"{r['nll']:.2f} ± {r['nll_se']:.2f}")  # fmt: skip
    ref, vb = rows["reference"][-1], rows["varbayes"][-1]
    print(f"at the budget ({args.budget:.0f} s): varbayes {vb['nll']:.2f} ± {vb['nll_se']:.2f} "
          f"after {vb['epochs']:.2f} epochs, reference {ref['nll']:.2f} ± {ref['nll_se']:.2f} "
          f"after {ref['epochs']:.2f} epochs")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), **rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
