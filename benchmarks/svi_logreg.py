"""Stochastic VI on Bayesian logistic regression: varbayes vs Pyro vs NumPyro, side by side.

Model: y_n ~ Bernoulli(sigmoid(x_nᵀθ)), θ ~ N(0, I), N = 10,000, D = 50 (float32).
Guide: mean-field Normal, locations started at 0 and scales at 0.1 in every tool
(Pyro/NumPyro ``AutoNormal(init_loc_fn=init_to_feasible)``). Adam lr 0.01, 3,000 steps,
one particle per step, full batch and minibatch 500 (likelihood scaled by N/B).

Timing on a shared, noisy machine: every tool first takes a few warm-up steps (this call
includes any JIT compilation and is reported apart as "compile"), then the tools take
turns, ``--rounds`` rounds of ``--steps / --rounds`` steps each, round-robin, so that all
see the same load; steps/s is the best round's. All tools thus take the same number of
steps (warm-up + ``--steps``). The final ELBO of each fitted q is evaluated by the same
estimator for every tool (4,000 particles, float64, full data; ± its Monte Carlo standard
error).

varbayes is run in several variants so that each trick's gain is visible:

* ``autograd, sync every step`` — the generic path (guide → Distribution → ELBO →
  backward → torch Adam) with the ELBO copied to the host every step;
* ``autograd``                  — the same, ELBO copied to the host every 100 steps;
* ``hand grads + torch Adam``   — hand-derived ∇λ (no autograd graph), torch's Adam;
* ``fused step (default)``      — hand-derived ∇λ and one Adam update on the flat
  parameter vector (``torch.optim.Adam(fused=True)``): what ``fit`` does by default;
* ``fused step + torch.compile``— the same function compiled (``fit(compile=True)``);
* ``autograd path + torch.compile`` — the generic path compiled: the whole ELBO and its
  gradient as one graph (``fit(fast=False, compile=True)``, :mod:`varbayes.vi.compiled`;
  full batch only);
* ``eager floor``               — not an SVI: the four data-sized kernels and torch's fused
  Adam alone, the least any eager PyTorch step launches (full batch only).

Peers that are not installed are skipped with a message. Usage:

    .venv/bin/python benchmarks/svi_logreg.py [--steps 3000] [--threads 1] [--quick]
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import platform
import time

import torch
from torch.distributions import Independent, Normal

from varbayes.vi.elbo import elbo as elbo_estimate
from varbayes.vi.guides import MeanFieldNormal
from varbayes.vi.models import LogisticRegression
from varbayes.vi.svi import fit

N, D = 10_000, 50


def make_data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(N, D, generator=g)
    theta = torch.randn(D, generator=g) / 2
    y = torch.bernoulli(torch.sigmoid(X @ theta), generator=g)
    return X, y


@torch.no_grad()
def final_elbo(X, y, loc, scale, num_particles=4000, chunk=500, seed=123):
    """ELBO of q = N(loc, diag(scale²)) on the full data in float64, by varbayes' pathwise
    estimator in chunks of particles; returns (mean, Monte Carlo standard error)."""
    model = LogisticRegression(X.double(), y.double(), prior_scale=1.0)
    q = Independent(Normal(loc.double(), scale.double()), 1)
    gen = torch.Generator().manual_seed(seed)
    vals = torch.stack(
        [elbo_estimate(model, q, chunk, generator=gen) for _ in range(num_particles // chunk)]
    )
    # each chunk mean has the same variance: the standard error of their mean
    return float(vals.mean()), float(vals.std() / math.sqrt(vals.numel()))


# --------------------------------------------------------------------------- varbayes
class _TorchAdam(torch.optim.Adam):
    """torch's Adam without the fused kernel (for the ablation)."""

    def __init__(self, params, lr):
        super().__init__(params, lr=lr, fused=False)


def varbayes_runner(X, y, batch_size, variant):
    """Return (run(steps), params()) continuing one varbayes fit through SVIState."""
    model = LogisticRegression(X, y, prior_scale=1.0)
    kw = dict(batch_size=batch_size, seed=0, rtol=0.0, lr=0.01)
    if variant == "autograd, sync every step":
        kw.update(fast=False, sync_every=1, window=1)
    elif variant == "autograd":
        kw.update(fast=False)
    elif variant == "hand grads + torch Adam":
        kw.update(optimizer=functools.partial(_TorchAdam, lr=0.01))
    elif variant == "fused step + torch.compile":
        kw.update(compile=True)
    elif variant == "autograd path + torch.compile":  # the generic path, full batch only
        kw.update(fast=False, compile=True)
    guide = MeanFieldNormal(D, init_scale=0.1)
    with torch.no_grad():
        guide.loc.zero_()
    state = [None]

    def run(steps):
        state[0] = fit(model, guide, num_steps=steps, state=state[0], **kw).state

    return run, lambda: (guide.loc.detach(), guide.scale.detach())


# --------------------------------------------------------------------------- Pyro
def pyro_runner(X, y, batch_size):
    import pyro
    import pyro.distributions as dist
    from pyro.infer import SVI, Trace_ELBO
    from pyro.infer.autoguide import AutoNormal
    from pyro.infer.autoguide.initialization import init_to_feasible

    def model(X, y):
        theta = pyro.sample("theta", dist.Normal(torch.zeros(D), 1.0).to_event(1))
        with pyro.plate("data", N, subsample_size=batch_size) as idx:
            pyro.sample("obs", dist.Bernoulli(logits=X[idx] @ theta), obs=y[idx])

    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = AutoNormal(model, init_loc_fn=init_to_feasible, init_scale=0.1)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())

    def run(steps):
        for _ in range(steps):
            svi.step(X, y)

    def params():
        loc, scale = guide._get_loc_and_scale("theta")
        return loc.detach(), scale.detach()

    return run, params


# --------------------------------------------------------------------------- NumPyro
def numpyro_runner(X, y, batch_size):
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as ndist
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.infer.autoguide import AutoNormal
    from numpyro.infer.initialization import init_to_feasible

    Xj, yj = jnp.asarray(X.numpy()), jnp.asarray(y.numpy())

    def model(X, y):
        theta = numpyro.sample("theta", ndist.Normal(jnp.zeros(D), 1.0).to_event(1))
        with numpyro.plate("data", N, subsample_size=batch_size):
            xb = numpyro.subsample(X, event_dim=1)
            yb = numpyro.subsample(y, event_dim=0)
            numpyro.sample("obs", ndist.Bernoulli(logits=xb @ theta), obs=yb)

    guide = AutoNormal(model, init_loc_fn=init_to_feasible, init_scale=0.1)
    svi = SVI(model, guide, numpyro.optim.Adam(0.01), Trace_ELBO())
    state = [svi.init(jax.random.PRNGKey(0), Xj, yj)]

    # svi.run's loop (svi.update under jit, in a lax loop) with the step count as a traced
    # argument, so that one compilation serves every call.
    @jax.jit
    def run_n(state, n):
        return jax.lax.fori_loop(0, n, lambda i, s: svi.update(s, Xj, yj)[0], state)

    def run(steps):
        state[0] = jax.block_until_ready(run_n(state[0], steps))

    def params():
        p = svi.get_params(state[0])
        loc = torch.as_tensor(jax.device_get(p["theta_auto_loc"]).copy())
        scale = torch.as_tensor(jax.device_get(p["theta_auto_scale"]).copy())
        return loc, scale

    return run, params


VARIANTS = [
    "autograd, sync every step",
    "autograd",
    "hand grads + torch Adam",
    "fused step (default)",
    "fused step + torch.compile",
    "autograd path + torch.compile",
]


def floor_runner(X, y, batch_size):
    """Not an SVI: only the four data-sized kernels every eager step must launch
    (Xθ, Σ softplus, sigmoid, Xᵀ r) plus torch's fused Adam, with θ = μ (no noise, no
    ELBO bookkeeping). Its rate bounds what any eager PyTorch SVI step can reach here."""
    if batch_size is not None:
        raise ImportError(name="floor (full batch only)")
    XT = X.T.contiguous()
    Xty = XT @ y
    flat = torch.zeros(2 * D, requires_grad=True)
    adam = torch.optim.Adam([flat], lr=0.01, fused=True)

    def run(steps):
        for _ in range(steps):
            with torch.no_grad():
                theta = flat[:D]
                logits = torch.mv(XT.T, theta)
                torch.nn.functional.softplus(logits).sum()
                flat.grad = torch.cat([torch.mv(XT, torch.sigmoid(logits)) - Xty, flat[D:]])
            adam.step()

    return run, lambda: (flat[:D].detach(), flat[D:].detach().exp())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000, help="timed steps per tool")
    parser.add_argument("--rounds", type=int, default=3, help="round-robin timing rounds")
    parser.add_argument("--warmup", type=int, default=5, help="untimed first steps")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--quick", action="store_true", help="skip the slower ablations")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    X, y = make_data()
    per_round = args.steps // args.rounds
    print(
        f"# svi_logreg: N={N}, D={D}, {args.warmup} + {args.rounds}x{per_round} steps, Adam 0.01, "
        f"1 particle; torch {torch.__version__} ({args.threads} thread(s)), "
        f"{os.cpu_count()} CPUs {platform.machine()}"
    )
    rows = []
    for batch in (None, 500):
        label = "full batch" if batch is None else f"minibatch {batch}"
        variants = VARIANTS
        if args.quick:
            variants = [
                "autograd",
                "fused step (default)",
                "fused step + torch.compile",
                "autograd path + torch.compile",
            ]
        if args.no_compile:
            variants = [v for v in variants if "compile" not in v]
        if batch is not None:  # the generic path compiles the full-batch ELBO only
            variants = [v for v in variants if v != "autograd path + torch.compile"]
        makers = [
            (f"varbayes: {v}", functools.partial(varbayes_runner, X, y, batch, v)) for v in variants
        ]
        if batch is None and not args.quick:
            makers.append(
                (
                    "eager floor (4 kernels + Adam; not SVI)",
                    functools.partial(floor_runner, X, y, batch),
                )
            )
        makers.append(("Pyro AutoNormal + Trace_ELBO", functools.partial(pyro_runner, X, y, batch)))
        makers.append(("NumPyro AutoNormal (jit)", functools.partial(numpyro_runner, X, y, batch)))
        tools = []
        for name, make in makers:
            try:
                run, params = make()
                t = time.perf_counter()
                run(args.warmup)
                warm = time.perf_counter() - t
            except ImportError as exc:
                print(f"{label:14s} {name:38s} skipped: {exc.name or exc} is not installed")
                continue
            tools.append([name, run, params, warm, []])
        for _ in range(args.rounds):
            for tool in tools:
                t = time.perf_counter()
                tool[1](per_round)
                tool[4].append(time.perf_counter() - t)
        for name, _, params, warm, times in tools:
            rate = per_round / min(times)
            loc, scale = params()
            e, se = final_elbo(X, y, loc.float(), scale.float())
            compile_s = max(warm - args.warmup / rate, 0.0)
            rows.append((label, name, rate, compile_s, e, se))
            spread = max(times) / min(times)
            print(
                f"{label:14s} {name:38s} {rate:8.0f} steps/s (rounds spread {spread:4.2f}x)  "
                f"first {args.warmup} steps {warm:6.2f} s  final ELBO {e:10.2f} ± {se:.2f}",
                flush=True,
            )
    print(
        "\n| configuration | tool | steps/s | vs Pyro | vs NumPyro | first call (s) | final ELBO |"
    )
    print("|---|---|---|---|---|---|---|")
    for label in ("full batch", "minibatch 500"):
        sel = [r for r in rows if r[0] == label]
        pyro_rate = next((r[2] for r in sel if r[1].startswith("Pyro")), math.nan)
        np_rate = next((r[2] for r in sel if r[1].startswith("NumPyro")), math.nan)
        for _, name, rate, c, e, se in sel:
            print(
                f"| {label} | {name} | {rate:,.0f} | {rate / pyro_rate:.2f}x | "
                f"{rate / np_rate:.2f}x | {c:.1f} | {e:.2f} ± {se:.2f} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
