"""IDX files: the binary format of the MNIST distribution, read and written with checks.

An IDX file is a 4-byte magic number ``00 00 TT DD`` (``TT`` the element type,
``DD`` the number of dimensions), then ``DD`` big-endian uint32 dimension sizes, then
the elements in C order, big-endian. MNIST images are ``0x00000803`` (uint8, 3-D:
N x 28 x 28) and labels ``0x00000801`` (uint8, 1-D: N). Files may be gzip-compressed
(detected from their first two bytes, whatever their name).

The reader checks the magic number, the element type and number of dimensions when
asked, and that the payload holds exactly the number of bytes the dimensions announce;
a truncated, padded or corrupted file raises ``ValueError`` naming the file and what
was expected versus found, never returns silent garbage.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from varbayes.data._files import atomic_write

__all__ = ["IDX_DTYPES", "idx_magic", "read_idx", "write_idx"]

IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
"""IDX type byte -> NumPy dtype of the stored (big-endian) elements."""

_CHUNK = 1 << 24


def _type_code(dtype) -> int:
    dt = np.dtype(dtype)
    for code, stored in IDX_DTYPES.items():
        if stored.kind == dt.kind and stored.itemsize == dt.itemsize:
            return code
    names = ", ".join(str(d.newbyteorder("=")) for d in IDX_DTYPES.values())
    raise ValueError(f"dtype must be one of the IDX element types ({names}); got {dt}")


def idx_magic(dtype, ndim: int) -> int:
    """Return the IDX magic number for elements of ``dtype`` in ``ndim`` dimensions.

    ``idx_magic(np.uint8, 3) == 0x00000803`` (MNIST images).
    """
    if isinstance(ndim, bool) or not isinstance(ndim, int) or not 1 <= ndim <= 255:
        raise ValueError(f"ndim must be an integer in [1, 255]; got {ndim!r}")
    return (_type_code(dtype) << 8) | ndim


def _describe_magic(magic: int) -> str:
    dt = IDX_DTYPES.get((magic >> 8) & 0xFF)
    kind = str(dt.newbyteorder("=")) if dt is not None else "unknown type"
    return f"0x{magic:08X} ({kind}, {magic & 0xFF} dimension(s))"


def _read_exactly(f, n: int, path: Path, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise ValueError(
            f"{path}: truncated IDX file: the {what} needs {n} bytes, only {len(data)} found"
        )
    return data


def read_idx(
    path: str | os.PathLike,
    *,
    dtype=None,
    ndim: int | None = None,
    sha256: str | None = None,
) -> np.ndarray:
    """Read an IDX file (raw or gzip) into a NumPy array of native byte order.

    Parameters
    ----------
    path : path
        The file; gzip compression is detected from its content, not its name.
    dtype, ndim : optional
        When given, the magic number must announce this element type and number of
        dimensions (``dtype=np.uint8, ndim=3`` means magic ``0x00000803``).
    sha256 : str, optional
        Expected hex SHA-256 of the (decompressed) file content, header included.

    Returns an array of the shape stored in the header (``(N, 28, 28)`` for MNIST images,
    ``(N,)`` for labels), writable, in native byte order.

    Raises ``ValueError`` naming the file when: the gzip stream is corrupted or
    truncated; the magic number is not ``00 00 TT DD`` with a known type ``TT`` and
    ``DD >= 1``; it differs from the expected ``dtype``/``ndim``; the payload is shorter
    or longer than the product of the dimensions times the element size; the SHA-256
    differs from ``sha256``. ``FileNotFoundError`` when the file does not exist.
    """
    path = Path(path)
    expected_magic = None
    if dtype is not None or ndim is not None:
        if dtype is None or ndim is None:
            raise ValueError("dtype and ndim must be given together (they form the magic number)")
        expected_magic = idx_magic(dtype, ndim)
    h = hashlib.sha256()
    with open(path, "rb") as raw:
        compressed = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        f = gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw
        try:
            header = f.read(4)
            if len(header) < 4:
                raise ValueError(
                    f"{path}: not an IDX file: {len(header)} byte(s) long, "
                    "the magic number alone needs 4"
                )
            magic = int.from_bytes(header, "big")
            code, nd = header[2], header[3]
            if header[:2] != b"\x00\x00" or code not in IDX_DTYPES or nd == 0:
                want = (
                    f"expected {_describe_magic(expected_magic)}"
                    if expected_magic is not None
                    else "expected 0x0000TTDD with a known type TT and DD >= 1 dimensions"
                )
                raise ValueError(f"{path}: bad IDX magic number 0x{magic:08X}; {want}")
            if expected_magic is not None and magic != expected_magic:
                raise ValueError(
                    f"{path}: wrong IDX magic number: expected {_describe_magic(expected_magic)}, "
                    f"found {_describe_magic(magic)}"
                )
            dims_bytes = _read_exactly(f, 4 * nd, path, f"header of {nd} dimension sizes")
            dims = tuple(int.from_bytes(dims_bytes[4 * i : 4 * i + 4], "big") for i in range(nd))
            stored = IDX_DTYPES[code]
            expected = math.prod(dims) * stored.itemsize
            payload = bytearray()
            # Read in chunks up to one byte past the announced size: memory stays bounded by
            # the real content even when a corrupted header announces absurd dimensions.
            while len(payload) <= expected:
                chunk = f.read(min(_CHUNK, expected + 1 - len(payload)))
                if not chunk:
                    break
                payload += chunk
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
            raise ValueError(f"{path}: corrupted or truncated gzip data ({exc})") from exc
        finally:
            if f is not raw:
                f.close()
    if len(payload) != expected:
        shape = " x ".join(map(str, dims))
        if len(payload) < expected:
            problem = f"truncated IDX file: found {len(payload)} bytes of data"
        else:
            problem = "IDX file longer than its header announces: found extra bytes after"
            problem += f" {expected} bytes of data"
        raise ValueError(
            f"{path}: {problem}; the header announces {shape} {stored.newbyteorder('=')} "
            f"elements = {expected} bytes"
        )
    if sha256 is not None:
        h.update(header)
        h.update(dims_bytes)
        h.update(payload)
        got = h.hexdigest()
        if got != sha256.lower():
            raise ValueError(
                f"{path}: SHA-256 mismatch of the decompressed content: expected {sha256}, "
                f"found {got}; the file is corrupted or is not the expected data set"
            )
    array = np.frombuffer(payload, dtype=stored).reshape(dims)
    if not stored.isnative:
        array = array.astype(stored.newbyteorder("="))
    return array


def write_idx(path: str | os.PathLike, array, *, compress: bool | None = None) -> Path:
    """Write ``array`` (NumPy array or tensor, at least 1-D) as an IDX file, atomically.

    The element type must be one IDX can store (uint8, int8, int16, int32, float32,
    float64); ``compress=None`` gzips the file when ``path`` ends in ``.gz``. The file is
    written to a temporary file in the same directory (created if needed), then renamed.
    Returns ``path``.
    """
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    array = np.asarray(array)
    if array.ndim == 0:
        raise ValueError("array must have at least one dimension; got a 0-d array")
    code = _type_code(array.dtype)
    path = Path(path)
    if compress is None:
        compress = path.name.endswith(".gz")
    header = bytes([0, 0, code, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    data = header + np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()
    with atomic_write(path) as f:
        f.write(gzip.compress(data, mtime=0) if compress else data)
    return path
