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
and the model supplies ``value_and_grad`` (its hand-derived ∇_θ log p(x, θ)), the
gradient with respect to λ = (μ, ρ) is formed directly,

    ∇_μ ELBO = mean_s g_s,      ∇_ρ ELBO = mean_s (g_s ⊙ σ ⊙ ε_s) + 1,   g_s = ∇_θ log p(x, θ_s),

without building an autograd graph (the same estimator as the autograd path, to
rounding).
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from varbayes._validation import check_int
from varbayes.monitor import ConvergenceMonitor, MonitorState, NonFiniteObjectiveError
from varbayes.vi.elbo import ESTIMATORS, elbo
from varbayes.vi.guides import MeanFieldNormal

__all__ = ["SVIState", "SVIResult", "fit"]

_LOG_2PI = math.log(2 * math.pi)


@dataclass
class SVIState:
    """Everything needed to continue a stochastic-VI run exactly.

    ``step`` steps taken; ``params`` the guide's ``state_dict``; ``optimizer`` and
    ``scheduler`` their ``state_dict`` s; ``rng`` the generator state; ``order`` and
    ``position`` the current epoch's permutation of the data and the next index in it
    (``None``/0 for full batch); ``monitor`` the ELBO history; ``best_params`` and
    ``best_elbo`` the parameters at the best window-mean ELBO seen so far.
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
        Stop when the mean ELBO of the last ``window`` steps changes from the previous
        window by less than ``tol`` or ``rtol · |ELBO|`` (see :class:`ConvergenceMonitor`);
        the default rtol=1e-4 stops once the trend is below the Monte Carlo noise of a
        100-step mean. ``tol=0, rtol=0`` runs all ``num_steps`` (no warning then).
    sync_every : int, optional
        Copy the ELBO values to the host every this many steps (default ``window``).
    on_nonfinite : {"raise", "stop"}
        When the ELBO becomes NaN/inf the guide is restored to the best parameters seen;
        then ``"raise"`` re-raises :class:`NonFiniteObjectiveError` (naming the step) and
        ``"stop"`` warns and returns the result.
    verbose : bool
        Show a progress bar.
    state : SVIState, optional
        Resume from ``result.state`` of an earlier call (same model, guide and optimizer
        settings).
    fast : bool, optional
        Use the hand-derived gradient path (mean-field Normal guide on the real line,
        pathwise estimator, a model with ``value_and_grad``). None: when available.
    compile : bool
        Wrap the fast step's gradient computation in ``torch.compile``.

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
    monitor = ConvergenceMonitor(
        tol, num_steps, rtol=rtol, window=window, verbose=verbose, name="ELBO"
    )
    if state is not None:
        guide.load_state_dict(state.params)
        opt.load_state_dict(state.optimizer)
        if sched is not None and state.scheduler is not None:
            sched.load_state_dict(state.scheduler)
        generator.set_state(state.rng)
        order, position = state.order, state.position
        monitor.state = copy.deepcopy(state.monitor)
        monitor.state.converged = False
        monitor.max_iter = len(monitor.state.history) + num_steps
        best_params = copy.deepcopy(state.best_params)
        best_elbo = state.best_elbo
    start = len(monitor.state.history)

    use_fast = _fast_available(model, guide, estimator) if fast is None else fast
    if use_fast and not _fast_available(model, guide, estimator):
        raise ValueError(
            "fast=True needs a MeanFieldNormal guide on the real line, the pathwise "
            "estimator and a model with value_and_grad"
        )
    fused = use_fast and _plain_adam(opt)
    step_fn = _fused_meanfield_adam_step if fused else _meanfield_grad
    if use_fast and compile:
        step_fn = torch.compile(step_fn, dynamic=False)
    if fused:
        flat = guide.flat
        adam = opt.state[flat]
        if not adam:
            adam["step"] = torch.tensor(0.0, dtype=torch.float32)
            adam["exp_avg"] = torch.zeros_like(flat, memory_format=torch.preserve_format)
            adam["exp_avg_sq"] = torch.zeros_like(flat, memory_format=torch.preserve_format)
        group = opt.param_groups[0]
        lr_t = torch.tensor(float(group["lr"]), dtype=torch.float64, device=device)
        t_t = torch.tensor(0.0, dtype=torch.float64, device=device)
        adam_t = [int(adam["step"])]  # Python copy of Adam's step count (one sync, here)
        # The fused step updates the parameters itself; tell an LR scheduler that the
        # optimizer did step (torch sets this flag in its step wrapper).
        opt._opt_called = True
    full_inputs = model.grad_inputs() if use_fast else None
    lean = None
    if fused and not compile and num_particles == 1 and device.type == "cpu" and _FUSED_ADAM:
        lean = _LeanStep(model, guide.flat.detach(), adam, group, stl)

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
        m = next_batch()
        if lean is not None:
            value = lean(generator, m.scale, full_inputs if m is model else m.grad_inputs())
            adam_t[0] += 1
            if sched is not None:
                sched.step()
            return value
        if use_fast:
            flat = guide.flat
            noise = torch.randn(
                (num_particles, flat.shape[0] // 2),
                generator=generator,
                dtype=flat.dtype,
                device=device,
            )
            inputs = full_inputs if m is model else m.grad_inputs()
            if fused:
                b1, b2 = group["betas"]
                adam_t[0] += 1
                if compile:  # scalars as tensors: no recompilation when they change
                    lr_t.fill_(float(group["lr"]))
                    t_t.fill_(adam_t[0])
                    lr_arg, t_arg = lr_t, t_t
                else:
                    lr_arg, t_arg = float(group["lr"]), adam_t[0]
                with torch.no_grad():
                    value = step_fn(
                        model._value_and_grad_impl,
                        flat.detach(),
                        adam["exp_avg"],
                        adam["exp_avg_sq"],
                        adam["step"],
                        t_arg,
                        lr_arg,
                        b1,
                        b2,
                        group["eps"],
                        noise,
                        stl,
                        m.scale,
                        *inputs,
                    )
                if sched is not None:
                    sched.step()
                return value
            value, grad = step_fn(
                model._value_and_grad_impl, flat.detach(), noise, stl, m.scale, *inputs
            )
            guide.flat.grad = grad
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
    try:
        while not stop and n < end:
            chunk_end = min(end, (n // sync_every + 1) * sync_every)
            values = []
            try:
                for _ in range(chunk_end - n):
                    values.append(step())
            except (ValueError, RuntimeError):
                # NaN parameters make torch.distributions raise; if an earlier step of this
                # chunk was already non-finite, report that step (the monitor raises).
                for v in torch.stack(values).tolist() if values else []:
                    monitor.update(v)
                raise
            host = torch.stack(values).tolist()
            n = chunk_end
            for v in host:
                if monitor.update(v):
                    stop = True
                    break
            chunk_mean = sum(host) / len(host)
            if chunk_mean > best_elbo:
                best_elbo = chunk_mean
                best_params = copy.deepcopy(guide.state_dict())
        converged = monitor.converged
        message = f"converged at step {n}" if converged else f"stopped at max steps ({n})"
        if tol > 0 or rtol > 0:
            monitor.warn_if_not_converged("increase num_steps, or raise tol/rtol")
    except NonFiniteObjectiveError as exc:
        guide.load_state_dict(best_params)
        message = (
            f"{exc} The guide was restored to the best parameters seen "
            f"(window-mean ELBO {best_elbo:.6g})."
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
        monitor=copy.deepcopy(monitor.state),
        best_params=best_params,
        best_elbo=best_elbo,
    )
    return SVIResult(guide, list(monitor.history), converged, new_state, message)


def _make_optimizer(optimizer, params, lr) -> torch.optim.Optimizer:
    if optimizer is None:
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be a finite number > 0; got {lr!r}")
        return torch.optim.Adam(params, lr=lr)
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


def _fast_available(model, guide, estimator) -> bool:
    if type(guide) is not MeanFieldNormal or guide.transform is not None:
        return False
    if estimator not in (None, "pathwise"):
        return False
    if not hasattr(model, "value_and_grad"):
        return False
    probe = guide.loc.detach()[None]
    return hasattr(model, "grad_inputs") and model.value_and_grad(probe) is not None


def _plain_adam(opt) -> bool:
    """An Adam the fused step reproduces: one parameter, no weight decay/amsgrad/maximize."""
    if type(opt) is not torch.optim.Adam or len(opt.param_groups) != 1:
        return False
    g = opt.param_groups[0]
    return (
        len(g["params"]) == 1
        and g["weight_decay"] == 0
        and not g["amsgrad"]
        and not g["maximize"]
        and not g.get("differentiable", False)
        and not g.get("capturable", False)
        and not isinstance(g["lr"], torch.Tensor)
    )


def _meanfield_grad(value_and_grad, flat, noise, stl, scale, *inputs):
    """ELBO estimate and the gradient of the LOSS (-ELBO) w.r.t. flat = [μ, ρ].

    θ_s = μ + σ ⊙ ε_s, σ = exp(ρ); -log q(θ_s) = Σρ + ½|ε_s|² + (D/2) log 2π, so
    ∇_μ ELBO = mean g, ∇_ρ ELBO = mean(g ⊙ σ ⊙ ε) + 1, g = ∇_θ log p(x, θ_s)
    (with STL, -log q is differentiated with λ fixed: g + ε/σ in place of g and no +1).
    ``noise`` is ε, shape (S, D); ``value_and_grad(theta, scale, *inputs)`` the model's.
    """
    value, g_mu, g_rho = _meanfield_ascent(value_and_grad, flat, noise, stl, scale, *inputs)
    return value, -torch.cat([g_mu, g_rho])


def _meanfield_ascent(value_and_grad, flat, noise, stl, scale, *inputs):
    """(ELBO estimate, ∇_μ ELBO, ∇_ρ ELBO) for the mean-field Normal; see _meanfield_grad."""
    d = flat.shape[0] // 2
    loc, log_scale = flat[:d], flat[d:]
    sigma = log_scale.exp()
    theta = torch.addcmul(loc, sigma, noise)
    log_p, g = value_and_grad(theta, scale, *inputs)
    if stl:
        g = g + noise / sigma
    if noise.shape[0] == 1:  # one particle: no means over particles (fewer kernels)
        noise0, g0 = noise[0], g[0]
        value = log_p[0].add(log_scale.sum()).add_(torch.dot(noise0, noise0), alpha=0.5)
        g_rho = (g0 * noise0).mul_(sigma)
        return value.add_(0.5 * d * _LOG_2PI), g0, g_rho if stl else g_rho.add_(1.0)
    neg_log_q = log_scale.sum() + 0.5 * (noise * noise).sum(-1) + 0.5 * d * _LOG_2PI
    value = (log_p + neg_log_q).mean()
    g_rho = (g * noise).mean(0) * sigma
    return value, g.mean(0), g_rho if stl else g_rho + 1.0


_FUSED_ADAM = getattr(torch, "_fused_adam_", None)  # torch's fused Adam kernel (torch >= 2.4)


def _fused_adam_ascent(flat, ascent, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps):
    """torch's fused CPU Adam kernel on ``flat`` (``step`` already incremented): one call
    in place of ~9 element-wise kernels. ``maximize=True``: it steps along ``ascent`` =
    +∇λ ELBO, i.e. down the loss -ELBO, with the same state torch's Adam keeps."""
    _FUSED_ADAM(
        [flat], [ascent], [exp_avg], [exp_avg_sq], [], [step], lr=lr, beta1=beta1,
        beta2=beta2, weight_decay=0.0, eps=eps, amsgrad=False, maximize=True,
    )  # fmt: skip


class _LeanStep:
    """The eager CPU one-particle form of :func:`_fused_meanfield_adam_step`: the same
    arithmetic and random draws, on buffers allocated once, so that a step is ~20 kernel
    calls and little Python (the step of a small model is bound by call overhead)."""

    def __init__(self, model, flat, adam, group, stl):
        d = flat.shape[0] // 2
        self.model, self.flat, self.adam, self.group, self.stl = model, flat, adam, group, stl
        self.one = getattr(model, "_value_and_grad_one", None)  # (θ (D,)) -> (0-d, (D,))
        self.loc, self.log_scale = flat[:d], flat[d:]
        self.grad = torch.empty_like(flat)
        self.g_mu, self.g_rho = self.grad[:d], self.grad[d:]
        self.noise, self.sigma = flat.new_empty(d), flat.new_empty(d)
        self.theta = flat.new_empty((1, d))
        self.theta0 = self.theta[0]
        self.const = 0.5 * d * _LOG_2PI

    def __call__(self, generator, scale, inputs):
        noise, sigma, g_rho = self.noise, self.sigma, self.g_rho
        torch.randn(noise.shape, generator=generator, out=noise)
        torch.exp(self.log_scale, out=sigma)
        torch.addcmul(self.loc, sigma, noise, out=self.theta0)
        g_mu = self.g_mu
        if self.one is not None and scale != 0:
            log_p, _ = self.one(self.theta0, scale, *inputs, out=g_mu)
        else:
            log_p, g = self.model._value_and_grad_impl(self.theta, scale, *inputs)
            log_p = log_p[0]
            g_mu.copy_(g[0])
        if self.stl:  # -log q differentiated with λ fixed: g + ε/σ, and no +1 for ρ
            g_mu.addcdiv_(noise, sigma)
        torch.mul(g_mu, noise, out=g_rho).mul_(sigma)
        if not self.stl:
            g_rho.add_(1.0)
        value = log_p.add(self.log_scale.sum()).add_(torch.dot(noise, noise), alpha=0.5)
        group, adam = self.group, self.adam
        b1, b2 = group["betas"]
        adam["step"].add_(1)
        _fused_adam_ascent(
            self.flat, self.grad, adam["exp_avg"], adam["exp_avg_sq"], adam["step"],
            float(group["lr"]), b1, b2, group["eps"],
        )  # fmt: skip
        return value.add_(self.const)


def _fused_meanfield_adam_step(
    value_and_grad,
    flat,
    exp_avg,
    exp_avg_sq,
    step,
    t,
    lr,
    beta1,
    beta2,
    adam_eps,
    noise,
    stl,
    scale,
    *inputs,
):
    """One mean-field SVI step with torch's Adam update, in place on ``flat`` and the Adam
    state: torch's fused Adam kernel on CPU when eager, else written out (few kernels;
    ``torch.compile`` fuses them further):

        m ← β₁m + (1-β₁)g,  v ← β₂v + (1-β₂)g²,  t ← t + 1,
        λ ← λ - lr/(1-β₁ᵗ) · m / (√v/√(1-β₂ᵗ) + ε),      g = ∇λ(-ELBO).

    ``t`` is the new step count and ``lr`` the learning rate (Python numbers when eager,
    0-d float64 tensors when compiled). Returns the ELBO estimate (0-d tensor; no sync).
    """
    value, g_mu, g_rho = _meanfield_ascent(value_and_grad, flat, noise, stl, scale, *inputs)
    step.add_(1)
    if not isinstance(t, torch.Tensor) and flat.device.type == "cpu" and _FUSED_ADAM is not None:
        ascent = torch.cat([g_mu, g_rho])
        _fused_adam_ascent(flat, ascent, exp_avg, exp_avg_sq, step, lr, beta1, beta2, adam_eps)
        return value
    grad = torch.cat([g_mu, g_rho]).neg_()
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    bias1 = 1 - beta1**t
    bias2_sqrt = (1 - beta2**t) ** 0.5
    if isinstance(t, torch.Tensor):
        bias1, bias2_sqrt = bias1.to(flat.dtype), bias2_sqrt.to(flat.dtype)
    denom = (exp_avg_sq.sqrt() / bias2_sqrt).add_(adam_eps)
    flat.sub_(exp_avg.div(denom).mul_(lr / bias1))
    return value
