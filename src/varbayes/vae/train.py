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

The loop is cut along its seams: :meth:`Trainer._setup` (model, data, optimizer, a
:class:`TrainState`), :meth:`Trainer._run_epoch` (the batches of one epoch),
:meth:`Trainer._train_batch` (one Adam step), :meth:`Trainer._end_epoch` (validation,
the epoch's record) and :meth:`Trainer._save` (a checkpoint). Everything that moves
during a run lives in the :class:`TrainState` record.

Exact resume: the checkpoint holds the weights, Adam's state and the
:class:`TrainState` (both generators' states, the epoch, the position inside the epoch
and that epoch's permutation), so an interrupted run resumed on the same device ends with
the same weights as an uninterrupted one. The initial weights are drawn from ``seed``
inside :func:`torch.random.fork_rng`, so training never changes the global torch RNG.

Subnormal moments: a weight whose gradient becomes exactly zero (a unit that stopped
firing, a pixel blank in every later batch) keeps m_t = 0.9^t · m_0 and v_t = 0.999^t ·
v_0, which pass through float32's subnormal range (below 1.2e-38), where x86 arithmetic
is many times slower: Adam's step took 3.5 ms instead of 1.0 ms on an Intel Xeon. Every
``SUBNORMAL_SWEEP_EVERY`` steps :func:`flush_subnormal_moments` sets moments smaller than
2¹⁰ times the smallest normal number (1.2e-35) to zero, so none ever becomes subnormal.
That changes a step by at most lr · 1.2e-35 / ε ≈ 1e-30 (m), or by a relative 4e-10 (v,
beside ε = 1e-8 in √v + ε): below what a float32 weight can hold. A sweep costs about
3 ms for this 650k-weight model, 0.05 ms a step.

Several processes (``torchrun --nproc_per_node=N``): each rank takes every N-th image of
each global batch (same permutation on every rank, noise seeded ``seed + rank``),
``DistributedDataParallel`` averages the gradients, rank 0 alone logs and saves.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from varbayes._distributed import end_process_group
from varbayes._io import atomic_write
from varbayes._validation import check_device
from varbayes.monitor import ConvergenceMonitor, NonFiniteObjectiveError
from varbayes.runlock import RunLock
from varbayes.vae.checkpoint import (
    LATEST,
    load_checkpoint,
    remove_leftovers,
    resolve_checkpoint,
    save_checkpoint,
)
from varbayes.vae.config import VAEConfig
from varbayes.vae.data import VAEData, load_vae_data
from varbayes.vae.model import VAE
from varbayes.vae.precision import bf16_products_supported, step_precision
from varbayes.vae.step import CompiledStep

__all__ = ["TrainResult", "TrainState", "Trainer", "TrainingDivergedError", "train"]

METRICS = "metrics.jsonl"
# Adam's moments are swept for near-subnormal values every this many steps (see below).
SUBNORMAL_SWEEP_EVERY = 64
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


@dataclass
class TrainState:
    """Where a run stands: all that a resume needs besides the weights and Adam's state.

    Fields
    ------
    epoch : epochs finished.
    batch : batches finished in the current epoch (0 between epochs).
    step : Adam steps taken in all (it drives the KL warm-up β_t).
    perm : (N,) the current epoch's data order, None between epochs.
    sums : (3,) float64 on the device, [Σ bound, Σ recon, Σ kl] over this rank's images
        of the current epoch so far.
    batch_losses : (n_batches,) the loss of each batch of the current epoch.
    history : one record per finished epoch (what ``metrics.jsonl`` holds).
    order_rng : draws the permutation of each epoch (same seed on every rank).
    noise_rng : draws the binarization and ε of this rank (seed + 1 + rank).
    """

    epoch: int
    batch: int
    step: int
    perm: torch.Tensor | None
    sums: torch.Tensor
    batch_losses: torch.Tensor
    history: list[dict] = field(default_factory=list)
    order_rng: torch.Generator | None = None
    noise_rng: torch.Generator | None = None

    @classmethod
    def new(cls, seed: int, rank: int, n_batches: int, device: torch.device) -> TrainState:
        """The state before the first batch of a run seeded ``seed``."""
        return cls(
            epoch=0,
            batch=0,
            step=0,
            perm=None,
            sums=torch.zeros(3, device=device, dtype=torch.float64),
            batch_losses=torch.zeros(n_batches, device=device),
            order_rng=torch.Generator(device=device).manual_seed(seed),
            noise_rng=torch.Generator(device=device).manual_seed(seed + 1 + rank),
        )

    def start_epoch(self, n: int) -> None:
        """Draw the epoch's permutation of the n images and clear its sums."""
        self.perm = torch.randperm(n, generator=self.order_rng, device=self.sums.device)
        self.sums.zero_()
        self.batch_losses.zero_()

    def end_epoch(self, record: dict) -> None:
        """Append the finished epoch's ``record`` and move to the next epoch."""
        self.history.append(record)
        self.epoch += 1
        self.batch = 0
        self.perm = None

    def to_checkpoint(self, optimizer: torch.optim.Optimizer, world: int) -> dict:
        """The plain dict saved in ``state.pt`` (tensors, numbers, strings, lists only).

        Collective under torchrun: every rank's noise state is gathered (each rank calls it).
        """
        noise = self.noise_rng.get_state()
        noise_all = [noise]
        if world > 1:
            noise_all = [None] * world
            dist.all_gather_object(noise_all, noise)
        return {
            "epoch": self.epoch,
            "batch": self.batch,
            "step": self.step,
            "optimizer": optimizer.state_dict(),
            "order_rng": self.order_rng.get_state(),
            "noise_rng": noise_all,
            "perm": None if self.perm is None else self.perm.cpu(),
            "sums": self.sums.cpu(),
            "batch_losses": self.batch_losses.cpu(),
            "history": json.dumps(self.history),
            "world_size": world,
        }

    def load_checkpoint(self, saved: dict, rank: int, world: int, n: int) -> None:
        """Take over the state :meth:`to_checkpoint` wrote, checking it fits this run.

        Raises ``ValueError`` when the run was saved with another process count or, mid
        epoch, on data of another size.
        """
        noise_states = saved["noise_rng"]
        if len(noise_states) != world:
            raise ValueError(
                f"resume: the run was saved with {len(noise_states)} process(es); got {world}"
            )
        dev = self.sums.device
        self.order_rng.set_state(saved["order_rng"])
        self.noise_rng.set_state(noise_states[rank])
        self.epoch, self.batch, self.step = saved["epoch"], saved["batch"], saved["step"]
        self.history = [dict(h) for h in json.loads(saved["history"])]
        if self.batch > 0:
            perm = saved["perm"]
            if perm.shape[0] != n or saved["batch_losses"].shape != self.batch_losses.shape:
                raise ValueError(
                    f"resume: the saved epoch covers {perm.shape[0]} images; the data now has {n}"
                )
            self.perm = perm.to(dev)
            self.sums = saved["sums"].to(dev)
            self.batch_losses = saved["batch_losses"].to(dev)


@dataclass
class _Run:
    """What stays fixed during a run once it is set up."""

    model: VAE
    forward: Callable  # the loss: model, or its DDP / compiled wrapper
    optimizer: torch.optim.Optimizer
    train_x: torch.Tensor  # (N, D) on the device
    val_x: torch.Tensor  # (N_val, D) on the device
    n_batches: int
    step: CompiledStep | None = None  # compile="step": loss, gradient and Adam as one graph


def flush_subnormal_moments(optimizer: torch.optim.Optimizer) -> None:
    """Zero the floating-point state entries (Adam's m and v) below 2¹⁰ · the smallest
    normal number of their dtype, before they decay into the slow subnormal range.

    Between two sweeps (``SUBNORMAL_SWEEP_EVERY`` = 64 steps) a moment shrinks by at
    most 0.9⁶⁴ ≈ 1/850 when its gradient is zero, so from above the threshold it cannot
    reach a subnormal value; a zero moment stays zero (zero is fast).
    """
    with torch.no_grad():
        for entry in optimizer.state.values():
            for t in entry.values():
                if isinstance(t, torch.Tensor) and t.is_floating_point() and t.dim() > 0:
                    t.masked_fill_(t.abs() < torch.finfo(t.dtype).tiny * 1024, 0.0)


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
    compile : ``True`` wraps the model's forward (the loss) in ``torch.compile``; another
        string than ``"step"`` is its ``mode`` (``"reduce-overhead"``: CUDA graphs on a
        GPU). ``"step"`` compiles the whole step (loss, gradient and Adam's update) as one
        graph (:mod:`varbayes.vae.step`): on a CPU about 1.3x (fp32) to 1.8x (bf16-mixed)
        the eager step's speed; one process only; each batch size compiles once (10-20 s).
    progress : show a tqdm bar with ELBO, reconstruction term and KL (rank 0 only).
    verbose : print one summary line per epoch (rank 0 only).
    log_every : batches between host reads of the metrics (bar, NaN check, Ctrl-C
        agreement across ranks).
    keep_last : checkpoints kept on disk.
    callback : ``callback(trainer, epoch, batch)`` after every batch (0-based indices);
        ``trainer.model`` is the model being trained.
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
        compile: bool | str = False,
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
        device = check_device(device, "device")
        if self.world > 1 and device.type == "cuda" and device.index is None:
            device = torch.device("cuda", local)
        self.device = device
        # the context of one training step (refuses bf16-matmul off the CPU, before any file)
        self._step_precision = step_precision(config.precision, device)
        if config.precision == "bf16-matmul" and not bf16_products_supported():
            warnings.warn(
                "precision='bf16-matmul': this CPU's oneDNN has no bfloat16 products "
                "(no AVX512-BF16 or AMX); the products stay float32",
                RuntimeWarning,
                stacklevel=2,
            )
        if compile == "step" and self.world > 1:
            raise ValueError(
                "compile='step' runs in one process; under torchrun use compile=True "
                "(the loss alone) or compile=False"
            )
        self.compile = compile
        self.progress = progress
        self.verbose = verbose
        self.log_every = max(1, int(log_every))
        self.keep_last = keep_last
        self.callback = callback
        self.on_epoch_end = on_epoch_end
        self.model: VAE | None = None  # set by fit
        self._data = data
        self._data_root = data_root
        self._stop = False
        self._stop_time = 0.0
        self._last_checkpoint: Path | None = None

    @property
    def is_main(self) -> bool:
        """Whether this process logs and saves (rank 0)."""
        return self.rank == 0

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
        if self.is_main:
            name = "interrupt" if signum == signal.SIGINT else signal.Signals(signum).name
            print(
                f"\nvarbayes: {name} received; saving a checkpoint after this batch "
                "(Ctrl-C again to abort without saving)",
                flush=True,
            )

    def _stop_agreed(self, host_read: bool) -> bool:
        """Whether to stop after this batch. Under torchrun the ranks agree, at the batches
        where the host reads the metrics (``host_read``), so all stop at the same batch."""
        if self.world == 1:
            return self._stop
        if not host_read:
            return False
        flag = torch.tensor([float(self._stop)], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

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
            # Rank 0 alone writes; it holds the run directory's lock while it may.
            with RunLock(self.run_dir) if self.is_main else contextlib.nullcontext():
                if self.is_main:
                    remove_leftovers(self.run_dir)  # of a writer killed mid-save
                result = self._fit(resume)
            finished = True
            return result
        finally:
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
            if created_group:
                end_process_group(finished)

    def _fit(self, resume: bool) -> TrainResult:
        """The epoch loop: run epochs until ``config.epochs`` or a stop request."""
        cfg = self.config
        run, state = self._setup(resume)
        monitor = ConvergenceMonitor(tol=0.0, max_iter=cfg.epochs, name="ELBO")
        monitor.state.history.extend(h["train_bound"] for h in state.history)
        # a resume with nothing left to train returns the checkpoint it resumed from
        self._last_checkpoint = resolve_checkpoint(self.run_dir) if resume else None
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if resume:  # metrics.jsonl follows the checkpoint (a crash may have cut it short)
                self._write_metrics(state)
        interrupted = False
        while state.epoch < cfg.epochs:
            t0 = time.perf_counter()
            start_batch = state.batch
            stopped, seen = self._run_epoch(run, state)
            if stopped and state.batch < run.n_batches:
                self._check_and_show(None, state)
                self._save(run, state, f"epoch-{state.epoch:04d}-batch-{state.batch:06d}")
                interrupted = True
                break
            record = self._end_epoch(run, state, time.perf_counter() - t0, seen, start_batch)
            monitor.update(record["train_bound"])
            self._save(run, state, f"epoch-{state.epoch:04d}")
            if stopped:
                interrupted = state.epoch < cfg.epochs
                break
        monitor.close()
        return TrainResult(
            run.model, state.history, self.run_dir, self._last_checkpoint, state.epoch, interrupted
        )

    # ---------------------------------------------------------------- set-up
    def _setup(self, resume: bool) -> tuple[_Run, TrainState]:
        """Build (or load) the model, put the data on the device, make Adam and the state."""
        cfg = self.config
        dev = self.device
        model, saved = self._load_or_init(resume)
        self.model = model
        data = (
            self._data
            if self._data is not None
            else load_vae_data(cfg, self._data_root, test=False)
        )
        # Sizes and values are checked once here, not per batch.
        train_x = model.flatten(data.train, "data.train").to(dev, torch.float32)
        val_x = model.flatten(data.val, "data.val").to(dev, torch.float32)
        n, bsz = train_x.shape[0], cfg.batch_size
        if bsz > n or bsz < self.world:
            raise ValueError(
                f"batch_size must be >= the number of processes ({self.world}) and <= the "
                f"number of training images ({n}); got {bsz}"
            )
        # Under torchrun the shards must be equal on every rank: the last partial batch goes.
        n_batches = n // bsz if self.world > 1 else math.ceil(n / bsz)
        # The fused kernel does Adam's per-parameter arithmetic in one pass (about twice
        # as fast as the foreach path on CPU for this model size).
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, fused=True)
        state = TrainState.new(cfg.seed, self.rank, n_batches, dev)
        if saved is not None:
            opt.load_state_dict(saved["optimizer"])
            state.load_checkpoint(saved, self.rank, self.world, n)
        net = model
        if self.world > 1:
            net = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[dev.index] if dev.type == "cuda" else None
            )
        if self.compile == "step":
            step = CompiledStep(
                model,
                opt,
                forward=self._step_precision.forward,
                backward=self._step_precision.backward,
                autocast_inside=cfg.precision == "bf16-mixed",
                loss_kwargs=dict(objective=cfg.objective, num_samples=cfg.num_samples, kl=cfg.kl),
            )
            return _Run(model, model, opt, train_x, val_x, n_batches, step), state
        mode = self.compile if isinstance(self.compile, str) else None
        forward = torch.compile(net, mode=mode) if self.compile else net
        return _Run(model, forward, opt, train_x, val_x, n_batches), state

    def _load_or_init(self, resume: bool) -> tuple[VAE, dict | None]:
        """The saved model and state dict (``resume``), or fresh weights from ``seed``."""
        cfg = self.config
        has_run = (self.run_dir / LATEST).is_file()
        if not resume:
            if has_run:
                raise ValueError(
                    f"run_dir {str(self.run_dir)!r} already holds a run ({LATEST}); "
                    "pass resume=True (--resume) to continue it or choose another directory"
                )
            # The weights come from a private copy of the RNG seeded by cfg.seed; the
            # caller's global torch RNG is left as it was.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.seed)
                model = VAE(cfg)
            return model.to(self.device), None
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
        done, batch = int(ckpt.state["epoch"]), int(ckpt.state["batch"])
        if cfg.epochs < done + (batch > 0):
            raise ValueError(
                f"epochs={cfg.epochs}: the run in {str(self.run_dir)!r} has already trained "
                f"{done} epochs"
                + (f" and {batch} batches" if batch else "")
                + f"; resume needs epochs >= {done + (batch > 0)}"
            )
        return ckpt.model.to(self.device), ckpt.state

    # ----------------------------------------------------------------- epoch
    def _run_epoch(self, run: _Run, state: TrainState) -> tuple[bool, int]:
        """Train the remaining batches of the current epoch, or until a stop request.

        Returns ``(stopped, seen)``: whether a stop request ended it, and the images this
        rank trained on.
        """
        cfg = self.config
        run.model.train()
        for group in run.optimizer.param_groups:
            group["lr"] = cfg.learning_rate(state.epoch)
        if state.batch == 0:
            state.start_epoch(run.train_x.shape[0])
        bar = tqdm(
            total=run.n_batches,
            initial=state.batch,
            desc=f"epoch {state.epoch + 1}/{cfg.epochs}",
            disable=not (self.progress and self.is_main),
            leave=False,
            dynamic_ncols=True,
        )
        seen = 0
        try:
            while state.batch < run.n_batches:
                seen += self._train_batch(run, state)
                bar.update(1)
                if self.callback is not None:
                    self.callback(self, state.epoch, state.batch - 1)
                host_read = state.batch % self.log_every == 0 or state.batch == run.n_batches
                if host_read:
                    self._check_and_show(bar, state)
                if self._stop_agreed(host_read):
                    return True, seen
        finally:
            bar.close()
        return False, seen

    def _train_batch(self, run: _Run, state: TrainState) -> int:
        """One Adam step on the state's next batch; returns its number of images (this rank)."""
        cfg = self.config
        bsz = cfg.batch_size
        idx = state.perm[state.batch * bsz : (state.batch + 1) * bsz]
        if self.world > 1:
            idx = idx[self.rank :: self.world]
        x = run.train_x.index_select(0, idx)  # the rows idx (5x faster than train_x[idx])
        if cfg.dynamic_binarization:
            x = torch.bernoulli(x, generator=state.noise_rng)
        eps = torch.randn(
            (cfg.num_samples, x.shape[0], run.model.noise_dim),
            generator=state.noise_rng,
            device=x.device,
        )
        beta = self._beta(state.step, run.n_batches)
        if run.step is not None:  # loss, gradient and Adam's update in one graph
            loss, sums = run.step(x, eps, beta, state.step + 1)
        else:
            if self.compile:
                beta = torch.tensor(beta, device=x.device)
            # forward and backward under cfg.precision (precision.py); Adam in float32
            with self._step_precision.forward():
                loss, sums = run.forward(
                    x, beta=beta, eps=eps, objective=cfg.objective,
                    num_samples=cfg.num_samples, kl=cfg.kl,
                )  # fmt: skip
            run.optimizer.zero_grad(set_to_none=True)
            with self._step_precision.backward():
                loss.backward()
            run.optimizer.step()
        state.sums += sums
        state.batch_losses[state.batch] = loss.detach()
        state.batch += 1
        state.step += 1
        if state.step % SUBNORMAL_SWEEP_EVERY == 0:
            flush_subnormal_moments(run.optimizer)
        return x.shape[0]

    def _end_epoch(
        self, run: _Run, state: TrainState, elapsed: float, seen: int, start_batch: int
    ) -> dict:
        """Validate, record the finished epoch in ``state`` and print its line; the record."""
        cfg = self.config
        tot = state.sums.clone()
        if self.world > 1:
            dist.all_reduce(tot)
        n = run.train_x.shape[0]
        n_epoch = run.n_batches * cfg.batch_size if self.world > 1 else n
        tot = (tot / n_epoch).tolist()
        val = _validation_elbo(run.model, run.val_x, cfg, seed=cfg.seed + 1000 + state.epoch)
        rate = seen * self.world / elapsed if elapsed > 0 else None
        record = {
            "epoch": state.epoch + 1,
            "objective": cfg.objective,
            "train_bound": tot[0],
            "train_recon": tot[1],
            "train_kl": tot[2],
            **val,
            "beta": self._beta(state.step - 1, run.n_batches),
            "lr": cfg.learning_rate(state.epoch),
            "epoch_time_s": elapsed,
            "samples_per_s": rate,
            "resumed_at_batch": start_batch or None,
        }
        if self.on_epoch_end is not None:
            self.on_epoch_end(self, run.model, record)
        state.end_epoch(record)
        if self.is_main and (self.verbose or self.progress):
            v = record["val_elbo"]
            tqdm.write(
                f"epoch {state.epoch}/{cfg.epochs}: train {cfg.objective} {tot[0]:.3f} "
                f"(recon {tot[1]:.3f}, KL {tot[2]:.3f}), val ELBO "
                + ("-" if v is None else f"{v:.3f}")
                + f", {seen * self.world / max(elapsed, 1e-9):.0f} samples/s"
            )
        return record

    def _save(self, run: _Run, state: TrainState, name: str) -> None:
        """Checkpoint ``name`` and metrics.jsonl (rank 0 writes; every rank takes part)."""
        if run.step is not None:
            run.step.sync_optimizer()
        saved = state.to_checkpoint(run.optimizer, self.world)
        if self.is_main:
            self._last_checkpoint = save_checkpoint(
                self.run_dir, name, run.model, saved, keep_last=self.keep_last
            )
            self._write_metrics(state)

    def _write_metrics(self, state: TrainState) -> None:
        """metrics.jsonl: one line per finished epoch of ``state.history``, atomically."""
        with atomic_write(self.run_dir / METRICS) as f:
            f.write("".join(json.dumps(h) + "\n" for h in state.history).encode())

    def _check_and_show(self, bar, state: TrainState) -> None:
        """One host read: raise on a non-finite batch loss, refresh the progress bar."""
        upto = state.batch
        bad = ~torch.isfinite(state.batch_losses[:upto])
        values = torch.cat([state.sums.float(), bad.any().float()[None]]).tolist()
        if values[3]:
            first = int(bad.nonzero()[0, 0]) + 1
            where = (
                f"the last good checkpoint in {str(self.run_dir)!r} is left as it was"
                if (self.run_dir / LATEST).is_file()
                else "no checkpoint was written"
            )
            raise TrainingDivergedError(
                f"the loss became non-finite at epoch {state.epoch + 1}, batch {first}; "
                f"training stopped ({where}). Lower the learning rate (lr="
                f"{self.config.lr:g}) or check the data.",
                state.epoch + 1,
                first,
            )
        if bar is not None and not bar.disable:
            n = state.perm.shape[0]
            count = max(1, min(upto * self.config.batch_size, n)) / self.world
            bar.set_postfix(
                elbo=f"{values[0] / count:.2f}",
                recon=f"{values[1] / count:.2f}",
                kl=f"{values[2] / count:.2f}",
                refresh=False,
            )


@torch.no_grad()
def _validation_elbo(model: VAE, x: torch.Tensor, cfg: VAEConfig, seed: int) -> dict:
    """Mean ELBO terms of the validation images (one draw of z from ``seed``; the analytic
    KL where the prior has one, else the Monte Carlo KL)."""
    if x.shape[0] == 0:
        return {"val_elbo": None, "val_recon": None, "val_kl": None}
    model.eval()
    g = torch.Generator(device=x.device).manual_seed(seed)
    kl = "analytic" if model.analytic_kl else "mc"
    tot = torch.zeros(3, dtype=torch.float64, device=x.device)
    for chunk in x.split(1000):
        t = model._terms(chunk, num_samples=1, kl=kl, generator=g)
        tot += torch.stack([t.elbo.sum(), t.recon.sum(), t.kl.sum()]).double()
    model.train()
    v = (tot / x.shape[0]).tolist()
    return {"val_elbo": v[0], "val_recon": v[1], "val_kl": v[2]}


def train(
    config: VAEConfig, run_dir: str | os.PathLike, *, resume: bool = False, **kwargs
) -> TrainResult:
    """``Trainer(config, run_dir, **kwargs).fit(resume)``: train a VAE and return the result."""
    return Trainer(config, run_dir, **kwargs).fit(resume)
