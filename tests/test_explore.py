"""``varbayes vae explore``: what the page embeds, checked without a browser.

The browser half (the JavaScript forward pass, pointer, clicks, frame rate) is in
tests/browser/test_explore_page.py. Here the oracle is a NumPy forward pass over the
weights read back from the page's JSON, against torch's decoder.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from explore_helpers import (
    digits_test_images,
    page_for,
    page_payload,
    random_vae,
    torch_mean_image,
    unb64,
)
from scipy.special import erf, expit

from varbayes.cli import main
from varbayes.vae import VAE, VAEConfig
from varbayes.vae.checkpoint import save_checkpoint
from varbayes.vae.explore import explore_data, write_explore

pytest.importorskip("sklearn")

NUMPY_ACTIVATIONS = {
    "relu": lambda v: np.maximum(v, 0),
    "elu": lambda v: np.where(v > 0, v, np.expm1(np.minimum(v, 0))),
    "tanh": np.tanh,
    "softplus": lambda v: np.where(v > 20, v, np.log1p(np.exp(np.minimum(v, 20)))),
    "leaky_relu": lambda v: np.where(v > 0, v, 0.01 * v),
    "gelu": lambda v: 0.5 * v * (1 + erf(v / np.sqrt(2))),
}


def numpy_decode(payload: dict, z: np.ndarray) -> np.ndarray:
    """E[x|z] from the page's own JSON: the forward pass the JavaScript runs, in NumPy."""
    act = NUMPY_ACTIVATIONS[payload["activation"]]
    h = np.asarray(z, dtype=np.float64)
    for k, layer in enumerate(payload["layers"]):
        W = unb64(layer["W"], "f4").reshape(layer["out"], layer["in"]).astype(np.float64)
        h = W @ h + unb64(layer["b"], "f4")
        h = expit(h) if k == len(payload["layers"]) - 1 else act(h)
    return h


@pytest.mark.parametrize("activation", sorted(NUMPY_ACTIVATIONS))
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_embedded_decoder_reproduces_torch(activation, likelihood):
    """Weights read back from the page give torch's E[x|z] (NumPy forward pass, 1e-6)."""
    model = random_vae(
        1, image_shape=(8, 8), hidden=(16, 12), latent_dim=3, activation=activation,
        likelihood=likelihood,
    )  # fmt: skip
    x, labels = digits_test_images(40)
    payload = page_payload(page_for(model, x, labels))
    assert payload["activation"] == activation and payload["link"] == "sigmoid"
    assert [(lay["in"], lay["out"]) for lay in payload["layers"]] == [(3, 12), (12, 16), (16, 64)]
    g = np.random.default_rng(0)
    for z in g.normal(0, 2, (5, 3)):
        np.testing.assert_allclose(numpy_decode(payload, z), torch_mean_image(model, z), atol=1e-6)


def test_embedded_points_are_the_posterior_means_labels_and_images():
    model = random_vae(2, image_shape=(8, 8), hidden=(16,), latent_dim=2)
    x, labels = digits_test_images(50)
    payload = page_payload(page_for(model, x, labels))
    with torch.no_grad():
        mu = model.encode(x).mean.numpy()
    np.testing.assert_allclose(unb64(payload["means"], "f4").reshape(50, 2), mu, atol=1e-6)
    np.testing.assert_array_equal(unb64(payload["labels"], "u1"), labels.numpy())
    np.testing.assert_array_equal(
        unb64(payload["images"], "u1").reshape(50, 64), np.round(x.numpy() * 255)
    )
    assert payload["center"] == [0.0, 0.0] and payload["axes"] == [[1.0, 0.0], [0.0, 1.0]]
    assert payload["extent"] >= 3.0 and payload["extent"] >= np.abs(mu).max()


def test_plane_of_a_larger_latent_is_spanned_by_the_first_two_principal_axes():
    """L = 5: the plane's centre and axes equal scikit-learn's PCA of the means (up to sign)."""
    from sklearn.decomposition import PCA

    model = random_vae(3, image_shape=(8, 8), hidden=(16,), latent_dim=5)
    x, labels = digits_test_images(80)
    data = explore_data(model, x, labels)
    with torch.no_grad():
        mu = model.encode(x).mean.double().numpy()
    pca = PCA(n_components=2).fit(mu)
    np.testing.assert_allclose(data.center, pca.mean_, atol=1e-6)
    for axis, ref in zip(data.axes, pca.components_, strict=True):
        assert abs(abs(float(axis @ ref)) - 1) < 1e-6
    coords = (mu - data.center) @ data.axes.T
    assert data.extent >= np.abs(coords).max()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (dict(architecture="conv", image_shape=(8, 8), hidden=(16,)), "one-layer MLP decoder"),
        (dict(likelihood="continuous-bernoulli", image_shape=(8, 8)), "likelihood must be one of"),
        (
            dict(stochastic_layers=2, kl="mc", image_shape=(8, 8), hidden=(16,)),
            "one stochastic layer; this run has stochastic_layers=2",
        ),
    ],
)
def test_page_refuses_what_it_cannot_draw(config, message):
    model = VAE(VAEConfig(**config))
    x, _ = digits_test_images(4)
    with pytest.raises(ValueError, match=message):
        explore_data(model, x)


def test_page_draws_the_decoder_of_a_vampprior_vae():
    """The VampPrior changes p(z), not p(x|z): the page embeds the same MLP decoder."""
    model = random_vae(7, image_shape=(8, 8), hidden=(16,), prior="vampprior", kl="mc",
                       num_pseudo_inputs=5)  # fmt: skip
    x, labels = digits_test_images(20)
    payload = page_payload(page_for(model, x, labels))
    z = np.array([0.3, -1.2])
    np.testing.assert_allclose(numpy_decode(payload, z), torch_mean_image(model, z), atol=1e-6)


def test_page_refuses_a_decoder_it_does_not_know():
    """A decoder that is not varbayes's MLP (e.g. a deeper hierarchy) is refused by name."""
    cfg = VAEConfig(image_shape=(8, 8), hidden=(16,))
    model = VAE(cfg, encoder=VAE(cfg).encoder, decoder=torch.nn.Linear(2, 64))
    with pytest.raises(ValueError, match="decoder Linear"):
        explore_data(model, digits_test_images(4)[0])


def test_labels_must_match_the_images():
    model = random_vae(0, image_shape=(8, 8), hidden=(8,))
    x, labels = digits_test_images(10)
    with pytest.raises(ValueError, match=r"labels must have shape \(10,\)"):
        explore_data(model, x, labels[:5])


def _run(tmp_path, **config):
    model = random_vae(0, **VAEConfig.for_dataset("digits", hidden=(16,), **config).to_dict())
    run = tmp_path / "run"
    save_checkpoint(run, "epoch-0001", model, {"epoch": 1})
    return run


def test_cli_writes_one_self_contained_page(tmp_path, capsys):
    """`vae explore RUN` writes RUN/explore.html: no external resource, data embedded."""
    run = _run(tmp_path)
    assert main(["vae", "explore", str(run), "--test-size", "30"]) == 0
    assert "explore.html" in capsys.readouterr().out
    html = (run / "explore.html").read_text()
    assert "http://" not in html and "https://" not in html
    assert " src=" not in html and '<link rel="stylesheet"' not in html
    payload = page_payload(html)
    assert payload["n"] == 30 and payload["imageShape"] == [8, 8]
    out = tmp_path / "elsewhere.html"
    assert main(["vae", "explore", str(run), "--out", str(out), "--test-size", "5"]) == 0
    assert page_payload(out.read_text())["n"] == 5


def test_cli_refuses_a_conv_run_in_one_line_and_writes_nothing(tmp_path, capsys):
    run = _run(tmp_path, architecture="conv")
    assert main(["vae", "explore", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "architecture='conv'" in err and "--arch mlp" in err
    assert not (run / "explore.html").exists()


def test_write_explore_leaves_nothing_on_failure(tmp_path):
    run = _run(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_explore(run, tmp_path / "missing" / "explore.html")
    assert not list(tmp_path.glob("**/*.part-*"))
    with pytest.raises(ValueError, match="test_size"):
        write_explore(run, test_size=0)
