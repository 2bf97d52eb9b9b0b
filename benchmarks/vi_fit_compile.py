"""Does ``torch.compile`` pay on the generic path of ``vi.fit``? Eager against compiled.

For each posteriordb posterior (``examples/posteriordb/``), in one process:

* the wall and CPU time of a default ``vi.fit(model)`` (the second of two calls, so
  imports and allocator warm-up are left out);
* after the MAP and the Laplace fit, the CPU time of one evaluation of the deterministic
  ELBO and its gradient, λ ↦ (ELBO_M(λ), ∇_λ ELBO_M), eager and compiled with
  ``torch.compile`` (inductor), the time of the first compiled call (the compilation),
  and the largest difference between the two gradients.

    python benchmarks/vi_fit_compile.py --posteriors eight_schools,nes --threads 1
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time
import warnings

import torch

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "examples" / "posteriordb"))
import posteriordb_models  # noqa: E402

from varbayes import vi  # noqa: E402
from varbayes.vi import infer  # noqa: E402
from varbayes.vi.model import no_validation  # noqa: E402


def measure(name: str, evals: int) -> dict:
    model = posteriordb_models.model(name)
    for _ in range(2):
        t, c = time.perf_counter(), time.process_time()
        post = vi.fit(model)
        wall, cpu = time.perf_counter() - t, time.process_time() - c
    gen = torch.Generator().manual_seed(0)
    with no_validation():
        z_map, _, _ = infer.find_map(model)
        family = infer._family("fullrank", model, z_map, -infer.laplace(model, z_map), None)
        m = min(max(64, 2 * model.dim), 1024)
        eps = infer._fixed_draws(m, family.noise_dim, model.dim, gen, z_map)
        objective = infer._deterministic_elbo(model, family, eps)
        lam = family.init(gen).requires_grad_(True)

        def value_and_grad(f):
            v = f(lam)
            return v, torch.autograd.grad(v, lam)[0]

        def per_eval(f):
            c = time.process_time()
            for _ in range(evals):
                value_and_grad(f)
            return (time.process_time() - c) / evals * 1e3

        value_and_grad(objective)
        eager = per_eval(objective)
        compiled = torch.compile(objective)
        t = time.perf_counter()
        value_and_grad(compiled)
        first = time.perf_counter() - t
        fast = per_eval(compiled)
        diff = float((value_and_grad(objective)[1] - value_and_grad(compiled)[1]).abs().max())
    return dict(
        posterior=name, fit_wall_s=wall, fit_cpu_s=cpu, steps=post.steps, eager_ms=eager,
        compiled_ms=fast, first_compiled_call_s=first, max_grad_diff=diff,
    )  # fmt: skip


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--posteriors", default="eight_schools,nes")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--evals", type=int, default=50)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    print("| posterior | fit wall s | fit CPU s | L-BFGS iterations | eager ms/eval | "
          "compiled ms/eval | first compiled call s | max grad diff |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for name in args.posteriors.split(","):
        r = measure(name, args.evals)
        print(
            f"| {name} | {r['fit_wall_s']:.2f} | {r['fit_cpu_s']:.2f} | {r['steps']} | "
            f"{r['eager_ms']:.2f} | {r['compiled_ms']:.2f} | {r['first_compiled_call_s']:.1f} | "
            f"{r['max_grad_diff']:.1e} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
