"""Test log-likelihood of an MLP VAE on dynamically binarized MNIST (IWAE bound, k = 5000).

Target (Burda et al. 2015, one stochastic layer, 784-200-200-50 tanh, Table 1):
test NLL <= 86.5 nats when trained with the ELBO (they report 86.76) and <= 85.0 when
trained with the IWAE objective, k = 50 (they report 84.78). Their schedule: Adam,
3^i passes at learning rate 1e-3·10^(-i/7), i = 0..7 (3,280 epochs in all), batch 20.

Recipe with varbayes (GPU strongly advised; each line is one run)::

    # ELBO-trained
    python benchmarks/vae_nll.py --objective elbo --epochs 3280 --device cuda --out runs/nll_elbo
    # IWAE-trained, k = 50
    python benchmarks/vae_nll.py --objective iwae --k-train 50 --epochs 3280 --device cuda \\
        --out runs/nll_iwae

``--lr-schedule burda`` (the default here) follows that schedule; Adam's other settings
are torch's defaults (Burda et al. used ε = 1e-4). See BENCHMARKS.md for what was
reached, on what hardware, in how long. A short run (``--epochs 1 --test-size 500``)
checks the pipeline end to end.

Evaluation: the 10,000 MNIST test images binarized once (seed 123), NLL = −mean IWAE_5000
(``varbayes.vae.evaluate``), plus the test ELBO and the active units.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from varbayes.vae import VAEConfig
from varbayes.vae.config import PRECISIONS
from varbayes.vae.data import load_test_data
from varbayes.vae.evaluate import evaluate, format_table
from varbayes.vae.train import Trainer


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--objective", choices=("elbo", "iwae"), default="elbo")
    ap.add_argument("--k-train", type=int, default=50, help="k of the IWAE objective")
    ap.add_argument("--epochs", type=int, default=3280)
    ap.add_argument("--batch-size", type=int, default=20)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--lr-schedule", choices=("burda", "burda-scaled", "constant"), default="burda")
    ap.add_argument(
        "--stochastic-layers",
        type=int,
        choices=(1, 2),
        default=1,
        help="2: Burda et al.'s two-layer model (784-100-100-z1(100)-50-50-z2(50))",
    )
    ap.add_argument(
        "--prior", choices=("standard", "vampprior"), default="standard", help="p(z) (1 layer)"
    )
    ap.add_argument("--pseudo-inputs", type=int, default=500, help="K of the VampPrior")
    ap.add_argument("--activation", default="tanh", help="hidden activation (Burda et al.: tanh)")
    ap.add_argument("--warmup-epochs", type=float, default=0.0, help="KL warm-up (ELBO)")
    ap.add_argument("--k-eval", type=int, default=5000)
    ap.add_argument("--test-size", type=int, default=None, help="first N test images")
    ap.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="arithmetic of the training step (bf16-mixed: the layers in bfloat16; "
        "bf16-matmul: bfloat16 products of float32 tensors, CPU)",
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    ap.add_argument("--out", type=Path, default=Path("runs/vae_nll"))
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    two = args.stochastic_layers == 2
    cfg = VAEConfig(
        latent_dim=100 if two else 50,
        hidden=(100, 100) if two else (200, 200),
        stochastic_layers=args.stochastic_layers,
        top_hidden=(50, 50),
        top_latent_dim=50,
        prior=args.prior,
        num_pseudo_inputs=args.pseudo_inputs,
        warmup_epochs=args.warmup_epochs,
        activation=args.activation,
        objective=args.objective,
        num_samples=args.k_train if args.objective == "iwae" else 1,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        lr_schedule=args.lr_schedule,
        precision=args.precision,
        val_size=0,
    )
    t0 = time.perf_counter()
    trainer = Trainer(cfg, args.out, device=args.device, progress=False, verbose=True)
    result = trainer.fit(resume=args.resume)
    train_s = time.perf_counter() - t0
    x, _ = load_test_data(cfg, None, args.test_size)
    t1 = time.perf_counter()
    metrics = evaluate(result.model.eval(), x.to(args.device), k=args.k_eval)
    eval_s = time.perf_counter() - t1
    print(format_table(metrics))
    # the targets; for the two-layer ELBO and the VampPrior, the published figures
    if args.prior == "vampprior":
        target = 85.57  # Tomczak & Welling 2018, one layer, ELBO with warm-up
    elif two:
        target = 85.33 if args.objective == "elbo" else 83.0  # Burda et al. 2015
    else:
        target = 86.5 if args.objective == "elbo" else 85.0
    metrics.update(
        objective=args.objective,
        stochastic_layers=args.stochastic_layers,
        prior=args.prior,
        activation=args.activation,
        batch_size=args.batch_size,
        lr_schedule=args.lr_schedule,
        precision=args.precision,
        epochs=result.epochs_done,
        train_s=train_s,
        eval_s=eval_s,
        target_nll=target,
        reached=metrics["nll"] <= target,
        device=args.device,
        machine=platform.processor() or platform.machine(),
        torch=torch.__version__,
        cuda=torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    )
    print(
        f"NLL {metrics['nll']:.2f} ± {metrics['nll_se']:.2f} nats vs target {target} "
        f"({'reached' if metrics['reached'] else 'NOT reached'}); training {train_s:.0f} s, "
        f"evaluation {eval_s:.0f} s"
    )
    (args.out / "nll.json").write_text(json.dumps(metrics, indent=2) + "\n")


if __name__ == "__main__":
    main()
