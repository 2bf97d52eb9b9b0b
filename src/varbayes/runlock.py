"""An exclusive lock on a run directory, so that two writers never share one.

:class:`RunLock` takes ``fcntl.flock`` on ``RUN/.lock`` without waiting. The kernel
releases the lock when the holding process ends in any way (exit, exception, kill -9),
so a crashed run never leaves a stale lock behind; the file itself only records who
holds it (pid, host, start time), for the message a second writer gets:

    >>> with RunLock("runs/vae"):          # doctest: +SKIP
    ...     ...                            # train, save checkpoints
    RunDirBusyError: run directory 'runs/vae' is in use by another writer (pid 4242 on
    host gpu1, since 2026-12-01 22:31:05 UTC) ...

On a network file system where ``flock`` is not honoured across machines the lock only
excludes writers on the same host. Platforms without ``fcntl`` (Windows) get no lock.
"""

from __future__ import annotations

import errno
import os
import socket
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

__all__ = ["LOCK_NAME", "RunDirBusyError", "RunLock"]

LOCK_NAME = ".lock"


class RunDirBusyError(OSError):
    """Another live process holds the lock of the run directory."""


class RunLock:
    """``with RunLock(run_dir):`` holds the exclusive lock of ``run_dir`` inside the block.

    The directory is created when missing; if it was created here and is empty again
    when the lock is released (the block wrote nothing), it is removed, so a writer
    that failed early leaves nothing behind. Raises :class:`RunDirBusyError` naming the
    holder when another process holds the lock. Not reentrant.
    """

    def __init__(self, run_dir: str | os.PathLike):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None
        self._created = False

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock (creating the directory if needed) or raise RunDirBusyError."""
        if self._fd is not None:
            raise RuntimeError(f"RunLock of {str(self.run_dir)!r} is already held")
        self._created = not self.run_dir.exists()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if fcntl is None:  # pragma: no cover - Windows
            return
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                raise RunDirBusyError(
                    f"run directory {str(self.run_dir)!r} is in use by another writer "
                    f"({self._holder()}); wait for it to finish or stop it, or choose "
                    "another directory"
                ) from None
            # A releasing holder unlinks the file: make sure we locked the live one.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()} {stamp}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Drop the lock, remove the lock file, and the directory if it was made and is empty."""
        if self._fd is not None:
            try:
                self.path.unlink(missing_ok=True)  # before unlocking: see acquire
            finally:
                os.close(self._fd)  # closing releases the flock
                self._fd = None
        if self._created:
            try:
                self.run_dir.rmdir()  # only succeeds when empty
            except OSError:
                pass
            self._created = False

    def _holder(self) -> str:
        try:
            pid, host, *since = self.path.read_text().split()
        except (OSError, ValueError):
            return "holder unknown"
        return f"pid {pid} on host {host}" + (f", since {' '.join(since)}" if since else "")
