"""Downloading a file from a list of mirrors, verified by its SHA-256, written atomically.

Only the standard library is used (``urllib``). Each mirror is tried in turn with a
timeout; the body is streamed to a temporary file in the destination directory, its
SHA-256 is checked (of the *decompressed* content for gzip files, so that a file
re-compressed by a mirror still matches) and only then is it renamed onto the
destination. A failed or mismatching download leaves nothing behind.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import zlib
from collections.abc import Iterable
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from varbayes.data._files import atomic_write

__all__ = ["DEFAULT_TIMEOUT", "DownloadError", "download_file", "sha256_of_file"]

DEFAULT_TIMEOUT = 30.0
"""Seconds to wait for a mirror to connect or to send the next block of data."""

_CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """Every mirror failed to provide a file with the expected checksum.

    ``failures`` holds one ``(url, reason)`` pair per mirror tried, in order.
    """

    def __init__(self, message: str, failures: list[tuple[str, str]]):
        super().__init__(message)
        self.failures = failures


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def sha256_of_file(path: str | os.PathLike, *, decompress: bool | None = None) -> str:
    """Return the hex SHA-256 of a file's content, decompressed if it is gzip.

    ``decompress=None`` decides from the first two bytes (the gzip magic ``1f 8b``);
    ``True``/``False`` force it. Raises ``ValueError`` naming the file when its gzip
    stream is corrupted or truncated.
    """
    path = Path(path)
    if decompress is None:
        decompress = _is_gzip(path)
    h = hashlib.sha256()
    try:
        with gzip.open(path, "rb") if decompress else open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise ValueError(f"{path}: not a valid gzip file ({exc})") from exc
    return h.hexdigest()


def _reason(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, TimeoutError) or (
        isinstance(exc, URLError) and isinstance(exc.reason, TimeoutError)
    ):
        return f"timed out (timeout={timeout:g} s)"
    if isinstance(exc, URLError):
        return f"cannot connect: {exc.reason}"
    return f"{type(exc).__name__}: {exc}"


def _fetch(url: str, dest: Path, sha256: str, decompress: bool, timeout: float) -> None:
    """Download ``url`` onto ``dest`` atomically, or raise with the reason."""
    request = Request(url, headers={"User-Agent": "varbayes (python urllib)"})
    with atomic_write(dest) as out:
        with urlopen(request, timeout=timeout) as response:
            expected_len = response.headers.get("Content-Length")
            n = 0
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                n += len(chunk)
        if expected_len is not None and n != int(expected_len):
            raise _Rejected(f"truncated transfer: got {n} bytes, Content-Length {expected_len}")
        out.flush()
        tmp = Path(out.name)
        try:
            got = sha256_of_file(tmp, decompress=decompress)
        except ValueError as exc:
            raise _Rejected("the response is not a valid gzip file") from exc
        if got != sha256.lower():
            what = "decompressed content" if decompress else "content"
            raise _Rejected(f"SHA-256 mismatch of the {what}: expected {sha256}, got {got}")


class _Rejected(Exception):
    """A response arrived but its content is not the expected file."""


def download_file(
    urls: Iterable[str],
    dest: str | os.PathLike,
    sha256: str,
    *,
    decompress: bool | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> Path:
    """Download one file from the first of ``urls`` that serves it with the right checksum.

    Parameters
    ----------
    urls : iterable of str
        Full URLs of the same file on different mirrors, tried in order.
    dest : path
        Where the file goes; its directory is created if needed. Written atomically
        (temporary file in the same directory, then ``os.replace``): after a failure
        neither ``dest`` nor a temporary file is left (nor the directories created for
        it), and an existing ``dest`` is untouched.
    sha256 : str
        Expected hex SHA-256 (64 hex digits) of the content, of the *decompressed*
        content when ``decompress`` is true.
    decompress : bool or None
        Whether the file is gzip-compressed; ``None`` means "if ``dest`` ends in ``.gz``".
    timeout : float
        Seconds to wait for a connection or for the next block of data, per mirror.

    Returns the path ``dest``. Raises ``DownloadError`` (a ``RuntimeError``) listing each
    URL and why it failed (HTTP status, connection error, timeout, checksum mismatch)
    when no mirror succeeds; ``ValueError`` naming the argument for a malformed
    ``sha256``, an empty ``urls`` or a non-positive ``timeout``.
    """
    urls = [urls] if isinstance(urls, str) else list(urls)
    if not urls or not all(isinstance(u, str) for u in urls):
        raise ValueError(f"urls must be a non-empty sequence of URL strings; got {urls!r}")
    if not (
        isinstance(sha256, str)
        and len(sha256) == 64
        and all(c in "0123456789abcdefABCDEF" for c in sha256)
    ):
        raise ValueError(f"sha256 must be 64 hexadecimal digits; got {sha256!r}")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"timeout must be a number of seconds > 0; got {timeout!r}")
    dest = Path(dest)
    if decompress is None:
        decompress = dest.name.endswith(".gz")
    failures: list[tuple[str, str]] = []
    created = [d for d in (dest.parent, *dest.parent.parents) if not d.exists()]
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        failures = [(u, f"cannot create directory {dest.parent}: {exc}") for u in urls]
    else:
        for url in urls:
            try:
                _fetch(url, dest, sha256, decompress, timeout)
                return dest
            except _Rejected as exc:
                failures.append((url, str(exc)))
            except (OSError, ValueError, http.client.HTTPException) as exc:
                # URLError, HTTPError, timeouts, dropped connections, disk full
                failures.append((url, _reason(exc, timeout)))
    for d in created:  # leave no trace: remove the directories made for this download
        try:
            d.rmdir()
        except OSError:
            break
    lines = "\n".join(f"  {url}: {why}" for url, why in failures)
    raise DownloadError(f"could not download {dest.name} to {dest.parent}:\n{lines}", failures)
