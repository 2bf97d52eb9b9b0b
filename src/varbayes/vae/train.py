"""Training a VAE: minibatch SGD (Adam) on −ELBO (or −IWAE_k), with exact resume.

One epoch: a permutation of the N training images from the data-order generator; per
batch b, x_b = X[perm[b·B:(b+1)·B]] (X is one tensor on the device), binarized afresh
(x ~ Bernoulli(grey level)) from the noise generator when dynamic binarization is on,
ε ~ N(0, I) from the same generator, then one Adam step on

    loss_b = −(1/B) Σ_i [E_q[log p(x_i|z)] − β_t · KL(q(z|x_i) || p(z))]

(β_t rises from 0 to β over the KL warm-up). Metric sums stay on the device; the host
reads them only every ``log_every`` batches (progress bar, NaN check) and at epoch end.
After each epoch the validation ELBO is computed, a line is added to ``metrics.jsonl``,
the per-datum ELBO goes through :class:`~varbayes.monitor.ConvergenceMonitor`, and a
checkpoint is written (:mod:`varbayes.vae.checkpoint`).

Exact resume: the checkpoint holds the weights, Adam's state, both generators' states,
the epoch, the position inside the epoch and that epoch's permutation, so an interrupted
run resumed on the same device ends with the same weights as an uninterrupted one.

Several processes (``torchrun --nproc_per_node=N``): each rank takes every N-th image of
each global batch (same permutation on every rank, noise seeded ``seed + rank``),
``DistributedDataParallel`` averages the gradients, rank 0 alone logs and saves.
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from varbayes._distributed import end_process_group
from varbayes._io import atomic_write
from varbayes.monitor import ConvergenceMonitor, NonFiniteObjectiveError
from varbayes.vae.checkpoint import (
    LATEST,
    load_checkpoint,
    save_checkpoint,
)
from varbayes.vae.config import VAEConfig
from varbayes.vae.data import VAEData, load_vae_data
from varbayes.vae.model import VAE

__all__ = ["TrainResult", "Trainer", "TrainingDivergedError", "train"]

METRICS = "metrics.jsonl"
_REPEAT_S = 1.0  # a second SIGINT within this many seconds of the first is the same one


class TrainingDivergedError(NonFiniteObjectiveError):
    """The loss became NaN or infinite; ``epoch`` and ``batch`` (1-based) say where."""

    def __init__(self, message: str, epoch: int, batch: int):
        super().__init__(message, epoch)
        self.epoch = epoch
        self.batch = batch


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns."""

    model: VAE
    history: list[dict]
    run_dir: Path
    checkpoint: Path | None
    epochs_done: int
    interrupted: bool = False


def _dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return rank, world, local


class Trainer:
    """Train a :class:`VAE` described by ``config``, writing checkpoints to ``run_dir``.

    Parameters
    ----------
    config : VAEConfig
    run_dir : path of the run (checkpoints, ``metrics.jsonl``, ``config.json``).
    data : VAEData, optional
        Training/validation tensors (N, D) in [0, 1]; default: :func:`load_vae_data`
        of ``config`` from ``data_root``.
    device : ``"cpu"``, ``"cuda"``, ... (under torchrun with CUDA, ``cuda:LOCAL_RANK``).
    compile : wrap the model's forward (the loss) in ``torch.compile``.
    progress : show a tqdm bar with ELBO, reconstruction term and KL (rank 0 only).
    verbose : print one summary line per epoch (rank 0 only).
    log_every : batches between host reads of the metrics (bar, NaN check, Ctrl-C
        agreement across ranks).
    keep_last : checkpoints kept on disk.
    callback : ``callback(trainer, epoch, batch)`` after every batch (0-based indices).
    on_epoch_end : ``on_epoch_end(trainer, model, record)`` after each epoch's metrics are
        recorded (outside the timed part of the epoch); it may add keys to ``record``.
    """

    def __init__(
        self,
        config: VAEConfig,
        run_dir: str | os.PathLike,
        *,
        data: VAEData | None = None,
        data_root: str | os.PathLike | None = None,
        device: str | torch.device = "cpu",
        compile: bool = False,
        progress: bool = True,
        verbose: bool = False,
        log_every: int = 50,
        keep_last: int = 2,
        callback: Callable | None = None,
        on_epoch_end: Callable | None = None,
    ):
        if not isinstance(config, VAEConfig):
            raise TypeError(f"config must be a VAEConfig; got {type(config).__name__}")
        self.config = config
        self.run_dir = Path(run_dir)
        self.rank, self.world, local = _dist_info()
        device = torch.device(device)
        if self.world > 1 and device.type == "cuda" and device.index is None:
            device = torch.device("cuda", local)
        self.device = device
        self.compile = compile
        self.progress = progress
        self.verbose = verbose
        self.log_every = max(1, int(log_every))
        self.keep_last = keep_last
        self.callback = callback
        self.on_epoch_end = on_epoch_end
        self._data = data
        self._data_root = data_root
        self._stop = False
        self._stop_time = 0.0

    # --------------------------------------------------------------- control
    def request_stop(self) -> None:
        """Ask the loop to save a checkpoint and return after the current batch."""
        self._stop = True

    def _on_signal(self, signum, frame):
        """SIGINT/SIGTERM: save after the current batch and stop. A second Ctrl-C more than
        a second after the first aborts without saving; SIGTERM never aborts. (torchrun
        forwards the terminal's Ctrl-C to workers that already got it, and schedulers send
        SIGTERM before SIGKILL: neither must lose the checkpoint.)"""
        now = time.monotonic()
        if self._stop:
            if signum == signal.SIGINT and now - self._stop_time > _REPEAT_S:
                raise KeyboardInterrupt
            return
        self._stop, self._stop_time = True, now
        if self.rank == 0:
            name = "interrupt" if signum == signal.SIGINT else signal.Signals(signum).name
            print(
                f"\nvarbayes: {name} received; saving a checkpoint after this batch "
                "(Ctrl-C again to abort without saving)",
                flush=True,
            )

    def _beta(self, step: int, n_batches: int) -> float:
        cfg = self.config
        if cfg.warmup_epochs <= 0:
            return cfg.beta
        return cfg.beta * min(1.0, (step + 1) / (cfg.warmup_epochs * n_batches))

    # ------------------------------------------------------------------- fit
    def fit(self, resume: bool = False) -> TrainResult:
        """Run (or, with ``resume``, continue) training up to ``config.epochs`` epochs.

        Returns a :class:`TrainResult`; ``interrupted`` is True when Ctrl-C, SIGTERM (or
        :meth:`request_stop`) stopped it after saving. Raises :class:`TrainingDivergedError`
        naming the epoch and batch when the loss becomes non-finite (the last good
        checkpoint is left as it was), ``ValueError`` when ``resume`` finds a run with a
        different configuration or no run is found, or when a new run would overwrite one.
        """
        self._stop = False
        created_group = False
        if self.world > 1 and not dist.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            dist.init_process_group(backend)
            created_group = True
        old_handlers = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                old_handlers[sig] = signal.signal(sig, self._on_signal)
        finished = False
        try:
            result = self._fit(resume)
            finished = True
            return result
        finally:
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
            if created_group:
                end_process_group(finished)

    def _setup(self, resume: bool):
        cfg = self.config
        state = None
        has_run = (self.run_dir / LATEST).is_file()
        if resume:
            if not has_run:
                raise FileNotFoundError(
                    f"resume: no checkpoint in run_dir {str(self.run_dir)!r} "
                    f"(expected {LATEST}); start a new run without resume"
                )
            ckpt = load_checkpoint(self.run_dir, map_location="cpu")
            saved = ckpt.config.replace(epochs=cfg.epochs)
            if saved != cfg:
                a, b = saved.to_dict(), cfg.to_dict()
                diff = {k: (a[k], b[k]) for k in a if a[k] != b[k]}
                raise ValueError(
                    "resume: config differs from the saved run in "
                    + ", ".join(f"{k} (saved {s!r}, given {g!r})" for k, (s, g) in diff.items())
                    + "; only epochs may change on resume"
                )
            model, state = ckpt.model, ckpt.state
        else:
            if has_run:
                raise ValueError(
                    f"run_dir {str(self.run_dir)!r} already holds a run ({LATEST}); "
                    "pass resume=True (--resume) to continue it or choose another directory"
                )
            torch.manual_seed(cfg.seed)
            model = VAE(cfg)
        return model.to(self.device), state

    def _fit(self, resume: bool) -> TrainResult:
        cfg = self.config
        dev = self.device
        model, state = self._setup(resume)
        data = (
            self._data
            if self._data is not None
            else load_vae_data(cfg, self._data_root, test=False)
        )
        # Sizes and values are checked once here, not per batch.
        train_x = model.flatten(data.train, "data.train").to(dev, torch.float32)
        val_x = model.flatten(data.val, "data.val").to(dev, torch.float32)
        n = train_x.shape[0]
        bsz = cfg.batch_size
        if self.world > 1:
            n_batches = n // bsz  # equal shards on every rank
        else:
            n_batches = math.ceil(n / bsz)
        if bsz > n or bsz < self.world:
            raise ValueError(
                f"batch_size must be >= the number of processes ({self.world}) and <= the "
                f"number of training images ({n}); got {bsz}"
            )

        # The fused kernel does Adam's per-parameter arithmetic in one pass (about twice
        # as fast as the foreach path on CPU for this model size).
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, fused=True)
        order_gen = torch.Generator(device=dev).manual_seed(cfg.seed)
        noise_gen = torch.Generator(device=dev).manual_seed(cfg.seed + 1 + self.rank)
        epoch, batch, step = 0, 0, 0
        perm = None
        sums = torch.zeros(3, device=dev, dtype=torch.float64)
        batch_losses = torch.zeros(n_batches, device=dev)
        history: list[dict] = []
        if state is not None:
            opt.load_state_dict(state["optimizer"])
            order_gen.set_state(state["order_rng"])
            noise_states = state["noise_rng"]
            if len(noise_states) != self.world:
                raise ValueError(
                    f"resume: the run was saved with {len(noise_states)} process(es); "
                    f"got {self.world}"
                )
            noise_gen.set_state(noise_states[self.rank])
            epoch, batch, step = state["epoch"], state["batch"], state["step"]
            history = [dict(h) for h in json.loads(state["history"])]
            if batch > 0:
                perm = state["perm"].to(dev)
                if perm.shape[0] != n or state["batch_losses"].shape[0] != n_batches:
                    raise ValueError(
                        f"resume: the saved epoch covers {perm.shape[0]} images; the data "
                        f"now has {n}"
                    )
                sums = state["sums"].to(dev)
                batch_losses = state["batch_losses"].to(dev)
        monitor = ConvergenceMonitor(tol=0.0, max_iter=cfg.epochs, name="ELBO")
        monitor.state.history.extend(h["train_bound"] for h in history)

        net = model
        if self.world > 1:
            net = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[dev.index] if dev.type == "cuda" else None
            )
        forward = torch.compile(net) if self.compile else net
        dyn = cfg.dynamic_binarization
        kw = dict(objective=cfg.objective, num_samples=cfg.num_samples, kl=cfg.kl)
        last_ckpt = None
        is_main = self.rank == 0

        def snapshot(ep, b, st, p, s, bl):
            noise = noise_gen.get_state()
            noise_all = [noise]
            if self.world > 1:
                noise_all = [None] * self.world
                dist.all_gather_object(noise_all, noise)
            return {
                "epoch": ep,
                "batch": b,
                "step": st,
                "optimizer": opt.state_dict(),
                "order_rng": order_gen.get_state(),
                "noise_rng": noise_all,
                "perm": None if p is None else p.cpu(),
                "sums": s.cpu(),
                "batch_losses": bl.cpu(),
                "history": json.dumps(history),
                "world_size": self.world,
            }

        def save(st_dict, name):
            nonlocal last_ckpt
            if is_main:
                last_ckpt = save_checkpoint(
                    self.run_dir, name, model, st_dict, keep_last=self.keep_last
                )
                with atomic_write(self.run_dir / METRICS) as f:
                    f.write("".join(json.dumps(h) + "\n" for h in history).encode())

        if is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        interrupted = False
        while epoch < cfg.epochs:
            model.train()
            for group in opt.param_groups:
                group["lr"] = cfg.learning_rate(epoch)
            t0 = time.perf_counter()
            start_batch = batch
            if batch == 0:
                perm = torch.randperm(n, generator=order_gen, device=dev)
                sums.zero_()
                batch_losses.zero_()
            bar = tqdm(
                total=n_batches,
                initial=batch,
                desc=f"epoch {epoch + 1}/{cfg.epochs}",
                disable=not (self.progress and is_main),
                leave=False,
                dynamic_ncols=True,
            )
            seen = 0
            stop_now = False
            try:
                while batch < n_batches:
                    idx = perm[batch * bsz : (batch + 1) * bsz]
                    if self.world > 1:
                        idx = idx[self.rank :: self.world]
                    x = train_x[idx]
                    if dyn:
                        x = torch.bernoulli(x, generator=noise_gen)
                    eps = torch.randn(
                        (cfg.num_samples, x.shape[0], cfg.latent_dim),
                        generator=noise_gen,
                        device=dev,
                    )
                    beta = self._beta(step, n_batches)
                    if self.compile:
                        beta = torch.tensor(beta, device=dev)
                    loss, s = forward(x, beta=beta, eps=eps, **kw)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sums += s
                    batch_losses[batch] = loss.detach()
                    batch += 1
                    step += 1
                    seen += x.shape[0]
                    bar.update(1)
                    if self.callback is not None:
                        self.callback(self, epoch, batch - 1)
                    if batch % self.log_every == 0 or batch == n_batches:
                        self._check_and_show(bar, sums, batch_losses, batch, epoch, n, bsz)
                        if self.world > 1:  # all ranks agree on stopping, at the same batch
                            flag = torch.tensor([float(self._stop)], device=dev)
                            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                            stop_now = bool(flag.item())
                    if self.world == 1:
                        stop_now = self._stop
                    if stop_now:
                        break
            finally:
                bar.close()
            if stop_now and batch < n_batches:
                self._check_and_show(None, sums, batch_losses, batch, epoch, n, bsz)
                name = f"epoch-{epoch:04d}-batch-{batch:06d}"
                save(snapshot(epoch, batch, step, perm, sums, batch_losses), name)
                interrupted = True
                break
            elapsed = time.perf_counter() - t0
            tot = sums.clone()
            if self.world > 1:
                dist.all_reduce(tot)
            n_epoch = n_batches * bsz if self.world > 1 else n
            tot = (tot / n_epoch).tolist()
            val = _validation_elbo(model, val_x, cfg, seed=cfg.seed + 1000 + epoch)
            record = {
                "epoch": epoch + 1,
                "objective": cfg.objective,
                "train_bound": tot[0],
                "train_recon": tot[1],
                "train_kl": tot[2],
                **val,
                "beta": self._beta(step - 1, n_batches),
                "lr": cfg.learning_rate(epoch),
                "epoch_time_s": elapsed,
                "samples_per_s": seen * self.world / elapsed if elapsed > 0 else None,
                "resumed_at_batch": start_batch or None,
            }
            if self.on_epoch_end is not None:
                self.on_epoch_end(self, model, record)
            history.append(record)
            monitor.update(record["train_bound"])
            epoch += 1
            batch = 0
            perm = None
            save(snapshot(epoch, 0, step, None, sums, batch_losses), f"epoch-{epoch:04d}")
            if is_main and (self.verbose or self.progress):
                v = record["val_elbo"]
                tqdm.write(
                    f"epoch {epoch}/{cfg.epochs}: train {cfg.objective} {tot[0]:.3f} "
                    f"(recon {tot[1]:.3f}, KL {tot[2]:.3f}), val ELBO "
                    + ("-" if v is None else f"{v:.3f}")
                    + f", {seen * self.world / max(elapsed, 1e-9):.0f} samples/s"
                )
            if stop_now:
                interrupted = epoch < cfg.epochs
                break
        monitor.close()
        return TrainResult(model, history, self.run_dir, last_ckpt, epoch, interrupted)

    def _check_and_show(self, bar, sums, batch_losses, upto, epoch, n, bsz) -> None:
        """One host read: raise on a non-finite batch loss, refresh the progress bar."""
        bad = ~torch.isfinite(batch_losses[:upto])
        values = torch.cat([sums.float(), bad.any().float()[None]]).tolist()
        if values[3]:
            first = int(bad.nonzero()[0, 0]) + 1
            where = (
                f"the last good checkpoint in {str(self.run_dir)!r} is left as it was"
                if (self.run_dir / LATEST).is_file()
                else "no checkpoint was written"
            )
            raise TrainingDivergedError(
                f"the loss became non-finite at epoch {epoch + 1}, batch {first}; "
                f"training stopped ({where}). Lower the learning rate (lr="
                f"{self.config.lr:g}) or check the data.",
                epoch + 1,
                first,
            )
        if bar is not None and not bar.disable:
            count = max(1, min(upto * bsz, n)) / self.world
            bar.set_postfix(
                elbo=f"{values[0] / count:.2f}",
                recon=f"{values[1] / count:.2f}",
                kl=f"{values[2] / count:.2f}",
                refresh=False,
            )


@torch.no_grad()
def _validation_elbo(model: VAE, x: torch.Tensor, cfg: VAEConfig, seed: int) -> dict:
    """Mean ELBO terms of the validation images (analytic KL, one draw of z from ``seed``)."""
    if x.shape[0] == 0:
        return {"val_elbo": None, "val_recon": None, "val_kl": None}
    model.eval()
    g = torch.Generator(device=x.device).manual_seed(seed)
    tot = torch.zeros(3, dtype=torch.float64, device=x.device)
    for chunk in x.split(1000):
        t = model._terms(chunk, num_samples=1, kl="analytic", generator=g)
        tot += torch.stack([t.elbo.sum(), t.recon.sum(), t.kl.sum()]).double()
    model.train()
    v = (tot / x.shape[0]).tolist()
    return {"val_elbo": v[0], "val_recon": v[1], "val_kl": v[2]}


def train(
    config: VAEConfig, run_dir: str | os.PathLike, *, resume: bool = False, **kwargs
) -> TrainResult:
    """``Trainer(config, run_dir, **kwargs).fit(resume)``: train a VAE and return the result."""
    return Trainer(config, run_dir, **kwargs).fit(resume)
