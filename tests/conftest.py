import os

import matplotlib
import pytest
import torch

matplotlib.use("Agg")


@pytest.fixture
def mnist_root():
    """Directory holding the real MNIST IDX files ($VARBAYES_DATA/mnist); skip when absent."""
    root = os.environ.get("VARBAYES_DATA")
    path = os.path.join(root, "mnist") if root else None
    if not path or not os.path.isdir(path):
        pytest.skip("real MNIST not available: set VARBAYES_DATA to the folder holding mnist/")
    return path


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread per test: the tensors here are small, and on a busy 2-core
    machine an oversubscribed OpenMP pool makes every small op wait. Results do not
    depend on the thread count."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
