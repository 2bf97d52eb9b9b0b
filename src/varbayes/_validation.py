"""Input checks shared by the whole package.

Every check raises ``ValueError`` (or ``TypeError``) whose message names the
argument, what was expected and what was given, so that a user can fix the
call without reading the source.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

__all__ = [
    "as_tensor",
    "check_device",
    "check_positive",
    "check_finite",
    "check_nonempty",
]


def _describe(x: torch.Tensor) -> str:
    return f"tensor of shape {tuple(x.shape)} and dtype {x.dtype}"


def as_tensor(
    value,
    name: str,
    *,
    dtype: torch.dtype | None = torch.float64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Convert ``value`` (number, sequence, NumPy array or tensor) to a tensor.

    Raises ``TypeError`` naming ``name`` when the value is not numeric.
    """
    if isinstance(value, torch.Tensor):
        t = value
    elif isinstance(value, (np.ndarray, Sequence, int, float, np.number)) and not isinstance(
        value, (str, bytes)
    ):
        try:
            t = torch.as_tensor(np.asarray(value))
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must be numeric; got {value!r:.80}") from exc
    else:
        raise TypeError(
            f"{name} must be a number, sequence, NumPy array or torch.Tensor; "
            f"got {type(value).__name__}"
        )
    if t.dtype == torch.bool:
        t = t.to(torch.int64)
    if not (t.dtype.is_floating_point or t.dtype in _INT_DTYPES):
        raise TypeError(f"{name} must be numeric; got {_describe(t)}")
    if dtype is not None or device is not None:
        t = t.to(dtype=dtype or t.dtype, device=device or t.device)
    return t


_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def check_finite(x: torch.Tensor, name: str) -> torch.Tensor:
    """Raise ``ValueError`` naming ``name`` if ``x`` holds NaN or infinity."""
    if x.dtype.is_floating_point and not bool(torch.isfinite(x).all()):
        n_bad = int((~torch.isfinite(x)).sum())
        raise ValueError(
            f"{name} must be finite; it holds {n_bad} NaN or infinite value(s) ({_describe(x)})"
        )
    return x


def check_nonempty(x: torch.Tensor, name: str) -> torch.Tensor:
    """Raise ``ValueError`` naming ``name`` if ``x`` has no elements."""
    if x.numel() == 0:
        raise ValueError(f"{name} must not be empty; got {_describe(x)}")
    return x


def check_positive(value, name: str) -> torch.Tensor:
    """Return ``value`` as a float64 tensor after checking it is finite and > 0."""
    t = as_tensor(value, name)
    check_finite(t, name)
    if not bool((t > 0).all()):
        bad = t[~(t > 0)].flatten()[0].item()
        raise ValueError(f"{name} must be > 0; got {bad!r}")
    return t


def check_int(value, name: str, *, minimum: int | None = None) -> int:
    """Return ``value`` as a Python int, checking its type and lower bound."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value = int(value)
        else:
            raise TypeError(f"{name} must be an integer; got {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {value}")
    return value


def check_device(device, name: str = "device") -> torch.device:
    """``torch.device(device)``, checked against this machine.

    Raises ``ValueError`` naming ``name`` when ``device`` is not a device name
    (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``, ...) or names a device this
    machine lacks: CUDA on a build without it or with no GPU visible, a GPU index
    beyond the number of GPUs, MPS where it is unavailable.
    """
    if isinstance(device, torch.device):
        dev = device
    elif isinstance(device, str):
        try:
            dev = torch.device(device)
        except RuntimeError:
            raise ValueError(
                f"{name} must be a torch device such as 'cpu', 'cuda', 'cuda:1' or 'mps'; "
                f"got {device!r}"
            ) from None
    else:
        raise TypeError(f"{name} must be a str or torch.device; got {type(device).__name__}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = (
                "this torch build has no CUDA support"
                if torch.version.cuda is None
                else "no GPU is visible (check CUDA_VISIBLE_DEVICES and the driver)"
            )
            raise ValueError(f"{name} {str(dev)!r} is not available: {why}; use 'cpu'")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ValueError(
                f"{name} {str(dev)!r} is not available: this machine has {count} GPU(s) "
                f"(cuda:0 to cuda:{count - 1})"
            )
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{name} {str(dev)!r} is not available on this machine; use 'cpu'")
    return dev
