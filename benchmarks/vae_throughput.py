"""VAE training throughput: varbayes' trainer against the PyTorch-examples loop, side by side.

Model (both): the PyTorch examples VAE, 784-400-20-400-784, ReLU, Bernoulli decoder on
grey levels (binary cross-entropy, as the example ships), analytic KL, Adam(lr=1e-3),
batch 128, all 60,000 training images, the same number of epochs.

* reference: a faithful re-implementation of ``pytorch/examples`` ``vae/main.py``'s loop
  (torchvision is not importable here): a ``torch.utils.data.Dataset`` that turns each
  uint8 image into a PIL image and then a float tensor, per sample, as torchvision's
  ``MNIST`` + ``ToTensor`` do; ``DataLoader(batch_size=128, shuffle=True)``; the model as
  in the example (``F.binary_cross_entropy`` on sigmoid outputs, sum reduction);
  ``loss.item()`` every batch.
* varbayes: :class:`varbayes.vae.train.Trainer` with ``hidden=(400,)``, ``latent_dim=20``,
  ``binarize="none"`` (the same loss as the reference), ``val_size=0``; MNIST as one
  tensor, batches by indexing, metrics kept on the device, fused Adam, a checkpoint
  written every epoch (included in the wall time, excluded from samples/s).

Both report training samples/s per epoch (time of the training loop only) and the test
loss per epoch (−ELBO per test image on grey levels, the reference's ``test()``
metric, computed by one shared function). ``--variants`` lists the varbayes runs, each
``PRECISION[+compile|+step][@BATCH:LR]``: ``fp32`` (the default), ``bf16-mixed`` (the
layers in bfloat16 under autocast) or ``bf16-matmul`` (float32 tensors, bfloat16 products
inside oneDNN), optionally with the loss ``torch.compile``d (``+compile``) or the whole
step compiled as one graph (``+step``: loss, gradient and Adam), optionally with another batch
size and learning rate (the reference keeps 128 and 1e-3; compare the test losses).
``--rounds R`` repeats the whole comparison R times in a row (reference first, then each
variant); each round's ratios use that round's own reference, which keeps a machine whose
speed drifts from biasing them. Run::

    VARBAYES_DATA=/path/to/data python benchmarks/vae_throughput.py --epochs 2 --threads 2 \
        --variants fp32,bf16-mixed,bf16-mixed+step,fp32+step,bf16-mixed@256:3e-3 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from varbayes.data import load_mnist
from varbayes.vae import VAEConfig
from varbayes.vae.data import VAEData
from varbayes.vae.train import Trainer


# ----------------------------------------------------------------- the reference
class MNISTPerSample(Dataset):
    """uint8 images → PIL → float tensor (1, 28, 28) in [0, 1], one sample at a time."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        img = Image.fromarray(self.images[i].numpy(), mode="L")  # as torchvision's MNIST
        t = torch.from_numpy(np.array(img, np.uint8, copy=True))  # as ToTensor
        t = t.view(28, 28, 1).permute(2, 0, 1).contiguous().to(torch.float32).div(255)
        return t, int(self.labels[i])


class RefVAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 400)
        self.fc21 = nn.Linear(400, 20)
        self.fc22 = nn.Linear(400, 20)
        self.fc3 = nn.Linear(20, 400)
        self.fc4 = nn.Linear(400, 784)

    def encode(self, x):
        h1 = F.relu(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def reparameterize(self, mu, logvar):
        std = torch.exp(0.5 * logvar)
        eps = torch.randn_like(std)
        return mu + eps * std

    def decode(self, z):
        h3 = F.relu(self.fc3(z))
        return torch.sigmoid(self.fc4(h3))

    def forward(self, x):
        mu, logvar = self.encode(x.view(-1, 784))
        z = self.reparameterize(mu, logvar)
        return self.decode(z), mu, logvar


def ref_loss(recon_x, x, mu, logvar):
    bce = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kld


def run_reference(train, test, epochs, seed):
    torch.manual_seed(seed)
    model = RefVAE()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    train_loader = DataLoader(MNISTPerSample(*train), batch_size=128, shuffle=True)
    test_loader = DataLoader(MNISTPerSample(*test), batch_size=128, shuffle=False)
    rows = []
    for epoch in range(1, epochs + 1):
        model.train()
        train_loss = 0.0
        t0 = time.perf_counter()
        for data, _ in train_loader:
            opt.zero_grad()
            recon, mu, logvar = model(data)
            loss = ref_loss(recon, data, mu, logvar)
            loss.backward()
            train_loss += loss.item()
            opt.step()
        elapsed = time.perf_counter() - t0
        model.eval()
        test_loss = 0.0
        with torch.no_grad():
            for data, _ in test_loader:
                recon, mu, logvar = model(data)
                test_loss += ref_loss(recon, data, mu, logvar).item()
        rows.append(
            {
                "epoch": epoch,
                "samples_per_s": len(train_loader.dataset) / elapsed,
                "epoch_s": elapsed,
                "train_loss": train_loss / len(train_loader.dataset),
                "test_loss": test_loss / len(test_loader.dataset),
            }
        )
        print("reference", rows[-1], flush=True)
    return rows


# ------------------------------------------------------------------- varbayes
COMPILE = {"": False, "compile": True, "step": "step"}  # the Trainer's compile argument


def parse_variant(text: str) -> dict:
    """``PRECISION[+compile|+step][@BATCH:LR]`` → the Trainer's settings (checked by
    VAEConfig)."""
    head, _, tail = text.partition("@")
    precision, _, comp = head.partition("+")
    batch, _, lr = tail.partition(":") if tail else ("128", "", "1e-3")
    if comp not in COMPILE or not lr:
        raise ValueError("expected PRECISION[+compile|+step][@BATCH:LR]")
    batch, lr = int(batch), float(lr)
    VAEConfig(precision=precision, batch_size=batch, lr=lr)  # a bad value fails here
    return {"precision": precision, "compile": COMPILE[comp], "batch_size": batch, "lr": lr}


def run_varbayes(train_x, test_x, epochs, seed, name, variant):
    cfg = VAEConfig(
        hidden=(400,), latent_dim=20, binarize="none", val_size=0, epochs=epochs, seed=seed,
        precision=variant["precision"], batch_size=variant["batch_size"], lr=variant["lr"],
    )  # fmt: skip
    compile = variant["compile"]
    rows = []

    def on_epoch_end(trainer, model, record):
        model.eval()
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            loss = -torch.cat([model.elbo(x, generator=g).elbo for x in test_x.split(1000)])
        model.train()
        rows.append(
            {
                "epoch": record["epoch"],
                "samples_per_s": record["samples_per_s"],
                "epoch_s": record["epoch_time_s"],
                "train_loss": -record["train_bound"],
                "test_loss": loss.mean().item(),
            }
        )
        print(name, rows[-1], flush=True)

    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        Trainer(
            cfg,
            d,
            data=VAEData(train_x, train_x[:0]),
            progress=False,
            compile=compile,
            on_epoch_end=on_epoch_end,
        ).fit()
        wall = time.perf_counter() - t0
    return rows, wall


def mean_rate(rows):
    """Training samples/s of the steady-state epochs (epoch 1 includes warm-up for both)."""
    rows = rows[1:] if len(rows) > 1 else rows
    return sum(r["samples_per_s"] for r in rows) / len(rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (both)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--variants",
        default="fp32",
        help="varbayes runs, comma-separated, each PRECISION[+compile|+step][@BATCH:LR]",
    )
    ap.add_argument("--rounds", type=int, default=1, help="repeat the comparison this many times")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args()
    variants = {}
    for v in args.variants.split(","):
        try:
            variants[v] = parse_variant(v)
        except (TypeError, ValueError) as exc:
            ap.error(f"--variants: {v!r}: {exc}")
    torch.set_num_threads(args.threads)
    tr = load_mnist("train")
    te = load_mnist("test")
    train_x = tr.images.reshape(-1, 784).float() / 255
    test_x = te.images.reshape(-1, 784).float() / 255

    rounds = []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        ref = run_reference((tr.images, tr.labels), (te.images, te.labels), args.epochs, args.seed)
        out = {"reference": {"epochs": ref, "wall_s": time.perf_counter() - t0}}
        for v, variant in variants.items():
            name = f"varbayes {v}"
            rows, wall = run_varbayes(train_x, test_x, args.epochs, args.seed, name, variant)
            out[name] = {"epochs": rows, "wall_s": wall, "ratio": mean_rate(rows) / mean_rate(ref)}
        rounds.append(out)

    print(f"\n{'round':>5} {'epoch':>5} | {'':>28} samples/s | test loss | ratio")
    for i, out in enumerate(rounds, 1):
        for name, res in out.items():
            for r in res["epochs"]:
                ratio = f"{res['ratio']:.2f}x" if "ratio" in res and r is res["epochs"][-1] else ""
                print(
                    f"{i:>5} {r['epoch']:>5} | {name:>28} {r['samples_per_s']:9.0f} | "
                    f"{r['test_loss']:9.2f} | {ratio}"
                )
    for name in rounds[0]:
        if name != "reference":
            each = [out[name]["ratio"] for out in rounds]
            print(
                f"{name} / reference, training samples/s: median {statistics.median(each):.2f}x "
                f"(rounds: {', '.join(f'{r:.2f}x' for r in each)})"
            )
    results = {
        "rounds": rounds,
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "threads": args.threads,
        },
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
