"""The images a VAE trains on, as whole tensors (no per-sample transforms, no DataLoader).

Every split is one float tensor x of shape (N, D) with values in [0, 1], kept on the
training device and indexed per minibatch. Grey-level MNIST (and digits) is binarized
per batch by the trainer (``dynamic`` binarization); the validation and test images used
for reporting are binarized once, from a fixed seed, so their ELBOs compare across epochs.

``config.dataset`` picks the source: ``mnist`` (IDX files, downloaded once),
``binarized-mnist`` (.amat files) or ``digits`` (scikit-learn's bundled 8×8 digits,
always available offline; the message of a missing MNIST suggests it).
"""

from __future__ import annotations

import contextlib
import os
from typing import NamedTuple

import torch

from varbayes.data import (
    DataNotFoundError,
    load_binarized_mnist,
    load_digits,
    load_mnist,
    static_binarize,
)
from varbayes.vae.config import VAEConfig

__all__ = [
    "EVAL_BINARIZE_SEED",
    "OFFLINE_HINT",
    "VAEData",
    "load_test_data",
    "load_vae_data",
    "split_validation",
]

EVAL_BINARIZE_SEED = 123
"""Seed of the one fixed binarization of validation and test images (dynamic-binarization runs)."""

_VAL_SPLIT_SEED = 20_240_601

OFFLINE_HINT = (
    "Offline? Train on scikit-learn's bundled 8x8 digits instead (1,797 images, no "
    "download): varbayes vae train --dataset digits"
)
"""The suggestion appended to the error of a missing MNIST."""


@contextlib.contextmanager
def _suggest_digits():
    """Re-raise a missing-MNIST ``DataNotFoundError`` with :data:`OFFLINE_HINT` appended."""
    try:
        yield
    except DataNotFoundError as exc:
        raise DataNotFoundError(f"{exc}\n{OFFLINE_HINT}") from None


class VAEData(NamedTuple):
    """Training data: ``train`` (N, D), ``val`` (M, D) and optional ``test`` (T, D), all in [0, 1].

    ``test_labels`` (T,) holds the digit labels when known (MNIST), for the latent scatter.
    """

    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None


def _grey_split(config: VAEConfig, split: str, root) -> tuple[torch.Tensor, torch.Tensor]:
    """Grey-level images (N, D) in [0, 1] and labels (N,) of split of MNIST or digits."""
    if config.dataset == "mnist":
        with _suggest_digits():
            t = load_mnist(split, root, dtype=torch.float32)
    else:
        t = load_digits(split)
    return t.images.reshape(-1, config.data_dim), t.labels


def split_validation(x: torch.Tensor, val_size: int, seed: int = _VAL_SPLIT_SEED):
    """Split rows of x into (train, val) by a permutation fixed by ``seed``."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(x.shape[0], generator=g)
    return x[perm[val_size:]], x[perm[:val_size]]


def load_vae_data(
    config: VAEConfig,
    root: str | os.PathLike | None = None,
    *,
    test: bool = True,
    test_size: int | None = None,
) -> VAEData:
    """Load the data set named by ``config.dataset`` as flat float32 tensors in [0, 1].

    ``mnist``: the 60,000 training images minus ``config.val_size`` held out (a fixed
    permutation), the first ``config.train_size`` of the rest, and the 10,000 test images
    (or the first ``test_size``). With dynamic binarization the validation and test
    images are binarized once (seed :data:`EVAL_BINARIZE_SEED`); training images stay
    grey for the trainer to binarize per batch.
    ``digits``: the same with scikit-learn's 8×8 digits (1,500 training, 297 test
    images; :func:`varbayes.data.load_digits`).
    ``binarized-mnist``: the fixed .amat train / valid / test splits (``val_size`` and
    ``train_size`` cut them down). ``root`` is the data directory (default
    ``$VARBAYES_DATA/<dataset>``).
    """
    d = config.data_dim
    if config.dataset in ("mnist", "digits"):
        full, _ = _grey_split(config, "train", root)
        if config.val_size >= full.shape[0]:
            raise ValueError(
                f"val_size must be smaller than the {full.shape[0]} training images; "
                f"got {config.val_size}"
            )
        train, val = split_validation(full, config.val_size)
        x_test = labels = None
        if test:
            x_test, labels = load_test_data(config, root)
        if config.dynamic_binarization:
            val = static_binarize(val, EVAL_BINARIZE_SEED)
    else:
        train = load_binarized_mnist("train", root, dtype=torch.float32).reshape(-1, d)
        val = load_binarized_mnist("valid", root, dtype=torch.float32).reshape(-1, d)
        val = val[: config.val_size]
        x_test = labels = None
        if test:
            x_test = load_binarized_mnist("test", root, dtype=torch.float32).reshape(-1, d)
    if config.train_size is not None:
        train = train[: config.train_size]
    if x_test is not None and test_size is not None:
        x_test = x_test[:test_size]
        labels = labels[:test_size] if labels is not None else None
    return VAEData(train.contiguous(), val.contiguous(), x_test, labels)


def load_test_data(
    config: VAEConfig, root: str | os.PathLike | None = None, test_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The test images (T, D) of ``config.dataset`` and their labels (None for .amat).

    MNIST (or digits) test images of a dynamic-binarization run are binarized once with
    :data:`EVAL_BINARIZE_SEED` (the same images as :func:`load_vae_data` gives).
    """
    d = config.data_dim
    if config.dataset in ("mnist", "digits"):
        x, labels = _grey_split(config, "test", root)
        if config.dynamic_binarization:
            x = static_binarize(x, EVAL_BINARIZE_SEED)
    else:
        x = load_binarized_mnist("test", root, dtype=torch.float32).reshape(-1, d)
        labels = None
    if test_size is not None:
        x = x[:test_size]
        labels = labels[:test_size] if labels is not None else None
    return x, labels
