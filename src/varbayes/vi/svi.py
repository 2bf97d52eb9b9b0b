"""Stochastic variational inference: maximise ELBO(λ) by stochastic gradient ascent.

Each step draws S particles θ_s = T(ε_s; λ), estimates

    ELBO(λ) ≈ (1/S) Σ_s [ (N/B) Σ_{n∈B} log p(x_n | θ_s) + log p(θ_s) - log q(θ_s | λ) ]

on a minibatch B of the N data points (B = N for full batch; the factor N/B makes the
likelihood term unbiased), and takes one optimizer step on the loss -ELBO.

All the state of a run — step count, variational parameters, optimizer and scheduler
state, the random generator, the data order and the monitor's history — is kept in
one :class:`SVIState`, so ``fit(..., state=result.state)`` resumes a run exactly
(the same numbers as one longer run).

Per-step overhead is kept low: the ELBO values stay on the device and are copied to
the host every ``sync_every`` steps, and when the guide is a :class:`MeanFieldNormal`
and the model implements the protocol of :mod:`varbayes.vi.fastpath` (a hand-derived
∇_θ log p(x, θ)), the gradient with respect to λ is formed there, without building an
autograd graph (the same estimator as the autograd path, to rounding).
"""

from __future__ import annotations

import contextlib
import copy
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from varbayes._validation import check_int
from varbayes.cpu_cache import cached_cpu_allocations
from varbayes.monitor import (
    ConvergenceMonitor,
    ConvergenceWarning,
    MonitorState,
    NonFiniteObjectiveError,
)
from varbayes.vi import fastpath
from varbayes.vi.compiled import CompiledStep
from varbayes.vi.elbo import ESTIMATORS, elbo
from varbayes.vi.model import no_validation

__all__ = ["SVIState", "SVIResult", "fit"]


@dataclass
class SVIState:
    """Everything needed to continue a stochastic-VI run exactly.

    ``step`` steps taken; ``params`` the guide's ``state_dict``; ``optimizer`` and
    ``scheduler`` their ``state_dict`` s; ``rng`` the generator state; ``order`` and
    ``position`` the current epoch's permutation of the data and the next index in it
    (``None``/0 for full batch); ``monitor`` the ELBO history; ``best_params`` and
    ``best_elbo`` the parameters at the best window-mean ELBO seen so far; ``compiled``
    the compiled step of a ``compile=True`` run (reused on resume, never pickled).
    """

    step: int
    params: dict
    optimizer: dict
    scheduler: dict | None
    rng: torch.Tensor
    order: torch.Tensor | None = None
    position: int = 0
    monitor: MonitorState = field(default_factory=MonitorState)
    best_params: dict | None = None
    best_elbo: float = -math.inf
    # the compiled step of a compile=True run, reused when the same model and guide
    # resume from this state; not pickled (a state saved and loaded compiles afresh)
    compiled: CompiledStep | None = field(default=None, repr=False, compare=False)

    def __getstate__(self):
        return {**self.__dict__, "compiled": None}


@dataclass
class SVIResult:
    """What :func:`fit` returns.

    ``guide`` the fitted guide (trained in place); ``history`` the per-step ELBO
    estimates (a list of floats, all steps of all resumed calls); ``converged`` whether
    the smoothed relative change fell below the tolerance; ``state`` the
    :class:`SVIState` to resume from; ``message`` why the run stopped.
    """

    guide: nn.Module
    history: list[float]
    converged: bool
    state: SVIState
    message: str

    @property
    def elbo(self) -> float:
        """Mean of the last (up to) 100 per-step ELBO estimates."""
        tail = self.history[-100:]
        return sum(tail) / len(tail) if tail else -math.inf


def fit(
    model: Callable[[torch.Tensor], torch.Tensor],
    guide: nn.Module,
    *,
    num_steps: int = 1000,
    num_particles: int = 1,
    estimator: str | None = None,
    stl: bool = False,
    optimizer: torch.optim.Optimizer | Callable | None = None,
    lr: float = 0.01,
    scheduler: Callable | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    generator: torch.Generator | None = None,
    tol: float = 0.0,
    rtol: float = 1e-4,
    window: int = 100,
    sync_every: int | None = None,
    on_nonfinite: str = "raise",
    verbose: bool = False,
    state: SVIState | None = None,
    fast: bool | None = None,
    compile: bool = False,
) -> SVIResult:
    """Fit q(θ | λ) = ``guide()`` to p(θ | x) ∝ exp(``model(θ)``) by stochastic VI.

    Parameters
    ----------
    model : callable
        The log joint ``model(theta) -> (S,)`` for ``theta`` of shape ``(S, D)``; for
        minibatches a :class:`varbayes.vi.models.LogJoint` (it has ``subsample``).
    guide : nn.Module
        Returns q(θ | λ) (a torch Distribution); see :mod:`varbayes.vi.guides`.
    num_steps : int
        Maximum number of optimizer steps in this call.
    num_particles, estimator, stl
        As in :func:`varbayes.vi.elbo.elbo`.
    optimizer : torch.optim.Optimizer, callable or None
        An optimizer over ``guide.parameters()``, or ``optimizer(params) -> Optimizer``
        (e.g. ``functools.partial(torch.optim.SGD, lr=0.1)``); default Adam(lr).
    lr : float
        Learning rate of the default Adam.
    scheduler : callable, optional
        ``scheduler(optimizer) -> LRScheduler``, stepped after every optimizer step.
    batch_size : int, optional
        B, the minibatch size (1 ≤ B ≤ N); rows drawn without replacement within an epoch.
    seed, generator
        The random stream for ε and minibatches: ``generator`` if given, else a new one
        seeded with ``seed``. The same seed gives the same run.
    tol, rtol, window
        Stop when the ELBO has no upward trend: a least-squares line through the last
        4·``window`` per-step values, its slope bounded above by slope + 2 se, would gain
        at most max(``tol``, ``rtol``·|ELBO|) over one more window. (Two consecutive
        window means, the rule before, declared convergence inside a slow climb.)
        ``tol=0, rtol=0`` runs all ``num_steps`` (no warning then).
    sync_every : int, optional
        Copy the ELBO values to the host every this many steps (default ``window``).
    on_nonfinite : {"raise", "stop"}
        When the ELBO or the parameters become NaN/inf, the guide is restored to the
        better of the best-window and the initial parameters, each re-scored by a fresh
        64-draw ELBO (never left non-finite); then ``"raise"`` raises
        :class:`NonFiniteObjectiveError` (naming the step) and ``"stop"`` warns and
        returns the result.
    verbose : bool
        Show a progress bar.
    state : SVIState, optional
        Resume from ``result.state`` of an earlier call (same model, guide and optimizer
        settings).
    fast : bool, optional
        Use the hand-derived gradient path (mean-field Normal guide on the real line,
        pathwise estimator, a model with ``value_and_grad``). None: when available.
    compile : bool
        Compile the gradient. On the fast path: its hand-derived gradient. Otherwise
        (any model, a guide of :mod:`varbayes.vi.guides`, full batch, pathwise or IWAE
        estimator): the whole ELBO and its gradient as one ``torch.compile`` graph
        (:mod:`varbayes.vi.compiled`). With the default optimizer its Adam update goes in
        the same graph (its state stays the optimizer's, so ``state`` resumes either
        way) and ``sync_every`` steps run as one compiled ``torch.while_loop`` call (a
        few, where their noise would pass ``varbayes.vi.compiled.NOISE_BYTES``);
        another optimizer or a scheduler steps eagerly, one step a call. The same steps
        as eager to rounding, a divergence reported at the same step. The first call
        compiles (seconds); a resumed call reuses it (``state.compiled``); a model that
        cannot be traced as one graph is refused with ``ValueError``. The loop runs on
        torch's thread count at compilation: on a 2-core VM, ``torch.set_num_threads(1)``
        before ``fit`` ran the posteriordb models 1.0-1.2x faster, and preloading
        tcmalloc or jemalloc (``LD_PRELOAD``) 1.15-1.6x faster (BENCHMARKS.md).

    The default optimizer is ``torch.optim.Adam(lr, fused=True)``; every step writes
    ∇λ(-ELBO) into ``.grad`` (hand-derived on the fast path, by autograd otherwise) and
    calls the optimizer's public ``step``. torch.distributions argument checks are off
    inside the loop (the model and guide are checked once before it).

    Returns
    -------
    SVIResult
    """
    num_steps = check_int(num_steps, "num_steps", minimum=1)
    num_particles = check_int(num_particles, "num_particles", minimum=1)
    window = check_int(window, "window", minimum=1)
    sync_every = window if sync_every is None else check_int(sync_every, "sync_every", minimum=1)
    if not isinstance(guide, nn.Module):
        raise TypeError(f"guide must be an nn.Module returning a Distribution; got {guide!r}")
    if estimator is not None and estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}; got {estimator!r}")
    if on_nonfinite not in ("raise", "stop"):
        raise ValueError(f"on_nonfinite must be 'raise' or 'stop'; got {on_nonfinite!r}")
    params = [p for p in guide.parameters() if p.requires_grad]
    if not params:
        raise ValueError("guide has no trainable parameters")
    device = params[0].device

    num_data = 0
    if batch_size is not None:
        if not hasattr(model, "subsample"):
            raise TypeError(
                "batch_size needs a model with subsample(index) (a varbayes.vi.models.LogJoint); "
                f"got {type(model).__name__}"
            )
        num_data = model.num_data
        batch_size = check_int(batch_size, "batch_size", minimum=1)
        if batch_size > num_data:
            raise ValueError(
                f"batch_size must be <= the number of data points N={num_data}; got {batch_size}"
            )
    opt = _make_optimizer(optimizer, params, lr)
    sched = scheduler(opt) if scheduler is not None else None
    if generator is None:
        generator = torch.Generator(device=device).manual_seed(check_int(seed, "seed"))

    # Check model and guide against each other once, with a throw-away random stream.
    with torch.no_grad():
        elbo(
            model,
            guide,
            max(num_particles, 2),
            estimator=estimator if estimator != "score" else None,
            generator=torch.Generator(device=device).manual_seed(0),
        )

    order, position = None, 0
    best_params = copy.deepcopy(guide.state_dict())
    best_elbo = -math.inf
    # the monitor keeps the history and catches non-finite values; convergence is decided
    # here by the trend test (_no_trend), not by two consecutive windows
    monitor = ConvergenceMonitor(
        0.0, num_steps, rtol=0.0, window=window, verbose=verbose, name="ELBO"
    )
    if state is not None:
        guide.load_state_dict(state.params)
        opt.load_state_dict(state.optimizer)
        if sched is not None and state.scheduler is not None:
            sched.load_state_dict(state.scheduler)
        generator.set_state(state.rng)
        order, position = state.order, state.position
        monitor.state = state.monitor.copy()
        monitor.state.converged = False
        monitor.max_iter = len(monitor.state.history) + num_steps
        best_params = copy.deepcopy(state.best_params)
        best_elbo = state.best_elbo
    start = len(monitor.state.history)

    use_fast = fastpath.available(model, guide, estimator) if fast is None else fast
    if use_fast and not fastpath.available(model, guide, estimator):
        raise ValueError(
            "fast=True needs a MeanFieldNormal guide on the real line, the pathwise "
            "estimator and a model with value_and_grad"
        )
    grad_fn = fastpath.meanfield_grad
    if use_fast and compile:
        grad_fn = torch.compile(grad_fn, dynamic=False)
    full_inputs = model.grad_inputs() if use_fast else None
    compiled = None
    if compile and not use_fast:  # the ELBO, its gradient (and fit's own Adam) as one graph
        setting = dict(
            estimator=estimator, stl=stl, batch_size=batch_size,
            adam_in_graph=optimizer is None and scheduler is None, chunk=sync_every,
        )  # fmt: skip
        compiled = state.compiled if state is not None else None
        if compiled is not None and compiled.matches(model, guide, num_particles, **setting):
            compiled.check(opt)  # with guards: the model may have changed since
        else:
            compiled = CompiledStep(model, guide, num_particles, opt, **setting)

    def next_batch():
        nonlocal order, position
        if batch_size is None:
            return model
        if order is None or position + batch_size > num_data:
            order = torch.randperm(num_data, generator=generator, device=device)
            position = 0
        idx = order[position : position + batch_size]
        position += batch_size
        return model.subsample(idx)

    def step():
        """One step: ∇λ(-ELBO) into ``.grad`` (hand-derived or autograd), then the optimizer;
        or the compiled step (which may hold the optimizer's update too)."""
        m = next_batch()
        if compiled is not None:
            value = compiled.step(generator, opt)
        elif use_fast:
            flat = guide.flat
            noise = torch.randn(
                (num_particles, flat.shape[0] // 2),
                generator=generator,
                dtype=flat.dtype,
                device=device,
            )
            inputs = full_inputs if m is model else m.grad_inputs()
            value, grad = grad_fn(m.value_and_grad_at, flat.detach(), noise, stl, m.scale, *inputs)
            flat.grad = grad
            opt.step()
        else:
            opt.zero_grad(set_to_none=True)
            e = elbo(
                m,
                guide,
                num_particles,
                estimator=estimator,
                stl=stl,
                generator=generator,
                validate=False,
            )
            (-e).backward()
            value = e.detach()
            opt.step()
        if sched is not None:
            sched.step()
        return value

    stop, converged, message = False, False, ""
    n = start
    end = start + num_steps
    initial_params = copy.deepcopy(guide.state_dict())
    try:
        # inputs were checked once above: no torch.distributions argument checks per step
        # (a NaN parameter then shows up as a NaN ELBO, caught by the monitor); the
        # compiled step was compiled for these very shapes, so dynamo's guard checks
        # (about half of a small step's time) are skipped; on a CPU its buffers come from
        # a caching allocator (varbayes.cpu_cache: 1.2-1.5x the steps/s, same numbers)
        skip_guards = (
            torch.compiler.set_stance("default", skip_guard_eval_unsafe=True)
            if compiled is not None
            else contextlib.nullcontext()
        )
        cache = (
            cached_cpu_allocations()
            if compiled is not None and guide.flat.device.type == "cpu"
            else contextlib.nullcontext()
        )
        with no_validation(), skip_guards, cache:
            while not stop and n < end:
                chunk_end = min(end, (n // sync_every + 1) * sync_every)
                # the chunk in calls of the compiled loop where it can (None: the rest
                # step by step); values: (steps,) tensors of ELBO estimates
                values, done = [], 0
                while compiled is not None and done < chunk_end - n:
                    k = min(chunk_end - n - done, compiled.steps_per_call)
                    part = compiled.steps(generator, opt, k)
                    if part is None:
                        break
                    values.append(part)
                    done += k
                checked = done  # steps whose λ the compiled loop found finite
                try:
                    for _ in range(chunk_end - n - done):
                        values.append(step().reshape(1))
                        done += 1
                except (ValueError, RuntimeError) as exc:
                    # an earlier non-finite step of this chunk is reported first (the
                    # monitor raises); then non-finite parameters are the divergence
                    for v in torch.cat(values).tolist() if values else []:
                        monitor.update(v)
                    if not _finite(guide):
                        at = n + done + 1
                        raise NonFiniteObjectiveError(
                            f"the guide's parameters became non-finite at step {at} ({exc}).", at
                        ) from exc
                    raise
                host = torch.cat(values).tolist()
                n = chunk_end
                stop = monitor.extend(host)
                if (tol > 0 or rtol > 0) and _no_trend(monitor.history, window, tol, rtol):
                    monitor.state.converged = stop = True
                # a finite ELBO but a NaN gradient: caught here (a compiled call has
                # checked its own λ)
                if done > checked and not _finite(guide):
                    raise NonFiniteObjectiveError(
                        f"the guide's parameters became non-finite by step {n}.", n
                    )
                chunk_mean = sum(host) / len(host)
                if chunk_mean > best_elbo:
                    best_elbo = chunk_mean
                    best_params = copy.deepcopy(guide.state_dict())
        converged = monitor.converged
        message = f"converged at step {n}" if converged else f"stopped at max steps ({n})"
        if compiled is not None and compiled.loop_error:  # slower, not wrong: said here
            message += (
                "; compiled one step a call (the chunked loop did not compile: "
                f"{compiled.loop_error}; a vi.Model with its tensors in data avoids the "
                "commonest cause, see varbayes.vi.compiled)"
            )
        if (tol > 0 or rtol > 0) and not converged:
            warnings.warn(
                f"ELBO did not converge in {n} steps: its trend over the last {4 * window} "
                f"steps may still gain more than max(tol, rtol·|ELBO|) per {window} steps; "
                "increase num_steps, or raise tol/rtol",
                ConvergenceWarning,
                stacklevel=2,
            )
    except NonFiniteObjectiveError as exc:
        which, value = _restore(model, guide, estimator, best_params, initial_params)
        message = (
            f"{exc} The guide was restored to the {which} "
            f"(ELBO re-estimated with 64 fresh draws: {value:.6g})."
        )
        if on_nonfinite == "raise":
            raise NonFiniteObjectiveError(message, exc.step) from exc
        warnings.warn(message, RuntimeWarning, stacklevel=2)
    finally:
        monitor.close()

    new_state = SVIState(
        step=n,
        params=copy.deepcopy(guide.state_dict()),
        optimizer=copy.deepcopy(opt.state_dict()),
        scheduler=copy.deepcopy(sched.state_dict()) if sched is not None else None,
        rng=generator.get_state(),
        order=order,
        position=position,
        monitor=monitor.state.copy(),
        best_params=best_params,
        best_elbo=best_elbo,
        compiled=compiled,
    )
    return SVIResult(guide, list(monitor.history), converged, new_state, message)


def _no_trend(history, window, tol, rtol) -> bool:
    """The stopping rule: over the last 4·window steps, fit the ELBO values by a line
    (least squares) and bound the gain over one more window by (slope + 2·se)·window;
    converged when that bound is ≤ max(tol, rtol·|mean ELBO of the last window|).

    A slow steady climb hidden in the noise of two consecutive window means (which made
    the old rule stop 46 sds from the optimum) shows up as a significant slope."""
    n = 4 * window
    if len(history) < n:
        return False
    y = torch.tensor(history[-n:], dtype=torch.float64)
    t = torch.arange(n, dtype=torch.float64)
    t = t - t.mean()
    slope = float((t * (y - y.mean())).sum() / (t * t).sum())
    resid = y - y.mean() - slope * t
    se = float((resid.pow(2).sum() / (n - 2) / (t * t).sum()).sqrt())
    return (slope + 2 * se) * window <= max(tol, rtol * abs(float(y[-window:].mean())))


def _finite(guide) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in guide.parameters())


@torch.no_grad()
def _restore(model, guide, estimator, best_params, initial_params):
    """Load the better of the best-window and the initial parameters, each judged by a
    fresh 64-draw ELBO (a window mean can be bogus just before a divergence); returns
    (which, its ELBO). The guide is never left with non-finite parameters."""
    scored = []
    for which, params in (
        ("best parameters seen", best_params),
        ("initial parameters", initial_params),
    ):
        guide.load_state_dict(params)
        if not _finite(guide):
            continue
        try:
            with no_validation():
                value = float(
                    elbo(
                        model,
                        guide,
                        64,
                        estimator=None if estimator == "score" else estimator,
                        generator=torch.Generator(
                            device=guide.flat.device if hasattr(guide, "flat") else "cpu"
                        ).manual_seed(0),
                        validate=False,
                    )
                )
        except (ValueError, RuntimeError):
            value = -math.inf
        scored.append((value if math.isfinite(value) else -math.inf, which, params))
    value, which, params = max(scored, key=lambda t: t[0])
    guide.load_state_dict(params)
    return which, value


def _make_optimizer(optimizer, params, lr) -> torch.optim.Optimizer:
    if optimizer is None:
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be a finite number > 0; got {lr!r}")
        # fused=True: torch's one-kernel Adam update (public API; CPU and CUDA)
        fused = all(p.device.type in ("cpu", "cuda") for p in params)
        return torch.optim.Adam(params, lr=lr, fused=fused)
    if isinstance(optimizer, torch.optim.Optimizer):
        owned = {id(p) for g in optimizer.param_groups for p in g["params"]}
        if not all(id(p) in owned for p in params):
            raise ValueError("optimizer must hold the guide's parameters (guide.parameters())")
        return optimizer
    if callable(optimizer):
        opt = optimizer(params)
        if not isinstance(opt, torch.optim.Optimizer):
            raise TypeError(
                f"optimizer(params) must return a torch.optim.Optimizer; got {type(opt).__name__}"
            )
        return opt
    raise TypeError(
        f"optimizer must be a torch.optim.Optimizer or a callable; got {type(optimizer).__name__}"
    )
