"""IWAE speed against k: varbayes' batched k samples against a Python loop over k.

Model: 784-200-200-50 tanh, Bernoulli decoder (Burda et al.'s one-layer VAE), batch B of
binarized MNIST training images, float32, CPU.

* training step: loss = −mean_b IWAE_k(x_b), backward, Adam step.
  - varbayes: ``VAE.objective(x, objective="iwae", num_samples=k)``: the k·B latents go
    through the decoder as one (k, B, L) batch, then one log-sum-exp.
  - peer: the same bound computed with a Python loop over the k samples (one decoder call
    of B rows per sample, as in many IWAE implementations), then the same log-sum-exp.
  Both get the same ε, and the script checks that the two losses agree.
* evaluation: ``VAE.log_likelihood(x, k)`` for k up to 5000, chunked to at most
  ``--max-rows`` decoder rows at a time.

The two training variants alternate repetition by repetition, so both see the same load.
Reported: images/s and samples/s (= images/s · k). Run::

    VARBAYES_DATA=/path/to/data python benchmarks/vae_iwae_speed.py --threads 1
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time

import torch

from varbayes.data import load_mnist
from varbayes.vae import VAE, VAEConfig


def loop_over_k_loss(model: VAE, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """−mean_b IWAE_k with one decoder call per sample (the peer)."""
    loc, log_var = model.encoder(x)
    scale = torch.exp(0.5 * log_var)
    log_w = []
    for i in range(eps.shape[0]):
        e = eps[i]
        z = loc + scale * e
        log_px = model.likelihood.log_prob(x, model.decoder(z))
        log_pz = -0.5 * (z * z).sum(-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)
        log_qz = (
            -0.5 * (e * e).sum(-1) - scale.log().sum(-1) - 0.5 * e.shape[-1] * math.log(2 * math.pi)
        )
        log_w.append(log_px + log_pz - log_qz)
    bound = torch.logsumexp(torch.stack(log_w), 0) - math.log(eps.shape[0])
    return -bound.mean()


def batched_loss(model: VAE, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    loss, _ = model.objective(x, objective="iwae", num_samples=eps.shape[0], eps=eps)
    return loss


def time_step(fn, model, opt, x, eps) -> float:
    t0 = time.perf_counter()
    loss = fn(model, x, eps)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ks", default="1,5,50", help="k values of the training step")
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--reps", type=int, default=6, help="timed steps per variant and k")
    ap.add_argument("--eval-ks", default="50,500,5000", help="k values of log_likelihood")
    ap.add_argument("--eval-images", type=int, default=100)
    ap.add_argument("--max-rows", type=int, default=16384)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = VAEConfig(latent_dim=50, hidden=(200, 200), activation="tanh")
    model = VAE(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)
    tr = load_mnist("train")
    g = torch.Generator().manual_seed(0)
    grey = tr.images[:2000].reshape(-1, 784).float() / 255
    data = torch.bernoulli(grey, generator=g)
    rows = []
    for k in (int(v) for v in args.ks.split(",")):
        x = data[: args.batch_size]
        eps = torch.randn(k, x.shape[0], 50, generator=g)
        with torch.no_grad():
            a, b = batched_loss(model, x, eps), loop_over_k_loss(model, x, eps)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-3)  # the same bound
        times = {"varbayes": [], "loop": []}
        for fn in (batched_loss, loop_over_k_loss):  # warm-up
            time_step(fn, model, opt, x, eps)
        for _ in range(args.reps):
            times["varbayes"].append(time_step(batched_loss, model, opt, x, eps))
            times["loop"].append(time_step(loop_over_k_loss, model, opt, x, eps))
        for name, ts in times.items():
            t = sorted(ts)[len(ts) // 2]  # median
            rows.append({"what": "train step", "variant": name, "k": k, "B": x.shape[0],
                         "s": t, "images_per_s": x.shape[0] / t,
                         "samples_per_s": x.shape[0] * k / t})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    model.eval()
    xe = data[: args.eval_images]
    for k in (int(v) for v in args.eval_ks.split(",")):
        t0 = time.perf_counter()
        model.log_likelihood(xe, k, max_rows=args.max_rows, generator=g)
        t = time.perf_counter() - t0
        chunk_rows = max(1, args.max_rows // xe.shape[0]) * xe.shape[0]
        rows.append({"what": "log_likelihood", "variant": "varbayes", "k": k, "B": xe.shape[0],
                     "s": t, "images_per_s": xe.shape[0] / t,
                     "samples_per_s": xe.shape[0] * k / t,
                     "rows_per_chunk": chunk_rows})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)

    print(
        f"\n{'what':>15} | {'k':>5} | {'varbayes samples/s':>18} | {'loop samples/s':>14} | ratio"
    )
    for r in rows:
        if r["variant"] != "varbayes":
            continue
        peer = [p for p in rows if p["variant"] == "loop" and p["k"] == r["k"]
                and p["what"] == r["what"]]  # fmt: skip
        p = f"{peer[0]['samples_per_s']:14.0f}" if peer else f"{'-':>14}"
        ratio = f"{r['samples_per_s'] / peer[0]['samples_per_s']:.2f}x" if peer else "-"
        print(f"{r['what']:>15} | {r['k']:5d} | {r['samples_per_s']:18.0f} | {p} | {ratio}")
    if args.json:
        out = {"rows": rows, "threads": args.threads, "torch": torch.__version__,
               "machine": platform.processor() or platform.machine()}  # fmt: skip
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
