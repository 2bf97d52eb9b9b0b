"""load_mnist on local files: small synthetic files written by the tests, and real MNIST."""

import gzip
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from varbayes.data import (
    MNIST_FILES,
    MNIST_SHA256,
    DataNotFoundError,
    load_mnist,
    mnist_dir,
    write_idx,
)


def _write_split(root, split, n=5, *, seed=0, gz=True, labels=None, image_size=28):
    """Write a synthetic split; return (images, labels, checksums of both files)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, image_size, image_size), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8) if labels is None else labels
    checksums = {}
    for stem, array in zip(MNIST_FILES[split], (images, labels), strict=True):
        path = write_idx(Path(root) / (stem + (".gz" if gz else "")), array)
        raw = path.read_bytes()
        checksums[stem] = hashlib.sha256(gzip.decompress(raw) if gz else raw).hexdigest()
    return images, labels, checksums


@pytest.mark.parametrize("gz", [True, False])
def test_load_local_files(tmp_path, gz):
    """Gzipped or raw files in root load as uint8 (N, 28, 28) images and int64 labels."""
    images, labels, checksums = _write_split(tmp_path, "train", gz=gz)
    data = load_mnist("train", root=tmp_path, download=False, checksums=checksums)
    assert data.images.dtype == torch.uint8 and data.images.shape == (5, 28, 28)
    assert data.labels.dtype == torch.int64 and data.labels.shape == (5,)
    np.testing.assert_array_equal(data.images.numpy(), images)
    np.testing.assert_array_equal(data.labels.numpy(), labels)
    images2, labels2 = data  # a plain (images, labels) pair too
    assert images2 is data.images and labels2 is data.labels


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_float_dtype_scales_to_unit_interval(tmp_path, dtype):
    """A floating dtype gives grey levels / 255 in [0, 1]."""
    images, _, checksums = _write_split(tmp_path, "test")
    x = load_mnist("test", root=tmp_path, download=False, dtype=dtype, checksums=checksums).images
    assert x.dtype == dtype
    torch.testing.assert_close(x, torch.from_numpy(images).to(dtype) / 255)


def test_root_resolution_order(tmp_path, monkeypatch):
    """root, else $VARBAYES_DATA/mnist, else ~/.cache/varbayes/mnist."""
    monkeypatch.setenv("VARBAYES_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert mnist_dir(tmp_path / "r") == tmp_path / "r"
    assert mnist_dir() == tmp_path / "env" / "mnist"
    monkeypatch.delenv("VARBAYES_DATA")
    assert mnist_dir() == tmp_path / "home" / ".cache" / "varbayes" / "mnist"
    monkeypatch.setenv("VARBAYES_DATA", "")  # empty counts as unset
    assert mnist_dir() == tmp_path / "home" / ".cache" / "varbayes" / "mnist"


def test_load_from_varbayes_data(tmp_path, monkeypatch):
    """Without root, files are read from $VARBAYES_DATA/mnist."""
    images, _, checksums = _write_split(tmp_path / "mnist", "test", n=2)
    monkeypatch.setenv("VARBAYES_DATA", str(tmp_path))
    data = load_mnist("test", download=False, checksums=checksums)
    np.testing.assert_array_equal(data.images.numpy(), images)


def test_missing_files_without_download(tmp_path):
    """download=False with no files: DataNotFoundError naming the directory and files."""
    with pytest.raises(DataNotFoundError, match=r"t10k-images-idx3-ubyte[\s\S]*download=False"):
        load_mnist("test", root=tmp_path, download=False)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("split", ["valid", "training", None])
def test_bad_split_is_rejected(tmp_path, split):
    """An unknown split is a ValueError naming split."""
    with pytest.raises(ValueError, match="split must be one of"):
        load_mnist(split, root=tmp_path, download=False)


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, "float32"])
def test_bad_dtype_is_rejected(tmp_path, dtype):
    """dtype must be torch.uint8 or a floating torch.dtype."""
    with pytest.raises(ValueError, match="dtype must be"):
        load_mnist("test", root=tmp_path, download=False, dtype=dtype)


def test_local_file_with_wrong_checksum_is_rejected(tmp_path):
    """With verify=True (default) a local file that is not the expected one is rejected."""
    _, _, checksums = _write_split(tmp_path, "test")
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte\.gz: SHA-256 mismatch"):
        load_mnist("test", root=tmp_path, download=False)  # real MNIST checksums
    assert load_mnist("test", root=tmp_path, download=False, verify=False).images.shape[0] == 5


def test_truncated_local_file_is_rejected(tmp_path):
    """A truncated images file is a ValueError naming it, even with verify=False."""
    _write_split(tmp_path, "test")
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-100]))
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte\.gz: truncated"):
        load_mnist("test", root=tmp_path, download=False, verify=False)


def test_labels_file_in_place_of_images_is_rejected(tmp_path):
    """A labels file (magic 0x801) under the images name fails the magic check."""
    _write_split(tmp_path, "test")
    os.replace(tmp_path / "t10k-labels-idx1-ubyte.gz", tmp_path / "t10k-images-idx3-ubyte.gz")
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(5, np.uint8))
    with pytest.raises(ValueError, match=r"t10k-images.*expected 0x00000803.*found 0x00000801"):
        load_mnist("test", root=tmp_path, download=False, verify=False)


def test_count_mismatch_is_rejected(tmp_path):
    """5 images with 4 labels is a ValueError naming both files and counts."""
    _write_split(tmp_path, "train", labels=np.zeros(4, np.uint8))
    with pytest.raises(ValueError, match=r"5 images but .*train-labels-idx1-ubyte\.gz holds 4"):
        load_mnist("train", root=tmp_path, download=False, verify=False)


def test_label_out_of_range_is_rejected(tmp_path):
    """A label of 12 is a ValueError naming the labels file."""
    _write_split(tmp_path, "train", labels=np.array([0, 1, 12, 3, 4], np.uint8))
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte\.gz: .*0\.\.9; found 12"):
        load_mnist("train", root=tmp_path, download=False, verify=False)


def test_wrong_image_size_is_rejected(tmp_path):
    """16 x 16 images are a ValueError naming the images file."""
    _write_split(tmp_path, "train", image_size=16)
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte\.gz: .*28 x 28.*16 x 16"):
        load_mnist("train", root=tmp_path, download=False, verify=False)


def test_checksums_missing_an_entry_is_rejected(tmp_path):
    """A checksums mapping without an entry for a needed file names checksums."""
    _, _, checksums = _write_split(tmp_path, "train")
    checksums.pop("train-labels-idx1-ubyte")
    with pytest.raises(ValueError, match="checksums .*train-labels-idx1-ubyte"):
        load_mnist("train", root=tmp_path, download=False, checksums=checksums)


# ---- the real MNIST files ------------------------------------------------------------

# Class counts of the two splits, as published with the data set (an independent oracle).
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.parametrize(
    ("split", "n", "counts", "first"),
    [
        ("train", 60000, TRAIN_COUNTS, [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]),
        ("test", 10000, TEST_COUNTS, [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]),
    ],
)
def test_real_mnist(mnist_root, split, n, counts, first):
    """Real MNIST: N x 28 x 28 uint8 in 0..255, int64 labels with the published class counts."""
    images, labels = load_mnist(split, root=mnist_root, download=False)
    assert images.shape == (n, 28, 28) and images.dtype == torch.uint8
    assert int(images.min()) == 0 and int(images.max()) == 255
    assert labels.shape == (n,) and labels.dtype == torch.int64
    assert torch.bincount(labels, minlength=10).tolist() == counts
    assert labels[:10].tolist() == first


def test_real_mnist_as_float(mnist_root):
    """Real test images as float32 lie in [0, 1] with the mean grey level of MNIST (~0.13)."""
    x = load_mnist("test", root=mnist_root, download=False, dtype=torch.float32).images
    assert x.dtype == torch.float32 and float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert abs(float(x.mean()) - 0.1325) < 0.002


def test_real_files_match_checksum_constants(mnist_root):
    """The SHA-256 of each real file's decompressed content equals MNIST_SHA256 (and SHA256SUMS)."""
    for stem, expected in MNIST_SHA256.items():
        with gzip.open(Path(mnist_root) / (stem + ".gz"), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == expected, stem
    sums = Path(mnist_root) / "SHA256SUMS"
    if sums.is_file():
        listed = dict(line.split()[::-1] for line in sums.read_text().splitlines() if line.strip())
        assert listed == MNIST_SHA256
