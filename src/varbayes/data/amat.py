"""The fixed-binarization MNIST benchmark in its ``.amat`` text format.

``binarized_mnist_{train,valid,test}.amat`` (Larochelle & Murray, 2011) hold 50,000 /
10,000 / 10,000 images, one per line, each as 784 space-separated 0/1 values (a 28 x 28
image in row-major order). The files are not downloaded by varbayes; they are looked
for in one directory: the ``root`` argument, else ``$VARBAYES_DATA/binarized_mnist``,
else ``~/.cache/varbayes/binarized_mnist``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from varbayes.data._files import DataNotFoundError, data_dir

__all__ = ["BINARIZED_MNIST_ROWS", "BINARIZED_MNIST_URL", "load_binarized_mnist", "read_amat"]

BINARIZED_MNIST_ROWS: dict[str, int] = {"train": 50_000, "valid": 10_000, "test": 10_000}
"""Number of images in each split of the standard files."""

BINARIZED_MNIST_URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"
"""Where the standard ``.amat`` files were published (for users fetching them by hand)."""

_N_PIXELS = 784
_BLOCK_LINES = 2048
_SPACE, _TAB, _NEWLINE, _ZERO, _ONE = 32, 9, 10, 48, 49


def _parse_slow(lines: list[bytes], first_line: int, path: Path, n_values: int) -> np.ndarray:
    """Token-by-token parse of a block (tolerates spellings like ``1.0``); precise errors."""
    out = np.empty((len(lines), n_values), dtype=np.uint8)
    for i, line in enumerate(lines):
        lineno = first_line + i
        tokens = line.split()
        if len(tokens) != n_values:
            raise ValueError(
                f"{path}, line {lineno}: expected {n_values} values, found {len(tokens)}"
            )
        for j, token in enumerate(tokens):
            try:
                value = float(token)
            except ValueError:
                value = None
            if value not in (0.0, 1.0):
                shown = token.decode("utf-8", "replace")[:20]
                raise ValueError(
                    f"{path}, line {lineno}, value {j + 1}: expected 0 or 1, found {shown!r}"
                )
            out[i, j] = int(value)
    return out


def _parse_block(block: bytes, first_line: int, path: Path, n_values: int) -> np.ndarray:
    """Parse whole lines of single-character 0/1 tokens at NumPy speed."""
    buf = np.frombuffer(block, dtype=np.uint8)
    digit = (buf == _ZERO) | (buf == _ONE)
    blank = (buf == _SPACE) | (buf == _TAB) | (buf == _NEWLINE)
    # Any other character, or two digits in a row, needs the token-by-token path.
    if not bool((digit | blank).all()) or bool((digit[1:] & digit[:-1]).any()):
        return _parse_slow(block.split(b"\n"), first_line, path, n_values)
    newlines = np.flatnonzero(buf == _NEWLINE)
    bounds = np.concatenate(([0], newlines, [len(buf)]))
    digit_pos = np.flatnonzero(digit)
    counts = np.diff(np.searchsorted(digit_pos, bounds))
    bad = np.flatnonzero(counts != n_values)
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"{path}, line {first_line + i}: expected {n_values} values, found {int(counts[i])}"
        )
    return (buf[digit_pos] - _ZERO).reshape(-1, n_values)


def read_amat(
    path: str | os.PathLike,
    *,
    expected_rows: int | None = None,
    n_values: int = _N_PIXELS,
) -> np.ndarray:
    """Read a ``.amat`` file of 0/1 values into a uint8 array of shape (rows, n_values).

    Each non-final line must hold exactly ``n_values`` whitespace-separated values, each 0
    or 1 (``0``/``1``; spellings such as ``1.0`` are accepted); trailing blank lines and
    ``\\r\\n`` line ends are tolerated. ``expected_rows``, when given, is the required
    number of lines.

    Raises ``ValueError`` naming the file and the line number for a line with the wrong
    number of values or a value other than 0/1, naming the file for an empty file or a
    row count different from ``expected_rows``; ``FileNotFoundError`` when it is missing.
    """
    path = Path(path)
    if expected_rows is not None and (
        isinstance(expected_rows, bool) or not isinstance(expected_rows, int) or expected_rows < 0
    ):
        raise ValueError(
            f"expected_rows must be a non-negative integer or None; got {expected_rows!r}"
        )
    data = path.read_bytes()
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n")
    data = data.rstrip()
    if not data:
        raise ValueError(
            f"{path}: the file holds no rows (expected lines of {n_values} 0/1 values)"
        )
    # Split into blocks of whole lines so that temporary masks stay small.
    parts = []
    start, first_line = 0, 1
    while start < len(data):
        end = start
        for _ in range(_BLOCK_LINES):
            end = data.find(b"\n", end) + 1
            if end == 0:
                end = len(data)
                break
        block = data[start : end - 1] if end < len(data) else data[start:end]
        rows = _parse_block(block, first_line, path, n_values)
        parts.append(rows)
        first_line += len(rows)
        start = end
    array = np.concatenate(parts)
    if expected_rows is not None and len(array) != expected_rows:
        raise ValueError(f"{path}: expected {expected_rows} rows, found {len(array)}")
    return array


def load_binarized_mnist(
    split: str = "train",
    root: str | os.PathLike | None = None,
    dtype: torch.dtype = torch.uint8,
    *,
    check_rows: bool = True,
) -> torch.Tensor:
    """Load one split of the fixed-binarization MNIST benchmark: x of shape (N, 28, 28).

    Parameters
    ----------
    split : {"train", "valid", "test"}
        File ``binarized_mnist_{split}.amat``.
    root : path, optional
        Directory holding the files; default ``$VARBAYES_DATA/binarized_mnist``, else
        ``~/.cache/varbayes/binarized_mnist``.
    dtype : torch.dtype
        ``torch.uint8`` (default) or a floating dtype; values are 0 and 1 either way.
    check_rows : bool
        Require the standard number of images (50,000 / 10,000 / 10,000); turn off for
        subsets.

    Returns a tensor ``(N, 28, 28)`` of ``dtype`` with values in {0, 1}.

    Raises ``ValueError`` naming ``split`` or ``dtype`` for a bad argument, naming the file
    (and line) for malformed content (see :func:`read_amat`); ``DataNotFoundError`` (a
    ``FileNotFoundError``) saying where it looked and how to provide the file.
    """
    if split not in BINARIZED_MNIST_ROWS:
        raise ValueError(f"split must be one of {sorted(BINARIZED_MNIST_ROWS)}; got {split!r}")
    if not isinstance(dtype, torch.dtype) or not (dtype == torch.uint8 or dtype.is_floating_point):
        raise ValueError(
            f"dtype must be torch.uint8 or a floating torch.dtype (e.g. torch.float32); "
            f"got {dtype!r}"
        )
    directory, source = data_dir("binarized_mnist", root)
    path = directory / f"binarized_mnist_{split}.amat"
    if not path.is_file():
        raise DataNotFoundError(
            f"binarized MNIST file not found: {path} (directory chosen from {source}).\n"
            f"To provide it: download binarized_mnist_{{train,valid,test}}.amat "
            f"(e.g. from {BINARIZED_MNIST_URL}) into {directory}; or set VARBAYES_DATA to a "
            "folder holding binarized_mnist/; or pass root= the folder holding them."
        )
    rows = read_amat(path, expected_rows=BINARIZED_MNIST_ROWS[split] if check_rows else None)
    return torch.from_numpy(rows).reshape(-1, 28, 28).to(dtype)
