"""MNIST: the four canonical IDX files, found locally or downloaded, checked, loaded.

Where the files are looked for (one directory, the first rule that applies):
the ``root`` argument; else ``$VARBAYES_DATA/mnist``; else ``~/.cache/varbayes/mnist``.
Each file may be stored gzipped (``train-images-idx3-ubyte.gz``, as distributed) or
raw (``train-images-idx3-ubyte``). Missing files are downloaded (when
``download=True``) from :data:`MNIST_MIRRORS`, tried in turn, and kept only when the
SHA-256 of their decompressed content equals :data:`MNIST_SHA256`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from varbayes.data._files import DataNotFoundError, data_dir
from varbayes.data.download import DEFAULT_TIMEOUT, DownloadError, download_file
from varbayes.data.idx import read_idx

__all__ = [
    "MNIST",
    "MNIST_FILES",
    "MNIST_MIRRORS",
    "MNIST_SHA256",
    "download_mnist",
    "load_mnist",
    "mnist_dir",
]

MNIST_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
"""Base URLs of public MNIST mirrors, tried in order; a file's URL is base + name + ".gz"."""

MNIST_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
"""Split -> (images file, labels file), without the ``.gz`` suffix."""

MNIST_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
"""SHA-256 of the *decompressed* content of each file (independent of gzip settings)."""


class MNIST(NamedTuple):
    """One MNIST split: ``images`` (N, 28, 28) and ``labels`` (N,) int64 in 0..9."""

    images: torch.Tensor
    labels: torch.Tensor


def mnist_dir(root: str | os.PathLike | None = None) -> Path:
    """The directory where MNIST is looked for and downloaded to.

    ``root`` when given, else ``$VARBAYES_DATA/mnist``, else ``~/.cache/varbayes/mnist``.
    """
    return data_dir("mnist", root)[0]


def _find(directory: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (directory / name).is_file():
            return directory / name
    return None


def _checksum(checksums: Mapping[str, str], stem: str) -> str:
    try:
        return checksums[stem]
    except (KeyError, TypeError):
        raise ValueError(
            f"checksums must map each MNIST file name to its SHA-256; it has no entry for {stem!r}"
        ) from None


def _check_split(split) -> str:
    if split not in MNIST_FILES:
        raise ValueError(f"split must be one of {sorted(MNIST_FILES)}; got {split!r}")
    return split


def _fetch_missing(
    directory: Path,
    source: str,
    stems: Sequence[str],
    download: bool,
    mirrors: Sequence[str] | None,
    checksums: Mapping[str, str],
    timeout: float,
) -> dict[str, Path]:
    """Return stem -> path for each file, downloading the missing ones, or raise one error."""
    found = {stem: _find(directory, stem) for stem in stems}
    missing = [stem for stem, p in found.items() if p is None]
    if not missing:
        return found
    mirrors = MNIST_MIRRORS if mirrors is None else mirrors
    if isinstance(mirrors, str):
        mirrors = (mirrors,)
    if not all(isinstance(m, str) for m in mirrors):
        raise ValueError(f"mirrors must be a sequence of base URL strings; got {mirrors!r}")
    failures: dict[str, list[tuple[str, str]]] = {}
    if download:
        for stem in missing:
            urls = [m.rstrip("/") + "/" + stem + ".gz" for m in mirrors]
            if not urls:
                failures[stem] = [("(no mirrors)", "the mirrors list is empty")]
                continue
            try:
                found[stem] = download_file(
                    urls, directory / (stem + ".gz"), _checksum(checksums, stem), timeout=timeout
                )
            except DownloadError as exc:
                failures[stem] = exc.failures
        missing = [stem for stem in missing if stem not in found or found[stem] is None]
        if not missing:
            return found
    lines = [f"MNIST files not found in {directory} (chosen from {source}):"]
    lines += [f"  {stem}.gz or {stem}: missing" for stem in missing]
    if download:
        lines.append("Download failed:")
        for stem in missing:
            lines.append(f"  {stem}.gz:")
            lines += [f"    {url}: {why}" for url, why in failures.get(stem, [])]
    else:
        lines.append("Download was not attempted (download=False).")
    lines.append(
        "To provide the files: copy the four MNIST IDX files (gzipped or not: "
        + ", ".join(f"{s}.gz" for pair in MNIST_FILES.values() for s in pair)
        + f") into {directory}; or set VARBAYES_DATA to a folder holding mnist/; "
        "or pass root= the folder holding them"
        + (
            "; or retry online (mirrors= sets other mirrors)."
            if download
            else "; or call with download=True online."
        )
    )
    raise DataNotFoundError("\n".join(lines))


def download_mnist(
    root: str | os.PathLike | None = None,
    splits: Sequence[str] = ("train", "test"),
    *,
    mirrors: Sequence[str] | None = None,
    checksums: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> list[Path]:
    """Make sure the MNIST files of ``splits`` are present in :func:`mnist_dir`.

    Downloads only the missing files, from ``mirrors`` (default :data:`MNIST_MIRRORS`),
    each verified against ``checksums`` (default :data:`MNIST_SHA256`, SHA-256 of the
    decompressed content) and written atomically. Files already present are not
    re-checked here (:func:`load_mnist` checks them). Returns the paths of the files.
    Raises ``DataNotFoundError`` listing every failed mirror when a file cannot be
    obtained.
    """
    if isinstance(splits, str):
        splits = (splits,)
    checksums = MNIST_SHA256 if checksums is None else checksums
    directory, source = data_dir("mnist", root)
    stems = [stem for split in splits for stem in MNIST_FILES[_check_split(split)]]
    found = _fetch_missing(directory, source, stems, True, mirrors, checksums, timeout)
    return [found[stem] for stem in stems]


def load_mnist(
    split: str = "train",
    root: str | os.PathLike | None = None,
    download: bool = True,
    dtype: torch.dtype = torch.uint8,
    *,
    verify: bool = True,
    mirrors: Sequence[str] | None = None,
    checksums: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> MNIST:
    """Load one MNIST split as tensors: images x of shape (N, 28, 28), labels y of shape (N,).

    Parameters
    ----------
    split : {"train", "test"}
        60,000 training or 10,000 test images.
    root : path, optional
        Directory holding the files; default ``$VARBAYES_DATA/mnist``, else
        ``~/.cache/varbayes/mnist``.
    download : bool
        Download missing files from ``mirrors`` (verified, atomic). With ``False`` a
        missing file raises ``DataNotFoundError`` at once.
    dtype : torch.dtype
        ``torch.uint8`` (default): grey levels 0..255 as stored. A floating dtype
        (``torch.float32``, ...): grey levels divided by 255, in [0, 1].
    verify : bool
        Check the SHA-256 of each local file's decompressed content against
        ``checksums`` (about 0.1 s for the training images). Downloads are always checked.
    mirrors : sequence of str, optional
        Base URLs tried in order; default :data:`MNIST_MIRRORS`.
    checksums : mapping, optional
        File name (without ``.gz``) -> hex SHA-256; default :data:`MNIST_SHA256`.
    timeout : float
        Seconds per mirror to connect or receive the next block.

    Returns ``MNIST(images, labels)``: images ``(N, 28, 28)`` of ``dtype``, labels
    ``(N,)`` int64 in 0..9.

    Raises ``ValueError`` naming ``split`` or ``dtype`` for a bad argument; ``ValueError``
    naming the file when a file is corrupted (bad magic number, wrong length, checksum
    mismatch, images not 28 x 28, labels outside 0..9) or images and labels disagree in
    number; ``DataNotFoundError`` (a ``FileNotFoundError``) when files are missing and
    cannot be downloaded, listing where it looked, why each mirror failed and how to
    provide the files.
    """
    _check_split(split)
    if not isinstance(dtype, torch.dtype) or not (dtype == torch.uint8 or dtype.is_floating_point):
        raise ValueError(
            f"dtype must be torch.uint8 or a floating torch.dtype (e.g. torch.float32); "
            f"got {dtype!r}"
        )
    checksums = MNIST_SHA256 if checksums is None else checksums
    directory, source = data_dir("mnist", root)
    images_stem, labels_stem = MNIST_FILES[split]
    found = _fetch_missing(
        directory, source, (images_stem, labels_stem), download, mirrors, checksums, timeout
    )
    images_path, labels_path = found[images_stem], found[labels_stem]
    images = read_idx(
        images_path,
        dtype=np.uint8,
        ndim=3,
        sha256=_checksum(checksums, images_stem) if verify else None,
    )
    labels = read_idx(
        labels_path,
        dtype=np.uint8,
        ndim=1,
        sha256=_checksum(checksums, labels_stem) if verify else None,
    )
    if images.shape[1:] != (28, 28):
        raise ValueError(
            f"{images_path}: MNIST images must be 28 x 28; the file holds "
            f"{' x '.join(map(str, images.shape[1:]))} images"
        )
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"MNIST {split!r} split: {images_path} holds {images.shape[0]} images but "
            f"{labels_path} holds {labels.shape[0]} labels"
        )
    if labels.size and labels.max() > 9:
        raise ValueError(f"{labels_path}: MNIST labels must be in 0..9; found {int(labels.max())}")
    x = torch.from_numpy(images)
    if dtype.is_floating_point:
        x = x.to(dtype).div_(255)
    return MNIST(x, torch.from_numpy(labels).to(torch.int64))
