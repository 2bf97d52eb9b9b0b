"""∇λ(−ELBO) for any model and guide, compiled as one graph (``svi.fit(..., compile=True)``).

For the guide's flat parameters λ and noise ε of shape (S, noise_dim),

    −ELBO(λ; ε) = −(1/S) Σ_s [log p(x, θ_s) − log q(θ_s | λ)],   θ_s = T(ε_s; λ)

(the IWAE bound −log (1/S) Σ_s w_s for ``estimator="iwae"``) is a pure function of
(λ, ε): :meth:`~varbayes.vi.guides.Guide.rsample_from_noise` under
``torch.func.functional_call``, the user's log joint, then
:func:`varbayes.vi.elbo.objective`. ``torch.func.grad_and_value`` gives its gradient and
value in one function, and ``torch.compile(fullgraph=True)`` turns that into one graph:
no autograd graph is recorded and no Python runs per operation at run time. ε is drawn
outside the graph from the run's generator, by the same call as the eager path's, so the
two follow the same trajectory to rounding. The optimizer (any ``torch.optim`` one) then
steps on ``flat.grad``.

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

__all__ = ["CompiledGradient"]


class _FromNoise(nn.Module):
    """``guide.rsample_from_noise`` as a module's forward, for ``functional_call``."""

    def __init__(self, guide: Guide):
        super().__init__()
        self.guide = guide

    def forward(self, eps):
        return self.guide.rsample_from_noise(eps)


class CompiledGradient:
    """The compiled (λ, ε) ↦ (∇λ(−ELBO), −ELBO) of ``model`` and ``guide``.

    Raises ``ValueError`` naming what stands in the way: a guide that is not a
    :class:`~varbayes.vi.guides.Guide`, an estimator other than pathwise or IWAE,
    ``stl``, minibatches, or a model the compiler cannot trace as one graph.
    """

    def __init__(
        self,
        model: Callable[[torch.Tensor], torch.Tensor],
        guide: nn.Module,
        num_particles: int,
        *,
        estimator: str | None = None,
        stl: bool = False,
        batch_size: int | None = None,
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
        self._key = (model, guide, num_particles, estimator, stl, batch_size)
        adapter = _FromNoise(guide)

        def neg_elbo(flat, eps):
            theta, log_q = torch.func.functional_call(adapter, {"guide.flat": flat}, (eps,))
            return -objective(model(theta), log_q, estimator=estimator)

        # isolate_recompiles: every CompiledGradient keeps its own dynamo cache (they all
        # compile the same code, and a shared cache would allow only 8 fits a process)
        self._fn = torch.compile(
            torch.func.grad_and_value(neg_elbo),
            fullgraph=True,
            dynamic=False,
            isolate_recompiles=True,
        )
        self.check()

    def check(self) -> None:
        """One call on zero noise with dynamo's guards evaluated: compiles at set-up (so
        that a failure names the model there), and at the start of every later fit that
        reuses this gradient recompiles if the model changed in a way the guards see
        (a Python number it reads, a tensor's shape); the loop then skips the guards."""
        flat = self.guide.flat.detach()
        try:
            with no_validation():
                self._fn(flat, flat.new_zeros(self.shape))
        except Exception as exc:  # the compiler's own exception types are private
            raise ValueError(
                "compile=True: the model could not be compiled as one graph "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                "pass compile=False"
            ) from exc

    def matches(self, model, guide, num_particles, *, estimator=None, stl=False, batch_size=None):
        """Whether this is the compiled gradient of these very objects and settings."""
        estimator = "pathwise" if estimator is None else estimator
        m, g, *setting = self._key
        return m is model and g is guide and setting == [num_particles, estimator, stl, batch_size]

    def __call__(self, generator: torch.Generator | None) -> torch.Tensor:
        """Draw ε, write ∇λ(−ELBO) into ``guide.flat.grad``; returns the ELBO estimate."""
        flat = self.guide.flat
        eps = randn(self.shape, generator, flat)
        grad, neg = self._fn(flat.detach(), eps)
        flat.grad = grad
        return -neg
