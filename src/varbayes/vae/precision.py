"""Arithmetic of the training step: ``VAEConfig.precision``.

Three modes, each a pair of contexts: one entered around a training step's forward pass,
one around its backward pass (Adam, evaluation and everything outside the step stay
float32):

* ``"fp32"``: float32 throughout.
* ``"bf16-mixed"``: ``torch.autocast(dtype=torch.bfloat16)`` around the forward pass (the
  backward pass follows the dtypes it chose, outside it, as torch recommends). The layers
  run in bfloat16 and the networks hand float32 back; casts are separate copies (53 a
  step for the 784-400-20 model).
* ``"bf16-matmul"``: every tensor stays float32, but oneDNN computes the matrix products
  and convolutions of more than 16³ multiply-adds from bfloat16-rounded inputs with
  float32 accumulation (``torch.backends.mkldnn.matmul.fp32_precision = "bf16"``, the
  CPU's counterpart of TF32 on a GPU). The rounding happens inside oneDNN's packing, so
  nothing is copied. A product then carries a relative error of about 2⁻⁸ (bfloat16's
  8-bit mantissa), as in ``"bf16-mixed"``. CPU only; where oneDNN has no bfloat16
  kernels (a CPU without AVX512-BF16 or AMX) the products stay float32 and the trainer
  warns.

The ``fp32_precision`` settings are process-wide: :func:`bf16_products` sets them for the
duration of each pass and restores the previous values on the way out, even on an error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import NamedTuple

import torch

from varbayes.vae.config import PRECISIONS

__all__ = ["StepPrecision", "bf16_products", "bf16_products_supported", "step_precision"]


@contextlib.contextmanager
def bf16_products() -> Iterator[None]:
    """Inside: float32 matrix products and convolutions from bfloat16-rounded inputs
    (oneDNN, float32 accumulation); on exit the previous settings come back."""
    matmul, conv = torch.backends.mkldnn.matmul, torch.backends.mkldnn.conv
    saved = matmul.fp32_precision, conv.fp32_precision
    matmul.fp32_precision = conv.fp32_precision = "bf16"
    try:
        yield
    finally:
        matmul.fp32_precision, conv.fp32_precision = saved


def bf16_products_supported() -> bool:
    """Whether :func:`bf16_products` changes a float32 product on this CPU (a 32³ probe:
    oneDNN falls back to float32 arithmetic where it has no bfloat16 kernels)."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(32, 32, generator=g), torch.randn(32, 32, generator=g)
    exact = a @ b
    with bf16_products():
        rounded = a @ b
    return not torch.equal(exact, rounded)


class StepPrecision(NamedTuple):
    """Factories of the contexts of a training step's forward and backward passes."""

    forward: Callable[[], AbstractContextManager]
    backward: Callable[[], AbstractContextManager]


def step_precision(precision: str, device: torch.device) -> StepPrecision:
    """The contexts of one training step for ``precision`` on ``device``.

    Raises ``ValueError`` for an unknown precision, and for ``"bf16-matmul"`` off the CPU
    (on a GPU the oneDNN setting would change nothing; use ``"bf16-mixed"`` there).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}; got {precision!r}")
    none = contextlib.nullcontext
    if precision == "fp32":
        return StepPrecision(none, none)
    if precision == "bf16-mixed":
        return StepPrecision(lambda: torch.autocast(device.type, dtype=torch.bfloat16), none)
    if device.type != "cpu":
        raise ValueError(
            f"precision='bf16-matmul' rounds the products of a CPU run (oneDNN); this run "
            f"is on {device.type!r}: use precision='bf16-mixed' there"
        )
    return StepPrecision(bf16_products, bf16_products)
