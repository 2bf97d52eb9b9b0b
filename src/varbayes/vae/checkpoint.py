"""Checkpoints of a VAE run: written atomically, loaded without executing code.

A run directory looks like::

    RUN/latest.json                     {"checkpoint": "checkpoints/epoch-0003", ...}
    RUN/config.json                     the run's VAEConfig (a copy, for people)
    RUN/metrics.jsonl                   one JSON line per finished epoch
    RUN/checkpoints/epoch-0003/
        model.safetensors               the weights θ, φ (plain tensors, no pickle)
        config.json                     the VAEConfig that rebuilds the model
        state.pt                        optimizer, RNG states, data order, position,
                                        metric history (torch.save; loaded with
                                        weights_only=True)

Each checkpoint directory is filled under a temporary name and renamed into place,
then ``latest.json`` is replaced atomically: a reader sees the previous checkpoint or
the new one, never a half-written one. ``state.pt`` holds only tensors, numbers,
strings, lists and dicts; a file carrying any other pickled object is refused
(``torch.load(weights_only=True)``), so loading never runs code from the file.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors.torch import load_file, save_file

from varbayes._io import PART_MARK, TMP_PREFIX, atomic_write, fsync_dir, fsync_path
from varbayes.vae.config import VAEConfig
from varbayes.vae.model import VAE

__all__ = [
    "Checkpoint",
    "check_finite_weights",
    "remove_leftovers",
    "load_checkpoint",
    "load_model",
    "resolve_checkpoint",
    "save_checkpoint",
]

LATEST = "latest.json"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
STATE = "state.pt"
OLD_PREFIX = ".old-"  # a checkpoint being replaced, removed once latest.json moved on


class Checkpoint(NamedTuple):
    """A loaded checkpoint: the model (on ``map_location``), its config, training state, path."""

    model: VAE
    config: VAEConfig
    state: dict | None
    path: Path


def save_checkpoint(
    run_dir: str | os.PathLike,
    name: str,
    model: VAE,
    state: dict,
    *,
    keep_last: int = 2,
) -> Path:
    """Write checkpoint ``name`` into ``run_dir/checkpoints`` and point ``latest.json`` at it.

    ``state`` must hold only tensors, numbers, strings, bools, None, lists and dicts.
    Older checkpoints beyond the ``keep_last`` newest are removed. Returns the
    checkpoint directory.
    """
    run_dir = Path(run_dir)
    root = run_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=TMP_PREFIX))
    try:
        weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        check_finite_weights(weights, f"model (checkpoint {name!r})")
        metadata = {"format": "pt", "library": "varbayes", "config": model.config.to_json()}
        save_file(weights, str(tmp / WEIGHTS), metadata=metadata)
        fsync_path(tmp / WEIGHTS)
        model.config.save(tmp / CONFIG)
        with open(tmp / STATE, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o755)
        fsync_dir(tmp)  # every file and the folder's entries are on disk before the rename
        final = root / name
        trash = None
        if final.exists():
            trash = root / f"{OLD_PREFIX}{name}-{os.getpid()}"
            os.rename(final, trash)
        os.rename(tmp, final)
        fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    pointer = {"checkpoint": f"checkpoints/{name}", "epoch": state.get("epoch")}
    pointer["batch"] = state.get("batch")
    with atomic_write(run_dir / LATEST) as f:
        f.write((json.dumps(pointer) + "\n").encode())
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)
    model.config.save(run_dir / CONFIG)
    kept = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for old in kept[: max(0, len(kept) - keep_last)]:
        if old != name:
            shutil.rmtree(root / old, ignore_errors=True)
    return final


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """The checkpoint directory for ``path``: a run directory (via latest.json) or a checkpoint.

    Raises ``FileNotFoundError`` naming ``path`` and what was expected there.
    """
    p = Path(path)
    if p.is_file() and p.name in (WEIGHTS, CONFIG, STATE, LATEST):
        p = p.parent
    if (p / LATEST).is_file():
        try:
            rel = json.loads((p / LATEST).read_text())["checkpoint"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(
                f"checkpoint {str(p)!r}: {LATEST} is corrupted (expected JSON with a "
                f"'checkpoint' entry): {exc}"
            ) from exc
        if not isinstance(rel, str):
            raise ValueError(
                f"checkpoint {str(p)!r}: {LATEST} is corrupted: 'checkpoint' must be a "
                f"path string; got {rel!r}"
            )
        target = p / rel
        inside = (p / "checkpoints").resolve()
        if inside not in target.resolve().parents:
            raise ValueError(
                f"checkpoint {str(p)!r}: {LATEST} points to {rel!r}, outside the run's "
                "checkpoints/ folder; refusing to follow it (was the file edited?)"
            )
        if not (target / WEIGHTS).is_file():
            raise FileNotFoundError(
                f"checkpoint {str(p)!r}: {LATEST} points to {rel!r}, which holds no {WEIGHTS}"
            )
        return target
    if (p / WEIGHTS).is_file():
        return p
    raise FileNotFoundError(
        f"checkpoint {str(path)!r} not found: expected a run directory holding {LATEST} "
        f"or a checkpoint directory holding {WEIGHTS} and {CONFIG}"
    )


def check_finite_weights(weights: dict[str, torch.Tensor], where: str) -> None:
    """Raise ``ValueError`` naming the first tensor of ``weights`` holding NaN or ±inf."""
    for key, value in weights.items():
        if value.dtype.is_floating_point and not bool(torch.isfinite(value).all()):
            n_bad = int((~torch.isfinite(value)).sum())
            raise ValueError(
                f"{where}: tensor {key!r} holds {n_bad} NaN or infinite value(s) of "
                f"{value.numel()}; refusing non-finite weights"
            )


def _saved_config(path: Path) -> dict | None:
    """The config embedded in the weights file's metadata (None for older checkpoints)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        text = (f.metadata() or {}).get("config")
    return None if text is None else json.loads(text)


def _load_weights(ckpt: Path, config: VAEConfig, map_location) -> VAE:
    path = ckpt / WEIGHTS
    try:  # read on the CPU: a device problem is not a corrupted file
        weights = load_file(str(path), device="cpu")
        embedded = _saved_config(path)
    except Exception as exc:  # safetensors raises its own error types
        raise ValueError(
            f"checkpoint weights {str(path)!r} are corrupted or not a safetensors file: {exc}"
        ) from exc
    check_finite_weights(weights, f"checkpoint weights {str(path)!r}")
    model = VAE(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    wrong = sorted(k for k in set(expected) & set(weights) if expected[k].shape != weights[k].shape)
    if missing or unexpected or wrong:
        detail = []
        if missing:
            detail.append(f"missing {missing[:5]}")
        if unexpected:
            detail.append(f"unexpected {unexpected[:5]}")
        if wrong:
            k = wrong[0]
            detail.append(
                f"shape of {k!r} is {tuple(weights[k].shape)}, expected {tuple(expected[k].shape)}"
            )
        raise ValueError(
            f"checkpoint {str(ckpt)!r} is incompatible with its config.json "
            f"(latent_dim={config.latent_dim}, architecture={config.architecture!r}, "
            f"hidden={list(config.hidden)}): " + "; ".join(detail)
        )
    if embedded is not None:
        given = config.to_dict()
        # fields added to VAEConfig after the checkpoint was written are not in it
        diff = sorted(k for k in embedded if given.get(k) != embedded[k])
        if diff:
            raise ValueError(
                f"checkpoint {str(ckpt)!r}: {CONFIG} does not match the configuration the "
                f"weights were trained with, in "
                + ", ".join(
                    f"{k} ({CONFIG}: {given.get(k)!r}, weights: {embedded[k]!r})" for k in diff
                )
                + " (was the file edited?)"
            )
    model.load_state_dict(weights)
    return model.to(map_location)


def load_state(ckpt: Path, map_location="cpu") -> dict:
    """Load ``state.pt`` with ``weights_only=True``; a pickle payload raises ``ValueError``."""
    path = ckpt / STATE
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(ckpt)!r} has no {STATE} (training state)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        # torch names the refused callable: "Unsupported global", "unsupported GLOBAL"
        if "global" in str(exc).lower() or "unsupported class" in str(exc).lower():
            raise ValueError(
                f"refusing to load {str(path)!r}: it holds pickled Python objects other than "
                "tensors and plain containers, which could run code; varbayes never writes "
                "such files (was it tampered with?)"
            ) from None
        # torch's own advice (load with weights_only=False) is not ours to give
        detail = str(exc).split("WeightsUnpickler error:")[-1].split("Check the doc")[0]
        raise ValueError(
            f"training state {str(path)!r} is corrupted (not a file varbayes wrote): "
            + " ".join(detail.split())[:200]
        ) from exc
    if not isinstance(state, dict) or "epoch" not in state:
        raise ValueError(
            f"training state {str(path)!r} is not a varbayes VAE state (expected a dict "
            f"with 'epoch'); got {type(state).__name__}"
        )
    return state


def remove_leftovers(run_dir: str | os.PathLike) -> list[Path]:
    """Remove what a killed writer left in ``run_dir``: half-filled checkpoint folders
    (``checkpoints/.tmp-*``), replaced ones (``checkpoints/.old-*``) and partial files
    (``.*.part-*``). Call it only while holding the run's lock. Returns what was removed."""
    run_dir = Path(run_dir)
    found = []
    root = run_dir / "checkpoints"
    if root.is_dir():
        found += [p for p in root.iterdir() if p.name.startswith((TMP_PREFIX, OLD_PREFIX))]
    if run_dir.is_dir():
        found += [p for p in run_dir.iterdir() if p.name.startswith(".") and PART_MARK in p.name]
    for p in found:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return found


def load_checkpoint(
    path: str | os.PathLike, map_location="cpu", *, with_state: bool = True
) -> Checkpoint:
    """Load a checkpoint (run directory or checkpoint directory) without executing code.

    Raises ``FileNotFoundError`` for a missing checkpoint, ``ValueError`` naming the file
    for a corrupted or incompatible one or a ``state.pt`` carrying a pickle payload.
    """
    ckpt = resolve_checkpoint(path)
    try:
        config = VAEConfig.load(ckpt / CONFIG)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"checkpoint config {str(ckpt / CONFIG)!r} is invalid: {exc}") from exc
    model = _load_weights(ckpt, config, map_location)
    state = load_state(ckpt, map_location) if with_state else None
    return Checkpoint(model, config, state, ckpt)


def load_model(path: str | os.PathLike, map_location="cpu") -> VAE:
    """The trained :class:`VAE` of a checkpoint (weights and config only), in eval mode."""
    return load_checkpoint(path, map_location, with_state=False).model.eval()
