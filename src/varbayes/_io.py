"""Atomic, durable file writing: a file is either written whole or not at all.

Every writer in varbayes (downloads, figures, saved models, checkpoints) goes through
:func:`atomic_path` or :func:`atomic_write`: the content goes to a temporary file in the
destination's directory, which is renamed onto the destination (``os.replace``, atomic
on POSIX and Windows) only when writing succeeded. Readers see the old file or the
complete new one, never a partial file; after a failure nothing is left behind.

Durability (surviving a power cut, not only a crash of the process): :func:`atomic_write`
fsyncs the data before the rename and the directory after it; :func:`fsync_path` and
:func:`fsync_dir` do the same for files written by other libraries (safetensors,
matplotlib). :func:`staged_outputs` publishes a set of files only when all of them were
written.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

__all__ = ["atomic_path", "atomic_write", "fsync_dir", "fsync_path", "staged_outputs"]

#: Prefixes of the temporary names used here (``.NAME.part-*`` files, ``.tmp-*`` folders),
#: so that a later run can recognise and remove what a killed process left behind.
PART_MARK = ".part-"
TMP_PREFIX = ".tmp-"


def fsync_path(path: str | os.PathLike) -> None:
    """Flush the file (or directory) at ``path`` to stable storage."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if Path(path).is_dir() else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:
        if os.name == "nt" and Path(path).is_dir():  # Windows cannot open a directory
            return
        raise
    try:
        os.fsync(fd)
    except OSError as exc:
        # some file systems refuse fsync on directories; any other error is real
        if not (Path(path).is_dir() and exc.errno in (errno.EINVAL, errno.ENOTSUP)):
            raise
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush directory ``path`` (its entries: created, renamed, removed files)."""
    fsync_path(path)


@contextlib.contextmanager
def atomic_path(
    path: str | os.PathLike, suffix: str | None = None, *, durable: bool = False
) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    If the body raises, the temporary file is removed and ``path`` is left as it was.
    ``suffix`` defaults to the suffix of ``path`` (so writers that look at the file
    extension, such as matplotlib, pick the right format). ``durable``: fsync the file
    before the rename and the directory after it.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(
            f"directory {str(path.parent)!r} does not exist (for {str(path)!r})"
        )
    fd, tmp = tempfile.mkstemp(
        dir=path.parent,
        prefix=f".{path.name}{PART_MARK}",
        suffix=suffix if suffix is not None else path.suffix,
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o644)  # mkstemp creates 0o600; results are meant to be shared
        if durable:
            fsync_path(tmp_path)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """Open a temporary file beside ``path`` for binary writing; rename it onto ``path``.

    The data is flushed and fsync'ed before the rename and the directory after it; on
    an exception the temporary file is removed and ``path`` is untouched.
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        yield f
        f.flush()
        os.fsync(f.fileno())
    fsync_dir(Path(path).parent)


@contextlib.contextmanager
def staged_outputs(directory: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty staging folder; on success move every file in it into ``directory``.

    ``directory`` (and missing parents) is created only then; if the body raises, the
    staging folder is removed and ``directory`` is left exactly as it was (not created,
    no file replaced). Each file is then published with an atomic rename.
    """
    directory = Path(directory)
    anchor = directory
    while not anchor.is_dir():
        if anchor.exists() or anchor == anchor.parent:
            raise NotADirectoryError(f"{str(directory)!r}: {str(anchor)!r} is not a directory")
        anchor = anchor.parent
    stage = Path(tempfile.mkdtemp(dir=anchor, prefix=TMP_PREFIX))
    try:
        yield stage
        directory.mkdir(parents=True, exist_ok=True)
        for f in sorted(stage.iterdir()):
            os.replace(f, directory / f.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
