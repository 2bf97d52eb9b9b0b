"""Prototype: the whole VAE training step as one compiled graph, against the trainer's eager step.

Not yet the trainer's path (issue 13 note): this measures whether it would pay. Model:
the PyTorch-examples VAE (784-400-20-400-784, ReLU, Bernoulli on grey levels, analytic
KL, Adam 1e-3, batch 128). Two copies of the same initial weights train side by side in
one process on the same batch stream, in alternating rounds of 300 steps each:

* eager: what ``Trainer._train_batch`` does: ``VAE.objective`` under the precision's
  contexts, ``backward()``, fused ``torch.optim.Adam``;
* compiled: ``torch.func.grad_and_value`` of ``VAE.objective`` under
  ``torch.func.functional_call``, then Adam's update written in place into the same
  optimizer's state tensors, all in one ``torch.compile(fullgraph=True)`` graph with
  inductor's C++ wrapper. Adam's bias corrections lr/(1−β₁ᵗ) and √(1−β₂ᵗ) enter as
  0-d tensors computed on the host (inside the graph inductor evaluates β^t per element).

Both sweep Adam's near-subnormal moments every 64 steps, as the trainer does. Run::

    VARBAYES_DATA=/path/to/data python benchmarks/vae_step_compiled.py --precision bf16-mixed
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch
from torch.func import functional_call, grad_and_value

from varbayes.data import load_mnist
from varbayes.vae import VAEConfig
from varbayes.vae.model import VAE
from varbayes.vae.precision import step_precision
from varbayes.vae.train import flush_subnormal_moments

KW = dict(beta=1.0, objective="elbo", num_samples=1, kl="analytic")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16-mixed", "bf16-matmul"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=300)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    prec = args.precision
    cfg = VAEConfig(hidden=(400,), latent_dim=20, binarize="none", val_size=0, precision=prec)
    X = load_mnist("train").images.reshape(-1, 784).float() / 255
    models, opts = [], []
    for _ in range(2):
        torch.manual_seed(0)
        models.append(VAE(cfg))
        opts.append(torch.optim.Adam(models[-1].parameters(), lr=1e-3, fused=True))
    sp = step_precision(prec, torch.device("cpu"))
    none = contextlib.nullcontext
    inside = sp.forward if prec == "bf16-mixed" else none  # autocast traces; oneDNN flags do not
    outside = sp.forward if prec == "bf16-matmul" else none

    mc, opt_c = models[1], opts[1]
    names = [n for n, _ in mc.named_parameters()]
    params = [p for _, p in mc.named_parameters()]
    for p in params:
        # Adam's moments in the optimizer's own state (the step count stays on the host)
        opt_c.state[p] = {"exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
    ms = [opt_c.state[p]["exp_avg"] for p in params]
    vs = [opt_c.state[p]["exp_avg_sq"] for p in params]

    def loss(pd, x, eps):
        with inside():
            return functional_call(mc, pd, (x,), dict(eps=eps, **KW))

    grad_value = grad_and_value(loss, has_aux=True)

    def step(ps, ms, vs, x, eps, lr_bc1, bc2_sqrt):
        g, (value, sums) = grad_value(dict(zip(names, ps, strict=True)), x, eps)
        for p, m, v, n in zip(ps, ms, vs, names, strict=True):
            m.mul_(0.9).add_(g[n], alpha=0.1)
            v.mul_(0.999).addcmul_(g[n], g[n], value=0.001)
            p.sub_(lr_bc1 * m / (v.sqrt() / bc2_sqrt + 1e-8))
        return value.detach(), sums

    compiled = torch.compile(step, fullgraph=True, dynamic=False, options={"cpp_wrapper": True})
    gen = [torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)]
    count = [0, 0]

    def batch(k):
        idx = torch.randint(0, X.shape[0], (128,), generator=gen[k])
        return X[idx], torch.randn((1, 128, 20), generator=gen[k])

    def eager_step():
        x, eps = batch(0)
        with sp.forward():
            value, _ = models[0](x, eps=eps, **KW)
        opts[0].zero_grad(set_to_none=True)
        with sp.backward():
            value.backward()
        opts[0].step()
        count[0] += 1
        if count[0] % 64 == 0:
            flush_subnormal_moments(opts[0])
        return value

    def compiled_step():
        x, eps = batch(1)
        count[1] += 1
        t = count[1]
        with torch.no_grad(), outside():
            value, _ = compiled(
                params, ms, vs, x, eps,
                torch.tensor(1e-3 / (1 - 0.9**t)), torch.tensor((1 - 0.999**t) ** 0.5),
            )  # fmt: skip
        if t % 64 == 0:
            flush_subnormal_moments(opt_c)
        return value

    t0 = time.perf_counter()
    compiled_step()
    print(f"compile: {time.perf_counter() - t0:.1f} s")
    for _ in range(200):
        eager_step()
        compiled_step()
    ms_per = {"eager": [], "compiled": []}
    for r in range(args.rounds):
        for name, f in (("eager", eager_step), ("compiled", compiled_step)):
            s = time.perf_counter()
            for _ in range(args.steps):
                value = f()
            ms_per[name].append((time.perf_counter() - s) / args.steps * 1e3)
            took = ms_per[name][-1]
            print(f"round {r + 1} {name:>8}: {took:.3f} ms/step, loss {float(value):.2f}")
    ratios = [e / c for e, c in zip(ms_per["eager"], ms_per["compiled"], strict=True)]
    print(
        f"{prec}: eager / compiled step time, median {statistics.median(ratios):.2f}x "
        f"(rounds: {', '.join(f'{r:.2f}x' for r in ratios)})"
    )


if __name__ == "__main__":
    main()
