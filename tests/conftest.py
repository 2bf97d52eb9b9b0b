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


@pytest.fixture(scope="session")
def quick_tour(tmp_path_factory):
    """One `--quick` tour (all six sections), reusing a small VAE trained on the digits.

    Shared by tests/test_tour.py (each number against an independent computation) and
    tests/browser/test_tour_report.py (the report in a browser). About a minute.
    """
    pytest.importorskip("sklearn")
    from varbayes.tour import TourSettings, run_tour
    from varbayes.vae import VAEConfig
    from varbayes.vae.train import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = tmp_path_factory.mktemp("tour-vae")
        cfg = VAEConfig.for_dataset("digits", hidden=(32,), epochs=5, batch_size=64)
        train(cfg, run, progress=False)
        out = tmp_path_factory.mktemp("tour")
        result = run_tour(TourSettings(out=out, quick=True, vae_run=run, progress=False))
    finally:
        torch.set_num_threads(threads)
    return result
