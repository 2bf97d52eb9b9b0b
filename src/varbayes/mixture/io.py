"""Save and load fitted mixtures: tensors in safetensors, everything else in JSON.

A saved model is a directory with two files:

* ``model.safetensors``: the fitted state (π or q(π), μ, Σ, precision factors, ...),
  as plain tensors, and the hyper-parameters given as arrays (``*_init``,
  ``mean_prior``, ``covariance_prior``);
* ``config.json``: the class name (one of a fixed list), the scalar hyper-parameters,
  ``n_iter_``, ``converged_``, ``lower_bound_`` and the ELBO trace. A ``random_state``
  given as a generator is not saved (listed under ``not_saved``; loaded as None).

Loading reads tensors and JSON only: it never executes code from the files. Each file
is written to a temporary name in the same directory and renamed into place, so a
failed save never leaves a half-written model.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from varbayes._io import atomic_path
from varbayes.mixture import _covariance as cv

__all__ = ["save", "load"]

FORMAT_VERSION = 1
_SCALAR_TYPES = (int, float, str, bool, type(None))


def _classes() -> dict:
    from varbayes.mixture.gaussian import GaussianMixture
    from varbayes.mixture.variational import VariationalGaussianMixture

    return {c.__name__: c for c in (GaussianMixture, VariationalGaussianMixture)}


def _atomic_write(path: str, write) -> None:
    with atomic_path(path) as tmp:
        write(str(tmp))


def save(model, path) -> None:
    """Write the fitted ``model`` into the directory ``path`` (created if missing)."""
    if not hasattr(model, "_state"):
        raise ValueError(f"model must be fitted before saving; got an unfitted {model!r}")
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"path must be a directory; {path!r} is a file")
    os.makedirs(path, exist_ok=True)
    params, array_params, not_saved = {}, [], []
    tensors = {}
    for k, v in model.get_params().items():
        if isinstance(v, np.generic):  # NumPy scalars are saved as Python ones
            v = v.item()
        if k == "dtype" and v is not None:
            params[k] = str(model._dtype_param).removeprefix("torch.")
        elif k == "device" and v is not None:
            params[k] = str(v)
        elif isinstance(v, _SCALAR_TYPES):
            params[k] = v
        elif isinstance(v, (torch.Tensor, np.ndarray, list, tuple)):
            # *_init and priors given as arrays: saved as tensors, passed back on load
            v = v.detach().cpu() if isinstance(v, torch.Tensor) else np.asarray(v, np.float64)
            tensors[f"param.{k}"] = torch.as_tensor(v, dtype=torch.float64).contiguous()
            array_params.append(k)
        else:  # a generator as random_state: its state is not saved
            params[k] = None
            not_saved.append(k)
    for k, v in model._state.items():
        if isinstance(v, torch.Tensor) and k != "iu":
            tensors[f"state.{k}"] = v.detach().cpu().contiguous()
    config = {
        "format_version": FORMAT_VERSION,
        "class": type(model).__name__,
        "params": params,
        "array_params": array_params,
        "not_saved": not_saved,
        "n_features_in_": model.n_features_in_,
        "n_iter_": getattr(model, "n_iter_", 0),
        "converged_": bool(getattr(model, "converged_", False)),
        "lower_bound_": getattr(model, "lower_bound_", None),
        "lower_bounds_": list(getattr(model, "lower_bounds_", [])),
        "extra": model._extra_config() if hasattr(model, "_extra_config") else {},
    }
    _atomic_write(os.path.join(path, "model.safetensors"), lambda p: save_file(tensors, p))

    def write_json(p):
        with open(p, "w", encoding="utf-8") as fh:
            json.dump(config, fh, indent=2)

    _atomic_write(os.path.join(path, "config.json"), write_json)


def load(path, *, device=None):
    """Restore a model written by :func:`save` from the directory ``path``."""
    path = os.fspath(path)
    cfg_path = os.path.join(path, "config.json")
    w_path = os.path.join(path, "model.safetensors")
    if not (os.path.isfile(cfg_path) and os.path.isfile(w_path)):
        raise ValueError(
            f"path must be a directory holding config.json and model.safetensors; got {path!r}"
        )
    with open(cfg_path, encoding="utf-8") as fh:
        try:
            config = json.load(fh)
        except json.JSONDecodeError as exc:
            raise ValueError(f"path: {cfg_path!r} is not valid JSON ({exc})") from exc
    classes = _classes()
    name = config.get("class")
    if name not in classes:
        raise ValueError(
            f"path: config.json names class {name!r}; expected one of {sorted(classes)}"
        )
    params = dict(config["params"])
    if device is not None:
        params["device"] = str(device)
    tensors = load_file(w_path)
    for k in config.get("array_params", []):
        if f"param.{k}" not in tensors:
            raise ValueError(f"path: model.safetensors lacks the saved parameter {k!r}")
        params[k] = tensors[f"param.{k}"]
    model = classes[name](**params)
    model._validate_params()
    d = int(config["n_features_in_"])
    model._dtype = next(v.dtype for k, v in tensors.items() if k == "state.means")
    model._device = model._device_param or torch.device("cpu")
    model._fit_like = None
    state = {
        k.removeprefix("state."): v.to(device=model._device)
        for k, v in tensors.items()
        if k.startswith("state.")
    }
    state["iu"] = cv.tri_indices(d, model._device)
    state["d"] = d
    model._state = state
    model.n_features_in_ = d
    model.n_iter_ = config["n_iter_"]
    model.converged_ = config["converged_"]
    model.lower_bound_ = config["lower_bound_"]
    model.lower_bounds_ = config["lower_bounds_"]
    if hasattr(model, "_load_extra"):
        model._load_extra(config.get("extra", {}))
    model._publish(state)
    return model
