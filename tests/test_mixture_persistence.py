"""Saved mixtures: atomic saves, and damaged, edited or inconsistent files rejected on load
with one ValueError naming the file (never a raw SafetensorError, IndexError or KeyError)."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from varbayes.mixture import (
    BayesianGaussianMixture,
    GaussianMixture,
    VariationalGaussianMixture,
    load,
)
from varbayes.mixture import io as mio

COV_TYPES = ["full", "tied", "diag", "spherical"]


def data(seed=0, n=200, d=3):
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(size=(n, d)), rng.normal(size=(n, d)) + 5.0])


@pytest.fixture
def saved(tmp_path):
    """A saved 2-component full-covariance GaussianMixture and its data."""
    x = data()
    gm = GaussianMixture(2, random_state=0).fit(x)
    gm.save(tmp_path / "m")
    return tmp_path / "m", gm, x


def edit_config(path, **changes):
    cfg = json.loads((path / "config.json").read_text())
    for k, v in changes.items():
        if k.startswith("params."):
            cfg["params"][k.removeprefix("params.")] = v
        else:
            cfg[k] = v
    (path / "config.json").write_text(json.dumps(cfg))


def edit_weights(path, **changes):
    t = load_file(path / "model.safetensors")
    for k, v in changes.items():
        if v is None:
            del t[k]
        else:
            t[k] = v
    save_file(t, path / "model.safetensors")


@pytest.mark.parametrize("cls", [GaussianMixture, VariationalGaussianMixture])
@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_round_trip_every_class_and_covariance_type(tmp_path, cls, cov_type):
    """Every saved model reloads with identical scores, attributes and trace."""
    x = data(1)
    m = cls(3, covariance_type=cov_type, random_state=0, max_iter=30).fit(x)
    m.save(tmp_path / "m")
    back = load(tmp_path / "m")
    assert type(back) is cls
    np.testing.assert_array_equal(back.score_samples(x), m.score_samples(x))
    np.testing.assert_array_equal(back.means_, m.means_)
    assert back.lower_bounds_ == m.lower_bounds_ and back.converged_ == m.converged_
    assert sorted(os.listdir(tmp_path)) == ["m"]  # no temporary directory left


def test_numpy_scalar_hyper_parameters_save_and_load(tmp_path):
    """n_components=np.int64(2), tol=np.float32(1e-3): fit, save and load like Python ones."""
    x = data(2)
    gm = GaussianMixture(np.int64(2), tol=np.float32(1e-3), max_iter=np.int32(50), random_state=0)
    gm.fit(x).save(tmp_path / "m")
    back = load(tmp_path / "m")
    assert back.n_components == 2 and isinstance(back.n_components, int)
    np.testing.assert_array_equal(back.predict(x), gm.predict(x))


def test_torch_fitted_model_reloads_with_tensor_attributes(tmp_path):
    x = torch.as_tensor(data(3), dtype=torch.float32)
    gm = GaussianMixture(2, random_state=0).fit(x)
    gm.save(tmp_path / "m")
    back = load(tmp_path / "m")
    assert isinstance(back.means_, torch.Tensor) and back.means_.dtype == torch.float32
    assert torch.equal(back.means_, gm.means_)


def test_save_replaces_a_saved_model_as_a_whole(saved):
    """Saving over a saved model leaves exactly the new model (config and weights agree)."""
    path, _, x = saved
    new = GaussianMixture(3, covariance_type="diag", random_state=1).fit(x)
    new.save(path)
    back = load(path)
    assert back.n_components == 3 and back.covariance_type == "diag"
    np.testing.assert_array_equal(back.score_samples(x), new.score_samples(x))
    assert sorted(os.listdir(path.parent)) == ["m"]


def test_failed_save_keeps_the_old_model_and_leaves_nothing(saved, monkeypatch):
    """A failure while writing (here: the weights writer raises) leaves the previous model
    loadable and unchanged, and no temporary directory."""
    path, gm, x = saved
    before = {p: (path / p).read_bytes() for p in ("config.json", "model.safetensors")}

    def broken(tensors, filename):
        with open(filename, "wb") as fh:
            fh.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(mio, "save_file", broken)
    new = GaussianMixture(3, random_state=1).fit(x)
    with pytest.raises(OSError, match="disk full"):
        new.save(path)
    assert {p: (path / p).read_bytes() for p in before} == before
    assert sorted(os.listdir(path.parent)) == ["m"]
    np.testing.assert_array_equal(load(path).predict(x), gm.predict(x))


def test_save_refuses_a_directory_with_other_files(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.txt").write_text("mine")
    gm = GaussianMixture(2, random_state=0).fit(data())
    with pytest.raises(ValueError, match="holds files other than a saved model"):
        gm.save(tmp_path / "d")
    assert os.listdir(tmp_path / "d") == ["notes.txt"]


def test_truncated_weights_name_the_file(saved):
    path, _, _ = saved
    raw = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=r"model.safetensors' is not a readable safetensors file"):
        load(path)
    (path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match=r"model.safetensors' is not a readable safetensors file"):
        load(path)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"n_features_in_": "three"}, "'n_features_in_' must be an integer"),
        ({"n_iter_": -1}, "'n_iter_' must be an integer >= 0"),
        ({"converged_": "yes"}, "'converged_' must be true or false"),
        ({"lower_bounds_": [1.0, "x"]}, "'lower_bounds_' must be a list of finite numbers"),
        ({"params": [1, 2]}, "'params' must be an object"),
        ({"params.n_components": 0}, r"invalid hyper-parameters .*n_components"),
        ({"params.covariance_type": "banded"}, r"invalid hyper-parameters .*covariance_type"),
        ({"params.tol": "small"}, r"invalid hyper-parameters .*tol"),
        ({"params.n_clusters": 3}, r"invalid hyper-parameters .*n_clusters"),
        ({"class": "os.system"}, "names class 'os.system'"),
        ({"format_version": 99}, "format_version 99"),
    ],
)
def test_edited_config_names_the_file(saved, changes, match):
    path, _, _ = saved
    edit_config(path, **changes)
    with pytest.raises(ValueError, match=r"config.json'.*" + match):
        load(path)


def test_missing_config_key_is_not_a_key_error(saved):
    path, _, _ = saved
    cfg = json.loads((path / "config.json").read_text())
    del cfg["n_features_in_"]
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="config.json'.*n_features_in_"):
        load(path)
    (path / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="config.json' must hold a JSON object"):
        load(path)


def test_config_and_weights_that_disagree_are_refused(saved):
    """K=3 weights under a K=2 config (the issue's case), D and covariance type edits."""
    path, _, x = saved
    tmp = path.parent / "k3"
    GaussianMixture(3, random_state=0).fit(x).save(tmp)
    (tmp / "config.json").write_bytes((path / "config.json").read_bytes())  # K=2 config
    with pytest.raises(
        ValueError, match=r"does not match .*config.json.*has shape \(3, 3\); expected \(2, 3\)"
    ):
        load(tmp)
    edit_config(path, n_features_in_=2)
    with pytest.raises(
        ValueError, match=r"does not match.*'shift' has shape \(3,\); expected \(2,\)"
    ):
        load(path)
    edit_config(path, n_features_in_=3, **{"params.covariance_type": "diag"})
    with pytest.raises(ValueError, match="does not match.*covariance_type='diag'"):
        load(path)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"state.weights": None}, "state tensors"),
        ({"state.bogus": torch.zeros(2, dtype=torch.float64)}, "state tensors"),
        ({"state.weights": torch.tensor([0.5, np.nan], dtype=torch.float64)}, "NaN or infinite"),
        ({"state.means": torch.full((2, 3), np.inf, dtype=torch.float64)}, "NaN or infinite"),
        ({"state.weights": torch.tensor([1, 0], dtype=torch.int64)}, "state dtypes"),
        ({"state.cov": torch.zeros(2, 3, dtype=torch.float64)}, r"'cov' has shape \(2, 3\)"),
    ],
)
def test_edited_weights_are_refused(saved, changes, match):
    path, _, _ = saved
    edit_weights(path, **changes)
    with pytest.raises(ValueError, match=r"model.safetensors' does not match.*" + match):
        load(path)


def test_variational_and_alias_classes_load_as_saved(tmp_path):
    x = data(4)
    b = BayesianGaussianMixture(
        2, random_state=0, weight_concentration_prior_type="dirichlet_distribution"
    )
    b.fit(x).save(tmp_path / "b")
    back = load(tmp_path / "b")
    assert type(back) is BayesianGaussianMixture
    np.testing.assert_array_equal(back.weight_concentration_, b.weight_concentration_)
    edit_weights(tmp_path / "b", **{"state.wc": torch.ones(2, 2, dtype=torch.float64)})
    with pytest.raises(ValueError, match=r"'wc' has shape \(2, 2\); expected \(2,\)"):
        load(tmp_path / "b")
    with pytest.raises(ValueError, match="holds a BayesianGaussianMixture, not a GaussianMixture"):
        GaussianMixture.load(tmp_path / "b")


FORMAT_V1 = Path(__file__).parent / "data" / "mixture_format_v1"


@pytest.mark.parametrize(
    "name", ["gaussian_full", "variational_diag_dp", "variational_tied_dirichlet"]
)
def test_models_saved_by_format_version_1_still_load(name):
    """Models written by the code before the state became named records (commit 5b86402,
    tests/data/mixture_format_v1) load and reproduce that code's own scores and
    parameters (stored beside them in expected.json) to 1e-12."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(60, 2)), rng.normal(size=(40, 2)) * 0.5 + 4.0])
    expected = json.loads((FORMAT_V1 / "expected.json").read_text())["expected"][name]
    back = load(FORMAT_V1 / name)
    assert type(back) is (
        GaussianMixture if name.startswith("gaussian") else VariationalGaussianMixture
    )
    np.testing.assert_allclose(back.score_samples(x[::10]), expected["score_samples"], rtol=1e-12)
    for attr in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(getattr(back, attr), expected[attr], rtol=1e-12, atol=1e-300)
    # the reloaded state keeps working: a warm-started fit continues from it
    back.set_params(warm_start=True, max_iter=5).fit(x)
    assert back.n_iter_ >= 1 and np.isfinite(back.lower_bound_)
