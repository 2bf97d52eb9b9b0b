"""Adam's update as plain tensor arithmetic, for steps compiled as one graph.

``torch.optim.Adam`` cannot be traced into a ``torch.compile`` graph together with the
gradient it applies; the compiled steps (:mod:`varbayes.vi.compiled`,
:mod:`varbayes.vae.step`) write it out instead, on the optimizer's own state tensors, so
that its ``state_dict`` resumes a run eagerly or compiled alike. At step t ≥ 1, for a
parameter λ with gradient g,

    m ← β₁m + (1−β₁)g,   v ← β₂v + (1−β₂)g²,
    λ ← λ − (lr / (1−β₁ᵗ)) · m / (√v / √(1−β₂ᵗ) + ε),

the arithmetic of torch's Adam (``amsgrad=False``, no weight decay, not maximizing), to
rounding. The bias corrections are two scalars a step (:func:`bias_corrections`); where
λ is large they are best computed on the host and passed in as 0-d tensors, since inside
a graph inductor may evaluate β^t once per element of every fused kernel.
"""

from __future__ import annotations

import torch

__all__ = ["adam_state", "adam_update", "bias_corrections"]


def adam_state(optimizer: torch.optim.Optimizer, param: torch.Tensor) -> dict:
    """The optimizer's state of ``param`` (``step``, ``exp_avg``, ``exp_avg_sq``), created
    as torch's Adam creates it on its first step where it is still empty."""
    state = optimizer.state[param]
    if not state:
        state["step"] = torch.zeros((), dtype=torch.float32, device=param.device)
        state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
    return state


def bias_corrections(t, lr: float, beta1: float, beta2: float):
    """(lr / (1−β₁ᵗ), √(1−β₂ᵗ)) at step ``t`` (a number, or a float64 tensor in a graph)."""
    return lr / (1 - beta1**t), (1 - beta2**t) ** 0.5


def adam_update(
    param: torch.Tensor,
    grad: torch.Tensor,
    m: torch.Tensor,
    v: torch.Tensor,
    step_size,
    bc2_sqrt,
    beta1: float,
    beta2: float,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One Adam step out of place: the new (λ, m, v), with ``step_size`` = lr / (1−β₁ᵗ)
    and ``bc2_sqrt`` = √(1−β₂ᵗ) from :func:`bias_corrections`."""
    m = torch.lerp(m, grad, 1 - beta1)
    v = v * beta2 + (1 - beta2) * grad * grad
    return param - step_size * m / (v.sqrt() / bc2_sqrt + eps), m, v
