"""The saved-model format of the mixtures: a directory with two files.

* ``model.safetensors``: the fitted state (π or q(π), μ, Σ, precision factors, ...) as
  plain tensors named ``state.<name>``, the saved names of the fields of the state's
  record (:mod:`varbayes.mixture._state`), and array hyper-parameters (``*_init``,
  ``mean_prior``, ``covariance_prior``) as ``param.<name>``;
* ``config.json``: the class name, the scalar hyper-parameters, ``n_features_in_``,
  ``n_iter_``, ``converged_``, ``lower_bound_`` and the ELBO trace. A ``random_state``
  given as a generator is not saved (listed under ``not_saved``; loaded as None).

This module only writes and reads the files; the model classes
(:meth:`varbayes.mixture._base.BaseMixture.save` / ``load``) say what goes in them and
check what comes out. Loading reads tensors and JSON only: it never executes code.

A save is atomic as a whole: both files are written into a temporary directory beside
the destination, fsync'ed with that directory, and the directory is renamed into place
(an existing saved model is first renamed aside, then removed). A reader sees the old
model or the new one, never new weights with an old config; a failed save leaves the old
model as it was and no temporary files.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

__all__ = ["CONFIG", "WEIGHTS", "FORMAT_VERSION", "read_model", "write_model"]

FORMAT_VERSION = 1
CONFIG = "config.json"
WEIGHTS = "model.safetensors"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_model(path, config: dict, tensors: dict[str, torch.Tensor]) -> None:
    """Write ``config`` (JSON-serialisable) and ``tensors`` as the directory ``path``.

    ``path`` may not exist yet (its parents are created) or be a directory holding a
    saved model (it is replaced); any other existing path is refused with a ValueError
    before anything is written.
    """
    path = Path(os.fspath(path))
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"path must be a directory; {str(path)!r} is a file")
        other = sorted(p.name for p in path.iterdir() if p.name not in (CONFIG, WEIGHTS))
        if other:
            raise ValueError(
                f"path {str(path)!r} holds files other than a saved model ({other[:3]}); "
                "give a new directory or one written by save"
            )
    text = json.dumps(config, indent=2, allow_nan=False)  # fails before anything is written
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.part-"))
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp / WEIGHTS)
        (tmp / CONFIG).write_text(text, encoding="utf-8")
        for p in (tmp / WEIGHTS, tmp / CONFIG, tmp):
            _fsync(p)
        os.chmod(tmp, 0o755)  # mkdtemp creates 0o700; saved models are meant to be shared
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old-"))
            os.replace(path, old)  # onto the empty directory just made
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        _fsync(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_model(path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(config, tensors) from the directory ``path``; a damaged file is a ValueError
    naming it (never a raw JSON, safetensors or key error)."""
    path = Path(os.fspath(path))
    cfg_path, w_path = path / CONFIG, path / WEIGHTS
    if not (cfg_path.is_file() and w_path.is_file()):
        raise ValueError(
            f"path must be a directory holding {CONFIG} and {WEIGHTS}; got {str(path)!r}"
        )
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"path: {str(cfg_path)!r} is not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise ValueError(f"path: {str(cfg_path)!r} must hold a JSON object")
    try:
        tensors = load_file(w_path)
    except Exception as exc:  # SafetensorError, OSError, ...: all mean a damaged file
        raise ValueError(
            f"path: {str(w_path)!r} is not a readable safetensors file ({exc})"
        ) from None
    return config, tensors


def config_error(path, message: str) -> ValueError:
    """A ValueError naming the config file of the saved model at ``path``."""
    return ValueError(f"path: {str(Path(os.fspath(path)) / CONFIG)!r}: {message}")


def weights_error(path, message: str) -> ValueError:
    """A ValueError naming both files (the weights do not match the config)."""
    p = Path(os.fspath(path))
    return ValueError(f"path: {str(p / WEIGHTS)!r} does not match {str(p / CONFIG)!r}: {message}")


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
