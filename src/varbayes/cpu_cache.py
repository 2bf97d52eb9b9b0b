"""A caching CPU allocator for the compiled loops: :func:`cached_cpu_allocations`.

A compiled SVI loop (:mod:`varbayes.vi.compiled`) allocates each intermediate buffer of
its step afresh every iteration: 20-50 small tensors a step on the posteriordb models,
each through c10's 64-byte-aligned ``posix_memalign``. glibc's ``malloc`` serves aligned
requests by splitting a larger chunk, outside its per-thread cache, and that is much of
a small model's step. Inside :func:`cached_cpu_allocations` torch's CPU allocator is
replaced (``c10::SetCPUAllocator``, public C++ API) by a small caching one
(``cpu_cache.cpp``): blocks of up to 1 MiB are rounded up to a power of two and, when
freed, kept on a free list of their size (at most 64 MiB in all) for the next request of
that size; on the way out the previous allocator comes back and the lists are emptied
(a block still in use is freed to the C library when its tensor goes). The numbers
computed are the same: only where the memory comes from changes (tested bit for bit).
Measured in one process against the default allocator (``BENCHMARKS.md``): 1.1-1.7x the
compiled loop's steps/s on the posteriordb models.

The C++ file is compiled once per torch version with the C++ compiler that
``torch.compile`` uses (``$CXX``, else ``g++`` or ``c++``), against torch's own headers
and ``libc10``, into ``$XDG_CACHE_HOME/varbayes/cpu_cache`` (``~/.cache`` by default, a
temporary directory where that is read-only; about a second), then loaded with
:mod:`ctypes`. Where that is impossible (no compiler, not Linux) or
``VARBAYES_CPU_CACHE=0`` is set, the context does nothing (and says why once, in a
warning, when the build failed).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

__all__ = ["cached_bytes", "cached_cpu_allocations", "library"]

SOURCE = Path(__file__).with_name("cpu_cache.cpp")
ENV_VAR = "VARBAYES_CPU_CACHE"

_lock = threading.Lock()
_state: dict = {}  # "lib": the loaded library or None; "why": the reason it is None


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "varbayes" / "cpu_cache"


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "g++", "c++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _build(cxx: str) -> Path:
    """Compile ``cpu_cache.cpp`` (once per source, torch version and compiler) and return
    the shared library's path; the file is written under a temporary name and renamed."""
    torch_dir = Path(torch.__file__).resolve().parent
    source = SOURCE.read_bytes()
    key = hashlib.sha256(
        source + torch.__version__.encode() + cxx.encode() + str(torch_dir).encode()
    ).hexdigest()[:16]
    fallback = Path(tempfile.gettempdir()) / f"varbayes-cpu-cache-{os.getuid()}"
    for out_dir in (_cache_dir(), fallback):
        target = out_dir / f"cpu_cache-{key}.so"
        if target.is_file():
            return target
        try:  # a read-only cache directory: the temporary one
            out_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=out_dir, suffix=".so.tmp")
            break
        except OSError:
            continue
    else:
        raise RuntimeError(f"no writable directory for the library (tried {_cache_dir()})")
    os.close(fd)
    abi = int(torch.compiled_with_cxx11_abi())
    cmd = [
        cxx, "-O2", "-shared", "-fPIC", "-std=c++17", f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
        f"-I{torch_dir / 'include'}", str(SOURCE), f"-L{torch_dir / 'lib'}", "-lc10",
        f"-Wl,-rpath,{torch_dir / 'lib'}", "-o", tmp,
    ]  # fmt: skip
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if run.returncode != 0:
            raise RuntimeError((run.stderr.strip().splitlines() or ["compiler failed"])[-1])
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def library() -> ctypes.CDLL | None:
    """The loaded allocator library (built on first use), or None where it cannot be
    had: ``VARBAYES_CPU_CACHE=0``, not Linux, no C++ compiler, or a failed build (which
    warns once, naming the reason)."""
    with _lock:
        if "lib" in _state:
            return _state["lib"]
        lib, why, warn = None, None, False
        cxx = _compiler()
        if os.environ.get(ENV_VAR, "1") == "0":
            why = f"{ENV_VAR}=0"
        elif not sys.platform.startswith("linux"):
            why = f"not built on {sys.platform}"
        elif cxx is None:
            why = "no C++ compiler ($CXX, g++ or c++) found"
        else:
            try:
                lib = ctypes.CDLL(str(_build(cxx)))
                lib.varbayes_cpu_cache_install.restype = ctypes.c_int
                lib.varbayes_cpu_cache_cached_bytes.restype = ctypes.c_size_t
            except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
                lib, why, warn = None, f"its build failed: {exc}", True
        _state.update(lib=lib, why=why)
    if warn:
        warnings.warn(
            f"varbayes.cpu_cache: the caching CPU allocator is not used ({why}); the "
            "compiled SVI loop runs on torch's default allocator (slower, same numbers)",
            RuntimeWarning,
            stacklevel=3,
        )
    return lib


@contextlib.contextmanager
def cached_cpu_allocations() -> Iterator[bool]:
    """Inside, torch's CPU tensors are allocated by the caching allocator; yields whether
    it is in place (False where :func:`library` is None, or another allocator of higher
    priority holds the place). Nested uses and threads are safe: the last exit restores
    the previous allocator."""
    lib = library()
    if lib is None or not lib.varbayes_cpu_cache_install():
        yield False
        return
    try:
        yield True
    finally:
        lib.varbayes_cpu_cache_uninstall()


def cached_bytes() -> int:
    """Bytes held on the free lists now (0 outside :func:`cached_cpu_allocations`)."""
    lib = library()
    return 0 if lib is None else int(lib.varbayes_cpu_cache_cached_bytes())
