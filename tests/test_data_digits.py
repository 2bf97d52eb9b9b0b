"""scikit-learn's bundled 8×8 digits: the loader, the VAE data set, and the offline hint."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from varbayes.cli import main
from varbayes.data import DIGITS_TEST_SIZE, DataNotFoundError, load_digits
from varbayes.vae.config import VAEConfig
from varbayes.vae.data import OFFLINE_HINT, load_test_data, load_vae_data

sklearn_datasets = pytest.importorskip("sklearn.datasets")


def test_digits_splits_partition_sklearn_images_scaled_to_unit_interval():
    """train + test are a partition of sklearn's 1,797 images, each divided by 16, labels kept."""
    bunch = sklearn_datasets.load_digits()
    train, test = load_digits("train"), load_digits("test")
    assert train.images.shape == (1500, 8, 8) and test.images.shape == (DIGITS_TEST_SIZE, 8, 8)
    assert train.images.dtype == torch.float32 and train.labels.dtype == torch.int64
    both = torch.cat([train.images, test.images]).reshape(-1, 64).double().numpy()
    labels = torch.cat([train.labels, test.labels]).numpy()
    ref = bunch.data / 16.0
    # Sort rows (with their label) lexicographically: equal as multisets, none lost or repeated.
    key = np.column_stack([both, labels])
    ref_key = np.column_stack([ref, bunch.target])
    order, ref_order = np.lexsort(key.T[::-1]), np.lexsort(ref_key.T[::-1])
    np.testing.assert_allclose(key[order], ref_key[ref_order], atol=1e-7)
    assert 0.0 == both.min() and both.max() == 1.0
    all_ = load_digits("all", dtype=torch.float64)
    np.testing.assert_array_equal(all_.images.reshape(-1, 64).numpy(), ref)


def test_digits_split_is_the_same_on_every_call():
    """The split comes from a fixed seed, not the global RNG."""
    torch.manual_seed(1)
    a = load_digits("test").labels
    torch.manual_seed(2)
    assert torch.equal(a, load_digits("test").labels)


def test_load_digits_rejects_bad_arguments():
    with pytest.raises(ValueError, match="split must be one of"):
        load_digits("valid")
    with pytest.raises(ValueError, match="dtype must be a floating"):
        load_digits("train", dtype=torch.uint8)


def test_missing_sklearn_names_the_extra(monkeypatch):
    """Without scikit-learn the loader says which extra to install (a DataNotFoundError)."""
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(DataNotFoundError, match=r"varbayes\[sklearn\]"):
        load_digits()


def test_digits_config_needs_8x8_images_and_for_dataset_fills_defaults():
    with pytest.raises(ValueError, match=r"image_shape must be \(8, 8\) for dataset='digits'"):
        VAEConfig(dataset="digits")
    cfg = VAEConfig.for_dataset("digits")
    assert cfg.image_shape == (8, 8) and cfg.val_size == 150 and cfg.epochs == 100
    assert cfg.dynamic_binarization
    assert VAEConfig.for_dataset("digits", epochs=3).epochs == 3
    assert VAEConfig.for_dataset("mnist") == VAEConfig()


def test_vae_data_for_digits_holds_out_validation_and_binarizes_evaluation_images():
    cfg = VAEConfig.for_dataset("digits", val_size=100)
    data = load_vae_data(cfg)
    assert data.train.shape == (1400, 64) and data.val.shape == (100, 64)
    assert data.test.shape == (DIGITS_TEST_SIZE, 64) and data.test_labels.shape == (297,)
    assert set(data.val.unique().tolist()) == {0.0, 1.0}  # binarized once for evaluation
    assert len(data.train.unique()) == 17  # grey levels 0/16 .. 16/16, binarized per batch
    x, labels = load_test_data(cfg, test_size=10)
    assert torch.equal(x, data.test[:10]) and torch.equal(labels, data.test_labels[:10])
    with pytest.raises(ValueError, match="val_size must be smaller than the 1500"):
        load_vae_data(cfg.replace(val_size=1500))


def test_cli_trains_and_evaluates_on_digits(tmp_path, capsys):
    """`vae train --dataset digits` runs offline end to end; eval reads the digits test split."""
    run = tmp_path / "run"
    args = ["vae", "train", "--dataset", "digits", "--epochs", "2", "--hidden", "32"]
    assert main([*args, "--out", str(run), "--no-progress", "--no-plot"]) == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["dataset"] == "digits" and saved["image_shape"] == [8, 8]
    assert main(["vae", "eval", str(run), "--k", "4", "--no-progress"]) == 0
    res = json.loads((run / "eval.json").read_text())
    assert res["n"] == DIGITS_TEST_SIZE and res["nll"] > 0
    capsys.readouterr()


def test_missing_mnist_suggests_digits(tmp_path, monkeypatch, capsys):
    """Offline (all mirrors fail), `vae train` exits 2 with a message naming --dataset digits."""
    import varbayes.data.mnist as mnist_module
    from varbayes.data.download import DownloadError

    def offline(urls, *args, **kwargs):
        raise DownloadError("offline", [(u, "network unreachable") for u in urls])

    monkeypatch.setattr(mnist_module, "download_file", offline)
    monkeypatch.setenv("VARBAYES_DATA", str(tmp_path / "empty"))
    code = main(["vae", "train", "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "MNIST files not found" in err and OFFLINE_HINT in err
    assert "varbayes vae train --dataset digits" in err
