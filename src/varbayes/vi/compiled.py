"""The SVI step for any model and guide, compiled as one graph (``svi.fit(..., compile=True)``).

For the guide's flat parameters λ and noise ε of shape (S, noise_dim),

    −ELBO(λ; ε) = −(1/S) Σ_s [log p(x, θ_s) − log q(θ_s | λ)],   θ_s = T(ε_s; λ)

(the IWAE bound −log (1/S) Σ_s w_s for ``estimator="iwae"``) is a pure function of
(λ, ε): :meth:`~varbayes.vi.guides.Guide.rsample_from_noise` under
``torch.func.functional_call``, the user's log joint, then
:func:`varbayes.vi.elbo.objective`. ``torch.func.grad_and_value`` gives its gradient and
value in one function, and ``torch.compile(fullgraph=True)`` turns that into one graph:
no autograd graph is recorded and no Python runs per operation at run time. ε is drawn
outside the graph from the run's generator, by the same call as the eager path's, so the
two follow the same trajectory to rounding.

With the default optimizer (``fit``'s own ``torch.optim.Adam``, no scheduler) Adam's
update goes into the same graph:

    t ← t + 1,  m ← β₁m + (1−β₁)g,  v ← β₂v + (1−β₂)g²,
    λ ← λ − (lr / (1−β₁ᵗ)) · m / (√v / √(1−β₂ᵗ) + ε),

written into the optimizer's own state tensors (``step``, ``exp_avg``, ``exp_avg_sq``),
so that its ``state_dict`` resumes the run eagerly or compiled alike; it equals torch's
fused Adam to rounding and halves a small model's step (48 against 109 µs on eight
schools). Any other optimizer, or a scheduler, steps eagerly on ``flat.grad``.

It serves the full batch, the pathwise and IWAE estimators and the guides of
:mod:`varbayes.vi.guides`; a model that cannot be traced as one graph (Python control flow
on tensor values, a call torch.compile does not support) is refused at set-up with the
compiler's reason.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from varbayes.vi.drawn import randn
from varbayes.vi.elbo import objective
from varbayes.vi.guides import Guide
from varbayes.vi.model import no_validation

__all__ = ["CompiledStep"]


class _FromNoise(nn.Module):
    """``guide.rsample_from_noise`` as a module's forward, for ``functional_call``."""

    def __init__(self, guide: Guide):
        super().__init__()
        self.guide = guide

    def forward(self, eps):
        return self.guide.rsample_from_noise(eps)


class CompiledStep:
    """The compiled SVI step of ``model`` and ``guide``: (λ, ε) ↦ ∇λ(−ELBO), −ELBO, and
    with ``adam_in_graph`` the default Adam's update of λ in the same graph.

    Raises ``ValueError`` naming what stands in the way: a guide that is not a
    :class:`~varbayes.vi.guides.Guide`, an estimator other than pathwise or IWAE,
    ``stl``, minibatches, or a model the compiler cannot trace as one graph.
    """

    def __init__(
        self,
        model: Callable[[torch.Tensor], torch.Tensor],
        guide: nn.Module,
        num_particles: int,
        optimizer: torch.optim.Optimizer,
        *,
        estimator: str | None = None,
        stl: bool = False,
        batch_size: int | None = None,
        adam_in_graph: bool = False,
    ):
        if not isinstance(guide, Guide):
            raise ValueError(
                "compile=True needs a varbayes.vi guide (MeanFieldNormal, FullRankNormal, "
                f"LowRankNormal); got {type(guide).__name__}"
            )
        estimator = "pathwise" if estimator is None else estimator
        if estimator not in ("pathwise", "iwae") or stl:
            raise ValueError(
                "compile=True needs estimator='pathwise' or 'iwae' without stl; got "
                f"estimator={estimator!r}, stl={stl}"
            )
        if batch_size is not None:
            raise ValueError(
                "compile=True compiles the full-batch ELBO; got batch_size="
                f"{batch_size} (minibatches run eagerly: pass compile=False)"
            )
        self.guide = guide
        self.shape = (num_particles, guide.noise_dim)
        self.adam_in_graph = adam_in_graph
        self._key = (model, guide, num_particles, estimator, stl, batch_size, adam_in_graph)
        self._flat = guide.flat.detach()  # λ's storage, updated in place by the graph
        adapter = _FromNoise(guide)

        def neg_elbo(flat, eps):
            theta, log_q = torch.func.functional_call(adapter, {"guide.flat": flat}, (eps,))
            return -objective(model(theta), log_q, estimator=estimator)

        grad_and_value = torch.func.grad_and_value(neg_elbo)

        def adam_step(flat, eps, m, v, t, lr, beta1, beta2, adam_eps):
            grad, neg = grad_and_value(flat, eps)
            t.add_(1)
            m.lerp_(grad, 1 - beta1)
            v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            tt = t.to(torch.float64)  # the bias corrections in double, as torch's Adam
            step_size = (lr / (1 - beta1**tt)).to(flat.dtype)
            bc2_sqrt = (1 - beta2**tt).sqrt().to(flat.dtype)
            flat.sub_(step_size * m / (v.sqrt() / bc2_sqrt + adam_eps))
            return neg

        # isolate_recompiles: every CompiledStep keeps its own dynamo cache (they all
        # compile the same code, and a shared cache would allow only 8 fits a process)
        self._fn = torch.compile(
            adam_step if adam_in_graph else grad_and_value,
            fullgraph=True,
            dynamic=False,
            isolate_recompiles=True,
        )
        self.check(optimizer)

    def _adam_state(self, optimizer) -> tuple:
        """(m, v, t, lr, β₁, β₂, ε): the default Adam's state tensors for λ (created as
        torch's Adam creates them, if it has not stepped yet) and its settings."""
        flat = self.guide.flat
        state = optimizer.state[flat]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32, device=flat.device)
            state["exp_avg"] = torch.zeros_like(flat, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(flat, memory_format=torch.preserve_format)
        group = optimizer.param_groups[0]
        beta1, beta2 = group["betas"]
        return (
            state["exp_avg"], state["exp_avg_sq"], state["step"],
            float(group["lr"]), float(beta1), float(beta2), float(group["eps"]),
        )  # fmt: skip

    def check(self, optimizer: torch.optim.Optimizer) -> None:
        """One call on zero noise with dynamo's guards evaluated, on copies of λ and of
        Adam's state (no side effect): compiles at set-up (so that a failure names the
        model there), and at the start of every later fit that reuses this step recompiles
        if the model or the settings changed in a way the guards see (a Python number it
        reads, a tensor's shape, the learning rate); the loop then skips the guards."""
        flat = self._flat.clone()
        args = (flat, flat.new_zeros(self.shape))
        if self.adam_in_graph:
            m, v, t, *settings = self._adam_state(optimizer)
            args += (m.clone(), v.clone(), t.clone(), *settings)
        try:
            with no_validation():
                self._fn(*args)
        except Exception as exc:  # the compiler's own exception types are private
            raise ValueError(
                "compile=True: the model could not be compiled as one graph "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                "pass compile=False"
            ) from exc

    def matches(
        self, model, guide, num_particles, *, estimator=None, stl=False, batch_size=None,
        adam_in_graph=False,
    ) -> bool:  # fmt: skip
        """Whether this is the compiled step of these very objects and settings."""
        estimator = "pathwise" if estimator is None else estimator
        m, g, *setting = self._key
        return (
            m is model
            and g is guide
            and setting == [num_particles, estimator, stl, batch_size, adam_in_graph]
        )

    def step(self, generator: torch.Generator | None, optimizer) -> torch.Tensor:
        """Draw ε and take one step: Adam in the graph, or ∇λ(−ELBO) into ``flat.grad``
        and ``optimizer.step()``. Returns the ELBO estimate."""
        flat = self._flat
        eps = randn(self.shape, generator, flat)
        if self.adam_in_graph:
            return -self._fn(flat, eps, *self._adam_state(optimizer))
        grad, neg = self._fn(flat, eps)
        self.guide.flat.grad = grad
        optimizer.step()
        return -neg
