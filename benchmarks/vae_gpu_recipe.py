"""Published MNIST likelihoods in one short GPU session: several VAE runs at once on one GPU.

Runs (dynamically binarized MNIST, all 60,000 training images, Adam, Burda et al.'s
learning-rate schedule squeezed into the epochs that fit the budget, then the test NLL by
IWAE k = 5000 on the 10,000 test images binarized once, seed 123):

====================  ==========================================  ======  ==================
run                   model                                       target  published
====================  ==========================================  ======  ==================
``one-layer-elbo``    784-200-200-50 tanh, ELBO                   86.5    86.76 (Burda 2015)
``one-layer-iwae``    the same, IWAE k = 50                       85.0    84.78 (Burda 2015)
``two-layer-iwae``    784-100-100-100-50-50-50 tanh, IWAE k = 50  83.0    82.90 (Burda 2015)
``vampprior-elbo``    784-200-200-50 tanh, VampPrior K = 500      -       85.57 (Tomczak &
                      (optional, ``--runs``)                              Welling 2018)*
====================  ==========================================  ======  ==================

\\* Tomczak & Welling's 85.57 is with their 300-300 gated MLP, L = 40, warm-up; the run here
keeps Burda's architecture and is a check of the prior, not a reproduction.

How it uses the GPU: every run is its own process on the same device (they time-share it);
the training images live on the device as one tensor, batches are drawn by indexing;
``torch.compile`` of the loss with ``--compile-mode`` (``reduce-overhead``: CUDA graphs;
``step``: the trainer's compiled whole step);
metrics stay on the device (host reads every ``log_every`` batches); batches of
``--batch-size`` (default 100 instead of Burda's 20) with the learning rate scaled by
√(B/20). Each run first times ``--probe-epochs`` epochs (which also compiles), then trains
a fresh model for as many epochs as fit its share of ``--train-budget`` with the
``burda-scaled`` schedule, and stops at the budget in any case (a checkpoint is written).

    python benchmarks/vae_gpu_recipe.py --device cuda --train-budget 330 --out runs/gpu

A dry run on CPU (1 epoch on a subset, small k) checks the pipeline end to end::

    VARBAYES_DATA=/path/to/data python benchmarks/vae_gpu_recipe.py --device cpu \\
        --epochs 1 --probe-epochs 0 --train-size 2000 --k-eval 50 --test-size 200 --out /tmp/g
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from varbayes.vae import VAEConfig
from varbayes.vae.data import load_test_data
from varbayes.vae.evaluate import evaluate
from varbayes.vae.train import Trainer

ONE_LAYER = dict(latent_dim=50, hidden=(200, 200), activation="tanh")
RUNS = {
    "one-layer-elbo": (dict(ONE_LAYER), 86.5, 86.76),
    "one-layer-iwae": (dict(ONE_LAYER, objective="iwae", num_samples=50), 85.0, 84.78),
    "two-layer-iwae": (
        dict(latent_dim=100, hidden=(100, 100), activation="tanh", stochastic_layers=2,
             top_hidden=(50, 50), top_latent_dim=50, kl="mc", objective="iwae",
             num_samples=50),
        83.0, 82.90,
    ),
    "vampprior-elbo": (dict(ONE_LAYER, prior="vampprior", num_pseudo_inputs=500, kl="mc"),
                       None, 85.57),
}  # fmt: skip


def run_config(name: str, args, epochs: int, schedule: str) -> VAEConfig:
    fields, _, _ = RUNS[name]
    return VAEConfig(
        **fields, batch_size=args.batch_size, lr=1e-3 * math.sqrt(args.batch_size / 20),
        lr_schedule=schedule, epochs=epochs, val_size=0, train_size=args.train_size,
        seed=args.seed, precision=args.precision,
    )  # fmt: skip


def train_once(cfg: VAEConfig, out: Path, args, deadline: float):
    def stop_at_deadline(trainer, epoch, batch):
        if time.monotonic() > deadline:
            trainer.request_stop()

    trainer = Trainer(cfg, out, device=args.device, compile=args.compile_mode or False,
                      progress=False, verbose=True, log_every=args.log_every,
                      callback=stop_at_deadline)  # fmt: skip
    return trainer.fit()


def worker(name: str, args) -> dict:
    """Probe the epoch time, train for the budget, evaluate; the result record."""
    if args.device == "cpu" and args.threads:
        torch.set_num_threads(args.threads)
    start = time.monotonic()
    deadline = start + args.train_budget
    out = Path(args.out) / name
    epochs = args.epochs
    if args.probe_epochs:
        probe = train_once(run_config(name, args, args.probe_epochs, "constant"),
                           out / "probe", args, deadline)  # fmt: skip
        steady = probe.history[-1]["epoch_time_s"]  # the last epoch: compiled, warm
        left = deadline - time.monotonic()
        epochs = max(1, min(args.epochs, int(0.95 * left / steady)))
        print(f"{name}: {steady:.2f} s per epoch -> {epochs} epochs in {left:.0f} s", flush=True)
    cfg = run_config(name, args, epochs, "burda-scaled")
    result = train_once(cfg, out / "run", args, deadline)
    train_s = time.monotonic() - start
    x, _ = load_test_data(cfg, None, args.test_size)
    t0 = time.monotonic()
    metrics = evaluate(result.model.eval(), x.to(args.device), k=args.k_eval,
                       batch_size=args.eval_batch, max_rows=args.max_rows)  # fmt: skip
    _, target, published = RUNS[name]
    return {
        "run": name, "epochs": result.epochs_done, "epochs_planned": epochs,
        "interrupted": result.interrupted, "batch_size": cfg.batch_size, "lr": cfg.lr,
        "train_s": train_s, "eval_s": time.monotonic() - t0, "nll": metrics["nll"],
        "nll_se": metrics["nll_se"], "elbo": metrics["elbo"], "k": args.k_eval,
        "test_images": metrics["n"], "active_units": metrics["active_units"],
        "target": target, "published": published,
        "reached": None if target is None else metrics["nll"] <= target,
    }  # fmt: skip


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--runs",
        default="one-layer-elbo,one-layer-iwae,two-layer-iwae",
        help=f"comma-separated, from {list(RUNS)}",
    )
    ap.add_argument("--device", default="cuda")
    ap.add_argument(
        "--train-budget",
        type=float,
        default=330.0,
        help="seconds of training per run, probe included (they run at once)",
    )
    ap.add_argument("--epochs", type=int, default=3280, help="most epochs per run")
    ap.add_argument(
        "--probe-epochs",
        type=int,
        default=2,
        help="epochs timed first to size the run (0: train --epochs)",
    )
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument(
        "--compile-mode",
        default="reduce-overhead",
        help="torch.compile mode of the loss ('' for eager; 'step': the whole step, loss, "
        "gradient and Adam, as one graph, without CUDA graphs)",
    )
    ap.add_argument(
        "--precision",
        choices=("fp32", "bf16-mixed"),
        default="fp32",
        help="arithmetic of the training step (bf16-mixed: the layers in bfloat16)",
    )
    ap.add_argument("--log-every", type=int, default=200)
    ap.add_argument("--train-size", type=int, default=None, help="first N training images")
    ap.add_argument("--k-eval", type=int, default=5000)
    ap.add_argument("--test-size", type=int, default=None, help="first N test images")
    ap.add_argument("--eval-batch", type=int, default=500)
    ap.add_argument("--max-rows", type=int, default=262_144, help="decoder rows per chunk")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads per run (CPU only)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/gpu_recipe")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()  # fmt: skip
    if args.worker:
        res = worker(args.worker, args)
        (Path(args.out) / f"{args.worker}.json").write_text(json.dumps(res, indent=2) + "\n")
        return
    names = [n for n in args.runs.split(",") if n]
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        raise SystemExit(f"--runs: unknown run(s) {unknown}; expected some of {list(RUNS)}")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads or 1)}
    procs = [subprocess.Popen([sys.executable, __file__, *sys.argv[1:], "--worker", n], env=env)
             for n in names]  # fmt: skip
    failed = [n for n, p in zip(names, procs, strict=True) if p.wait() != 0]
    wall = time.monotonic() - t0
    rows = [json.loads((Path(args.out) / f"{n}.json").read_text()) for n in names
            if n not in failed]  # fmt: skip
    hw = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor()
    print(f"\n{len(names)} runs at once on {args.device} ({hw}), {wall:.0f} s wall in all")
    print(f"{'run':>15} | epochs | train s | NLL k={args.k_eval} | target | published")
    for r in rows:
        tgt = "-" if r["target"] is None else f"{r['target']}"
        print(f"{r['run']:>15} | {r['epochs']:6d} | {r['train_s']:7.0f} | "
              f"{r['nll']:.2f} ± {r['nll_se']:.2f} | {tgt:>6} | {r['published']}")  # fmt: skip
    summary = {"wall_s": wall, "hardware": hw, "torch": torch.__version__, "runs": rows,
               "failed": failed, "args": vars(args)}  # fmt: skip
    (Path(args.out) / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if failed:
        raise SystemExit(f"run(s) failed: {failed}")


if __name__ == "__main__":
    main()
