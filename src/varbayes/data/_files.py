"""File plumbing shared by the data loaders: where data lives (atomic writes: ``varbayes._io``).

Where a data set is looked for (one directory, chosen by the first rule that applies):

1. the ``root`` argument, when given;
2. ``$VARBAYES_DATA/<name>``, when the environment variable ``VARBAYES_DATA`` is set
   and not empty;
3. ``~/.cache/varbayes/<name>``.
"""

from __future__ import annotations

import os
from pathlib import Path

from varbayes._io import atomic_write

__all__ = ["DataNotFoundError", "atomic_write", "data_dir"]

ENV_VAR = "VARBAYES_DATA"


class DataNotFoundError(FileNotFoundError):
    """A data set's files are missing and could not be obtained.

    The message lists the places looked in, why each download failed (when one was
    tried) and how to provide the files.
    """


def data_dir(name: str, root: str | os.PathLike | None = None) -> tuple[Path, str]:
    """Return the directory of data set ``name`` and a phrase saying which rule chose it.

    ``root`` when given, else ``$VARBAYES_DATA/<name>``, else ``~/.cache/varbayes/<name>``.
    """
    if root is not None:
        if not isinstance(root, (str, os.PathLike)):
            raise TypeError(f"root must be a path (str or os.PathLike) or None; got {root!r}")
        return Path(root).expanduser(), "the root argument"
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser() / name, f"${ENV_VAR}/{name}, with {ENV_VAR}={env}"
    return (
        Path.home() / ".cache" / "varbayes" / name,
        f"the default cache (${ENV_VAR} is not set)",
    )
