"""The whole VAE training step as one compiled graph: ``Trainer(compile="step")``.

The eager step (:meth:`varbayes.vae.train.Trainer._train_batch`) runs the loss, then
``backward()``, then torch's fused Adam: three passes over the weights with a Python
boundary between each. Here one ``torch.compile(fullgraph=True)`` graph holds all three:

    (g, (loss, sums)) = ∇_λ [−ELBO_b(λ)]     (``torch.func.grad_and_value`` of the model's
                                              forward under ``torch.func.functional_call``)
    m ← β₁m + (1−β₁)g,  v ← β₂v + (1−β₂)g²,
    λ ← λ − (lr / (1−β₁ᵗ)) · m / (√v / √(1−β₂ᵗ) + ε)      (:func:`varbayes.adam.adam_update`)

with λ, m and v updated in place: λ in the model's own parameters, m and v in the
optimizer's own ``exp_avg`` / ``exp_avg_sq`` tensors, so that the optimizer's
``state_dict`` (and a checkpoint) is the one the eager path writes, and a run may be
resumed eagerly or compiled alike. The update equals torch's Adam to rounding; Adam's
step count t is kept on the host and written into the optimizer's ``step`` tensors by
:meth:`CompiledStep.sync_optimizer` (before each checkpoint).

What varies between steps enters as tensors: the batch x (B, D), the noise ε (S, B,
noise_dim), and three scalars [β_t, lr/(1−β₁ᵗ), √(1−β₂ᵗ)] computed on the host (inside
a graph inductor would evaluate β^t once per element of each fused kernel). The batch
gather, the binarization and ε stay outside the graph, drawn from the trainer's
generators, so the compiled run draws the eager run's random numbers. Each batch size
compiles once (``dynamic=False``): a full batch and the last, smaller one. Once a batch
shape has been compiled, its calls evaluate only the guards that tell the compiled graphs
apart (the input shapes: ``torch.compiler.set_stance(skip_guard_eval_unsafe=True)``),
which saves 0.2-0.3 ms of the 300 guards a step; everything else the guards would check
(the model's modules and attributes, the contexts) is fixed when the step is built, so a
callback must not replace the model's modules or parameters during a compiled-step run.

Precision: under ``"bf16-mixed"`` the autocast context is entered inside the traced
function (it is traced into the graph); under ``"bf16-matmul"`` the oneDNN setting is
a process-wide flag read by the products at run time, so it goes around the call.
"""

from __future__ import annotations

import contextlib

import torch
from torch.func import functional_call, grad_and_value

from varbayes.adam import adam_state, adam_update, bias_corrections

__all__ = ["CompiledStep"]


class CompiledStep:
    """``step(x, eps, beta, t)``: one Adam step of ``model`` on −``objective`` of batch
    ``x`` with noise ``eps`` at KL weight ``beta``, as Adam's ``t``-th step (t ≥ 1);
    returns ``(loss, sums)`` as :meth:`varbayes.vae.model.VAE.objective` does.

    Parameters
    ----------
    model : the VAE (its parameters are updated in place).
    optimizer : a ``torch.optim.Adam`` over ``model.parameters()`` (one parameter group,
        no weight decay, amsgrad or maximize); its state is created here where empty.
    forward, backward : the precision's contexts (:func:`varbayes.vae.precision.step_precision`).
    autocast_inside : enter ``forward`` inside the graph (autocast) rather than around it.
    loss_kwargs : ``objective``, ``num_samples`` and ``kl`` of the forward.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        forward,
        backward,
        autocast_inside: bool,
        loss_kwargs: dict,
    ):
        (group,) = optimizer.param_groups
        if group["weight_decay"] or group["amsgrad"] or group["maximize"]:
            raise ValueError("compile='step' implements Adam without weight decay or amsgrad")
        named = list(model.named_parameters())
        if [p for _, p in named] != list(group["params"]):
            raise ValueError("compile='step': the optimizer must hold the model's parameters")
        self.optimizer = optimizer
        self._names = [n for n, _ in named]
        self._params = [p for _, p in named]
        states = [adam_state(optimizer, p) for p in self._params]
        self._m = [st["exp_avg"] for st in states]
        self._v = [st["exp_avg_sq"] for st in states]
        self._beta1, self._beta2 = group["betas"]
        adam_eps = group["eps"]
        beta1, beta2 = self._beta1, self._beta2
        names = self._names
        inside = forward if autocast_inside else contextlib.nullcontext
        self._outside = (contextlib.nullcontext if autocast_inside else forward), backward

        def loss(params, x, eps, beta):
            with inside():
                return functional_call(model, params, (x,), dict(eps=eps, beta=beta, **loss_kwargs))

        grad_value = grad_and_value(loss, has_aux=True)

        def step(params, ms, vs, x, eps, scalars):
            beta, step_size, bc2_sqrt = scalars[0], scalars[1], scalars[2]
            grads, (value, sums) = grad_value(dict(zip(names, params, strict=True)), x, eps, beta)
            for p, m, v, name in zip(params, ms, vs, names, strict=True):
                new_p, new_m, new_v = adam_update(
                    p, grads[name], m, v, step_size, bc2_sqrt, beta1, beta2, adam_eps
                )
                p.copy_(new_p)
                m.copy_(new_m)
                v.copy_(new_v)
            return value.detach(), sums

        device = self._params[0].device
        options = {"cpp_wrapper": True} if device.type == "cpu" else None
        # isolate_recompiles: each CompiledStep keeps its own graphs. With a shared cache the
        # guards miss an autocast entered in a closure under grad_and_value (torch 2.13: a
        # bf16-mixed step reused an fp32 step's graph in the same process).
        self._compiled = torch.compile(
            step, fullgraph=True, dynamic=False, options=options, isolate_recompiles=True
        )
        self._shapes: set[tuple] = set()
        self._last_t = int(optimizer.state[self._params[0]]["step"])

    def __call__(self, x: torch.Tensor, eps: torch.Tensor, beta: float, t: int):
        lr = self.optimizer.param_groups[0]["lr"]
        step_size, bc2_sqrt = bias_corrections(t, lr, self._beta1, self._beta2)
        scalars = torch.tensor([beta, step_size, bc2_sqrt], dtype=torch.float32).to(x.device)
        outside_forward, outside_backward = self._outside
        shape = (tuple(x.shape), tuple(eps.shape))
        seen = shape in self._shapes  # compiled for it already: check its shape guards only
        stance = (
            torch.compiler.set_stance(skip_guard_eval_unsafe=True)
            if seen
            else contextlib.nullcontext()
        )
        try:
            with stance, torch.no_grad(), outside_forward(), outside_backward():
                out = self._compiled(self._params, self._m, self._v, x, eps, scalars)
        except Exception as exc:
            if seen:
                raise
            first = (str(exc).strip().splitlines() or [""])[0]
            raise ValueError(
                f"compile='step': this model's training step does not compile as one graph "
                f"({type(exc).__name__}: {first[:300]}); train with compile=True (the loss "
                "alone, --compile loss) or compile=False"
            ) from exc
        self._shapes.add(shape)
        self._last_t = t
        return out

    def sync_optimizer(self) -> None:
        """Write Adam's step count t into the optimizer's ``step`` tensors (the graph
        leaves them alone), so that its ``state_dict`` is the eager path's."""
        for p in self._params:
            self.optimizer.state[p]["step"].fill_(float(self._last_t))
