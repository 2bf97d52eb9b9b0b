"""Atomic file writing: a file is either written whole or not at all.

Every writer in varbayes (downloads, figures, saved models, checkpoints) goes through
:func:`atomic_path` or :func:`atomic_write`: the content goes to a temporary file in the
destination's directory, which is renamed onto the destination (``os.replace``, atomic
on POSIX and Windows) only when writing succeeded. Readers see the old file or the
complete new one, never a partial file; after a failure nothing is left behind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

__all__ = ["atomic_path", "atomic_write"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    If the body raises, the temporary file is removed and ``path`` is left as it was.
    ``suffix`` defaults to the suffix of ``path`` (so writers that look at the file
    extension, such as matplotlib, pick the right format).
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(
            f"directory {str(path.parent)!r} does not exist (for {str(path)!r})"
        )
    fd, tmp = tempfile.mkstemp(
        dir=path.parent,
        prefix=f".{path.name}.part-",
        suffix=suffix if suffix is not None else path.suffix,
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o644)  # mkstemp creates 0o600; results are meant to be shared
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """Open a temporary file beside ``path`` for binary writing; rename it onto ``path``.

    The data is flushed and fsync'ed before the rename; on an exception the temporary
    file is removed and ``path`` is untouched.
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        yield f
        f.flush()
        os.fsync(f.fileno())
