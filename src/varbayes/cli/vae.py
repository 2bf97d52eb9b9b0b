"""``varbayes vae train|eval|plot``: variational autoencoders on MNIST from the command line."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from varbayes.cli import check_device, check_min, check_out_dir, check_out_file
from varbayes.vae.config import (
    ACTIVATIONS,
    ARCHITECTURES,
    BINARIZATIONS,
    DATASETS,
    KL_ESTIMATORS,
    LIKELIHOODS,
    LR_SCHEDULES,
    OBJECTIVES,
    PRECISIONS,
    PRIORS,
    VAEConfig,
)

_D = VAEConfig()


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers like 512,256; got {text!r}"
        ) from None


# (flag, config field, type, choices, help); every default comes from VAEConfig.
_CONFIG_OPTIONS = [
    ("--latent-dim", "latent_dim", int, None, "size L of the latent z"),
    ("--arch", "architecture", str, ARCHITECTURES, "encoder/decoder networks"),
    ("--hidden", "hidden", _ints, None, "hidden widths of the encoder (decoder mirrors them)"),
    ("--conv-channels", "conv_channels", _ints, None, "channels of the conv layers"),
    ("--activation", "activation", str, ACTIVATIONS, "hidden activation"),
    ("--likelihood", "likelihood", str, LIKELIHOODS, "decoder distribution p(x|z)"),
    ("--gaussian-std", "gaussian_std", float, None, "std of the Gaussian likelihood"),
    ("--objective", "objective", str, OBJECTIVES, "training objective"),
    (
        "--kl",
        "kl",
        str,
        KL_ESTIMATORS,
        "KL term: closed form or Monte Carlo (default: the closed form where it exists, "
        "mc with --prior vampprior or --stochastic-layers 2)",
    ),
    ("--prior", "prior", str, PRIORS, "p(z): N(0, I) or the VampPrior (Tomczak & Welling)"),
    ("--pseudo-inputs", "num_pseudo_inputs", int, None, "K, pseudo-inputs of the VampPrior"),
    (
        "--stochastic-layers",
        "stochastic_layers",
        int,
        (1, 2),
        "stochastic layers; 2: x -> --hidden -> z1 -> --top-hidden -> z2 (Burda et al. 2015)",
    ),
    ("--top-hidden", "top_hidden", _ints, None, "hidden widths between z1 and z2"),
    ("--top-latent-dim", "top_latent_dim", int, None, "size of z2 (two stochastic layers)"),
    ("--k", "num_samples", int, None, "samples of z per image (the k of IWAE)"),
    ("--beta", "beta", float, None, "weight of the KL term"),
    ("--warmup-epochs", "warmup_epochs", float, None, "KL warm-up length (0: none)"),
    (
        "--dataset",
        "dataset",
        str,
        DATASETS,
        "training data; digits: scikit-learn's bundled 8x8 digits, no download (then the "
        "defaults are --val-size 150 --epochs 100)",
    ),
    ("--binarize", "binarize", str, BINARIZATIONS, "binarization of grey-level MNIST"),
    ("--val-size", "val_size", int, None, "training images held out for validation"),
    ("--train-size", "train_size", int, None, "use only this many training images"),
    ("--epochs", "epochs", int, None, "number of epochs"),
    ("--batch-size", "batch_size", int, None, "minibatch size"),
    ("--lr", "lr", float, None, "Adam learning rate"),
    ("--lr-schedule", "lr_schedule", str, LR_SCHEDULES, "learning-rate schedule"),
    (
        "--precision",
        "precision",
        str,
        PRECISIONS,
        "arithmetic of the training step. bf16-matmul (CPU only): float32 tensors, "
        "matrix products and convolutions from bfloat16-rounded inputs inside oneDNN, no "
        "casts; bf16-mixed: the layers in bfloat16 under autocast, weights, Adam and the "
        "loss in float32 (CPU or GPU). For CPUs with bfloat16 instructions (AVX512-BF16, "
        "AMX): on an Intel Xeon with AMX, 784-400-20 model, bf16-matmul trained 1.1x the "
        "samples/s of fp32 and bf16-mixed 1.03x; on an AMD EPYC with AVX512-BF16 "
        "bf16-mixed 1.3x. Without those instructions bf16-mixed may be slower and "
        "bf16-matmul keeps float32 products (with a warning)",
    ),
    ("--seed", "seed", int, None, "seed of weights, data order and noise"),
]


_THREADS_HELP = (
    "intra-op CPU threads per process (default: torch's own, all cores). On a busy shared "
    "machine (other jobs on the same cores) --threads 1 can be several times faster: "
    "threads that wait on each other slow small operations down sharply"
)


def _default_text(field: str) -> str:
    v = getattr(_D, field)
    if isinstance(v, tuple):
        return ",".join(str(i) for i in v)
    return "all" if v is None else str(v)


def register(sub) -> None:
    """Add ``vae`` and its sub-commands to the top-level parser."""
    group = sub.add_parser(
        "vae",
        help="variational autoencoders: train, evaluate and draw (MNIST)",
        description=(
            "Variational autoencoder: q(z|x) = N(mu(x), diag sigma^2(x)), z = mu + sigma * eps, "
            "ELBO = E_q[log p(x|z)] - KL(q(z|x) || p(z)). `varbayes vae train` with no "
            "options trains a 2-D latent VAE on MNIST and draws its manifold."
        ),
    )
    group.set_defaults(group_parser=group)
    cmds = group.add_subparsers(dest="vae_command", metavar="COMMAND")

    t = cmds.add_parser(
        "train",
        help="train a VAE (default: 2-D latent on MNIST) and draw the manifold figure",
        description=(
            "Train a VAE with Adam, writing a checkpoint each epoch, metrics.jsonl and, at "
            "the end, manifold.png and curves.png into --out (one writer at a time: a second "
            "process on the same --out is refused, naming the holder). Several processes: "
            "torchrun --nproc_per_node=N --no-python varbayes vae train ..."
        ),
    )
    for flag, field, typ, choices, text in _CONFIG_OPTIONS:
        t.add_argument(
            flag,
            dest=field,
            type=typ,
            choices=choices,
            default=None,
            help=f"{text} (default: {_default_text(field)})",
        )
    t.add_argument("--learn-std", action="store_true", default=None, help="learn the Gaussian std")
    t.add_argument("--out", type=Path, default=Path("runs/vae"), help="run directory")
    t.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out (Ctrl-C or SIGTERM saves a checkpoint to resume from)",
    )
    t.add_argument("--data-root", type=Path, default=None, help="data directory")
    t.add_argument("--device", default="cpu", help="torch device (cpu, cuda, ...)")
    t.add_argument(
        "--compile",
        nargs="?",
        const="loss",
        default=None,
        choices=["loss", "step"],
        help="torch.compile the loss ('--compile' or '--compile loss'), or the whole step: "
        "loss, gradient and Adam's update as one graph ('--compile step': on a CPU about "
        "1.3x (fp32) to 1.8x (bf16-mixed) the eager step; one process only; each batch "
        "size compiles once, 10-20 s)",
    )
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--no-plot", action="store_true", help="do not draw figures at the end")
    t.add_argument("--log-every", type=int, default=50, help="batches between metric reads")
    t.add_argument("--threads", type=int, default=None, help=_THREADS_HELP)
    t.set_defaults(func=_train)

    e = cmds.add_parser(
        "eval",
        help="test ELBO, NLL (IWAE k=5000), KL per dimension, active units",
        description="Evaluate a checkpoint on the test set; prints a table and writes JSON.",
    )
    e.add_argument("checkpoint", type=Path, help="run directory or checkpoint directory")
    e.add_argument("--k", type=int, default=5000, help="importance samples of the NLL (0: skip)")
    e.add_argument("--test-size", type=int, default=None, help="first N test images (default all)")
    e.add_argument("--batch-size", type=int, default=100, help="images per evaluation batch")
    e.add_argument("--seed", type=int, default=0, help="seed of the noise")
    e.add_argument("--json", type=Path, default=None, help="JSON output (default CKPT/eval.json)")
    e.add_argument("--data-root", type=Path, default=None, help="data directory")
    e.add_argument("--device", default="cpu", help="torch device")
    e.add_argument("--no-progress", action="store_true", help="no progress bar")
    e.add_argument("--threads", type=int, default=None, help=_THREADS_HELP)
    e.set_defaults(func=_eval)

    p = cmds.add_parser(
        "plot",
        help="manifold, reconstructions, samples, latent scatter, training curves (PNG)",
        description="Draw the figures of a checkpoint into --out-dir.",
    )
    p.add_argument("checkpoint", type=Path, help="run directory or checkpoint directory")
    p.add_argument("--out-dir", type=Path, default=None, help="default: the run directory")
    p.add_argument("--grid", type=int, default=20, help="manifold grid size n (n x n)")
    p.add_argument("--test-size", type=int, default=5000, help="test images in the scatter")
    p.add_argument("--data-root", type=Path, default=None, help="data directory")
    p.set_defaults(func=_plot)

    x = cmds.add_parser(
        "explore",
        help="write explore.html: move through the latent space in a browser (offline)",
        description=(
            "Write one self-contained HTML page (works offline, from file://) holding the "
            "decoder's weights and the test set's latent means: moving the pointer over the "
            "latent plane decodes z live in the page; clicking two test digits shows the "
            "decoded line between their codes; L > 2 gets the plane of the first two "
            "principal axes and a slider per dimension. One-layer MLP decoders with a "
            "Bernoulli or Gaussian likelihood."
        ),
    )
    x.add_argument("checkpoint", type=Path, help="run directory or checkpoint directory")
    x.add_argument("--out", type=Path, default=None, help="default: RUN/explore.html")
    x.add_argument("--test-size", type=int, default=1000, help="test images on the plane")
    x.add_argument("--data-root", type=Path, default=None, help="data directory")
    x.set_defaults(func=_explore)


def _config_from_args(args) -> dict:
    given = {f: getattr(args, f) for _, f, *_ in _CONFIG_OPTIONS if getattr(args, f) is not None}
    if args.learn_std:
        given["learn_std"] = True
    return given


def _train(args) -> int:
    from varbayes.vae.train import Trainer

    _set_threads(args.threads)
    check_device(args.device)
    check_min(args, log_every=1)
    check_out_dir(args.out)
    given = _config_from_args(args)
    if args.resume:
        config = _resumed_config(args.out, given)
    else:
        config = _new_config(given)
    trainer = Trainer(
        config,
        args.out,
        data_root=args.data_root,
        device=args.device,
        compile={None: False, "loss": True, "step": "step"}[args.compile],
        progress=not args.no_progress,
        verbose=True,
        log_every=args.log_every,
    )
    result = trainer.fit(resume=args.resume)  # a diverged loss: exit 2 (cli.main)
    if trainer.rank != 0:
        return 0
    if result.interrupted:
        print(
            f"interrupted: checkpoint saved in {result.checkpoint}; continue with "
            f"varbayes vae train --resume --out {args.out}"
        )
        return 130
    last = result.history[-1]
    if last.get("val_elbo") is None:  # --val-size 0: no validation images
        score = f"training {config.objective} {last['train_bound']:.3f} nats (no validation set)"
    else:
        score = f"validation ELBO {last['val_elbo']:.3f} nats"
    print(f"trained {result.epochs_done} epochs: {score}; checkpoint {result.checkpoint}")
    if not args.no_plot:
        from varbayes.vae.plot import plot_manifold, plot_training_curves

        model = result.model.eval().cpu()
        if config.latent_dim >= 2:
            print(f"figure: {plot_manifold(model, args.out / 'manifold.png')}")
        print(f"figure: {plot_training_curves(result.history, args.out / 'curves.png')}")
    return 0


def _new_config(given: dict) -> VAEConfig:
    """``VAEConfig.for_dataset(**given)``; an error about a field is prefixed with its flag."""
    try:
        return VAEConfig.for_dataset(**given)
    except (ValueError, TypeError) as exc:
        text = str(exc)
        for flag, field, *_ in _CONFIG_OPTIONS:
            if text.startswith(f"{field} "):
                raise type(exc)(f"{flag}: {text}") from exc
        raise


def _resumed_config(run: Path, given: dict) -> VAEConfig:
    """The saved configuration of ``run`` with a larger ``epochs``; restating a saved value
    is fine, changing one (or ``epochs`` not beyond what was trained) is a ValueError."""
    from varbayes.vae.checkpoint import load_checkpoint

    ckpt = load_checkpoint(run, with_state=True)
    saved = ckpt.config
    changed = sorted(k for k, v in given.items() if k != "epochs" and getattr(saved, k) != v)
    if changed:
        raise ValueError(
            "--resume continues the saved configuration; only --epochs may change; got "
            + ", ".join(
                f"--{k.replace('_', '-')} {given[k]!r} (saved: {getattr(saved, k)!r})"
                for k in changed
            )
        )
    epoch, batch = int(ckpt.state["epoch"]), int(ckpt.state["batch"])
    need = epoch + 1  # finishes a partial epoch, or adds one to a finished one
    epochs = given.get("epochs", saved.epochs)
    if epochs < need:
        done = f"{epoch} epochs" + (f" and {batch} batches of epoch {epoch + 1}" if batch else "")
        raise ValueError(
            f"--epochs {epochs}: the run in {str(run)!r} has already trained {done}; "
            f"--resume needs --epochs >= {need}"
        )
    return saved.replace(epochs=epochs)


def _set_threads(threads: int | None) -> None:
    import torch

    if threads is not None and threads < 0:
        raise ValueError(f"--threads must be >= 0; got {threads}")
    if threads:
        torch.set_num_threads(threads)


def _eval(args) -> int:
    from varbayes.vae.checkpoint import load_model, resolve_checkpoint
    from varbayes.vae.data import load_test_data
    from varbayes.vae.evaluate import evaluate, format_table

    _set_threads(args.threads)
    device = check_device(args.device)
    check_min(args, k=0, test_size=1, batch_size=1)
    out = args.json
    if out is None:
        base = args.checkpoint if args.checkpoint.is_dir() else args.checkpoint.parent
        out = base / "eval.json"
    check_out_file(out, "--json")
    model = load_model(args.checkpoint, map_location=device)
    x, _ = load_test_data(model.config, args.data_root, args.test_size)
    metrics = evaluate(
        model,
        x.to(args.device),
        k=args.k,
        batch_size=args.batch_size,
        seed=args.seed,
        progress=not args.no_progress,
    )
    metrics["checkpoint"] = str(resolve_checkpoint(args.checkpoint))
    bad = sorted(k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v))
    if bad:
        raise FloatingPointError(
            f"the evaluation of {str(args.checkpoint)!r} gave non-finite {', '.join(bad)}; "
            f"nothing was written to {str(out)!r}"
        )
    print(format_table(metrics))
    from varbayes._io import atomic_write

    with atomic_write(out) as f:
        f.write((json.dumps(metrics, indent=2, allow_nan=False) + "\n").encode())
    print(f"json: {out}")
    return 0


def _plot(args) -> int:
    from varbayes._io import staged_outputs
    from varbayes.vae import plot as vplot
    from varbayes.vae.checkpoint import load_checkpoint
    from varbayes.vae.data import load_test_data

    check_min(args, grid=1, test_size=1)
    out = args.out_dir
    if out is None:
        out = args.checkpoint if args.checkpoint.is_dir() else args.checkpoint.parent
    check_out_dir(out, "--out-dir")
    ckpt = load_checkpoint(args.checkpoint, with_state=True)
    model = ckpt.model.eval()
    x, labels = load_test_data(model.config, args.data_root, args.test_size)
    history = json.loads(ckpt.state["history"])
    figures = {}
    if model.latent_dim >= 2:
        figures["manifold.png"] = lambda p: vplot.plot_manifold(model, p, n=args.grid)
    figures["reconstructions.png"] = lambda p: vplot.plot_reconstructions(model, x, p)
    figures["samples.png"] = lambda p: vplot.plot_samples(model, p)
    figures["latent.png"] = lambda p: vplot.plot_latent_scatter(model, x, p, labels)
    if history:
        figures["curves.png"] = lambda p: vplot.plot_training_curves(history, p)
    with staged_outputs(out) as stage:  # all figures or none
        for name, draw in figures.items():
            draw(stage / name)
    for name in figures:
        print(f"figure: {out / name}")
    return 0


def _explore(args) -> int:
    from varbayes.vae.explore import write_explore

    path = write_explore(
        args.checkpoint, args.out, test_size=args.test_size, data_root=args.data_root
    )
    print(f"page: {path} (open it in a browser; it needs no network)")
    return 0
