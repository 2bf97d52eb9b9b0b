"""Data sets: MNIST (IDX files, verified download), binarization, binarized MNIST (.amat),
scikit-learn's bundled 8×8 digits (no download).

Data live in one directory per data set: the ``root`` argument of a loader, else
``$VARBAYES_DATA/<name>`` (``mnist``, ``binarized_mnist``), else
``~/.cache/varbayes/<name>``.
"""

from varbayes.data._files import DataNotFoundError
from varbayes.data.amat import (
    BINARIZED_MNIST_ROWS,
    BINARIZED_MNIST_URL,
    load_binarized_mnist,
    read_amat,
)
from varbayes.data.binarize import dynamic_binarize, static_binarize
from varbayes.data.digits import DIGITS_SIZE, DIGITS_TEST_SIZE, Digits, load_digits
from varbayes.data.download import DownloadError, download_file, sha256_of_file
from varbayes.data.idx import idx_magic, read_idx, write_idx
from varbayes.data.mnist import (
    MNIST,
    MNIST_FILES,
    MNIST_MIRRORS,
    MNIST_SHA256,
    download_mnist,
    load_mnist,
    mnist_dir,
)

__all__ = [
    "BINARIZED_MNIST_ROWS",
    "BINARIZED_MNIST_URL",
    "DIGITS_SIZE",
    "DIGITS_TEST_SIZE",
    "MNIST",
    "MNIST_FILES",
    "MNIST_MIRRORS",
    "MNIST_SHA256",
    "DataNotFoundError",
    "Digits",
    "DownloadError",
    "download_file",
    "download_mnist",
    "dynamic_binarize",
    "idx_magic",
    "load_digits",
    "load_binarized_mnist",
    "load_mnist",
    "mnist_dir",
    "read_amat",
    "read_idx",
    "sha256_of_file",
    "static_binarize",
    "write_idx",
]
