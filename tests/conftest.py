import os

import matplotlib
import pytest

matplotlib.use("Agg")


@pytest.fixture
def mnist_root():
    """Directory holding the real MNIST IDX files ($VARBAYES_DATA/mnist); skip when absent."""
    root = os.environ.get("VARBAYES_DATA")
    path = os.path.join(root, "mnist") if root else None
    if not path or not os.path.isdir(path):
        pytest.skip("real MNIST not available: set VARBAYES_DATA to the folder holding mnist/")
    return path
