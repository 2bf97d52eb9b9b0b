"""scikit-learn's bundled 8×8 handwritten digits: a data set that needs no download.

``sklearn.datasets.load_digits`` ships 1,797 images of 8×8 pixels with grey levels
0..16 inside the scikit-learn package (UCI "Optical Recognition of Handwritten
Digits", test part). varbayes divides them by 16, so x ∈ [0, 1] like MNIST, and splits
them once, by a permutation with a fixed seed, into :data:`DIGITS_TEST_SIZE` test
images and the rest for training. Offline, this is the data a VAE can always train on.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from varbayes.data._files import DataNotFoundError

__all__ = ["DIGITS_SIZE", "DIGITS_TEST_SIZE", "Digits", "load_digits"]

DIGITS_SIZE = 1797
"""Number of images in scikit-learn's digits."""

DIGITS_TEST_SIZE = 297
"""Images of the fixed test split (the other 1,500 are the training split)."""

_SPLIT_SEED = 1797


class Digits(NamedTuple):
    """One split: ``images`` (N, 8, 8) with values in [0, 1], ``labels`` (N,) int64 in 0..9."""

    images: torch.Tensor
    labels: torch.Tensor


def load_digits(split: str = "train", dtype: torch.dtype = torch.float32) -> Digits:
    """Load one split of scikit-learn's 8×8 digits: images x (N, 8, 8) = grey level / 16.

    ``split="train"`` gives 1,500 images, ``"test"`` 297 (:data:`DIGITS_TEST_SIZE`),
    ``"all"`` all 1,797 in scikit-learn's order. The split is a permutation from a fixed
    seed, the same on every machine. ``dtype`` must be a floating dtype.

    Raises ``ValueError`` naming ``split`` or ``dtype``; ``DataNotFoundError`` when
    scikit-learn (the optional extra ``varbayes[sklearn]``) is not installed.
    """
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be one of ['all', 'test', 'train']; got {split!r}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating torch.dtype (float32, ...); got {dtype!r}")
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError:
        raise DataNotFoundError(
            "the digits data set is bundled with scikit-learn, which is not installed: "
            "pip install 'varbayes[sklearn]' (or pip install scikit-learn)"
        ) from None
    bunch = sklearn_digits()
    x = torch.as_tensor(bunch.images, dtype=dtype) / 16
    y = torch.as_tensor(bunch.target, dtype=torch.int64)
    if split == "all":
        return Digits(x, y)
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(_SPLIT_SEED))
    idx = perm[:DIGITS_TEST_SIZE] if split == "test" else perm[DIGITS_TEST_SIZE:]
    return Digits(x[idx], y[idx])
