"""Distributions given by their draws, and the one way the fits draw their noise.

A family whose log density comes with its draws (the ``"flow"`` and the ``"nested"``
families) implements ``draw(n, generator, log_q=True) -> (z (n, D), log q(z) (n,) or
None)``; :class:`DrawnDistribution` derives ``sample`` and ``mean`` (the Monte Carlo
mean of 4,096 draws, seed 0, computed once) from it, and
:func:`varbayes.vi.posterior.draw_with_log_q` calls it.
"""

from __future__ import annotations

import torch
from torch.distributions import Distribution, constraints

__all__ = ["DrawnDistribution", "randn"]


class DrawnDistribution(Distribution):
    """A distribution on the real vectors of ``event_shape`` (D,) defined by ``draw``."""

    arg_constraints = {}
    support = constraints.real_vector
    _mean = None

    def draw(self, n: int, generator: torch.Generator | None = None, log_q: bool = True):
        raise NotImplementedError

    def sample(self, sample_shape=()):
        shape = torch.Size(sample_shape)
        with torch.no_grad():
            z, _ = self.draw(max(1, shape.numel()), log_q=False)
        return z[: shape.numel()].reshape(shape + self.event_shape)

    @property
    def mean(self):
        """The Monte Carlo mean of 4,096 draws (seed 0), computed once."""
        if self._mean is None:
            with torch.no_grad():
                z, _ = self.draw(4096, torch.Generator().manual_seed(0), log_q=False)
            self._mean = z.mean(0)
        return self._mean


def randn(shape, generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    """N(0, 1) noise of ``shape`` in ``like``'s dtype and device, from ``generator`` (drawn
    on the generator's device and moved when the two differ)."""
    if generator is not None and generator.device != like.device:
        return torch.randn(shape, generator=generator, dtype=like.dtype).to(like.device)
    return torch.randn(shape, generator=generator, dtype=like.dtype, device=like.device)
