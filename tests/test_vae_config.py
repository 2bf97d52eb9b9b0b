"""VAEConfig: JSON round trip and one clear error per bad field."""

from __future__ import annotations

import pytest

from varbayes.vae import VAEConfig


def test_json_round_trip_preserves_every_field(tmp_path):
    """save → load and to_json → from_json give an equal config (tuples kept as tuples)."""
    cfg = VAEConfig(
        latent_dim=7,
        hidden=(30, 20),
        likelihood="gaussian",
        learn_std=True,
        objective="iwae",
        num_samples=5,
        train_size=100,
        dataset="binarized-mnist",
        architecture="conv",
        precision="bf16-mixed",
    )
    assert VAEConfig.from_json(cfg.to_json()) == cfg
    path = cfg.save(tmp_path / "c.json")
    back = VAEConfig.load(path)
    assert back == cfg and isinstance(back.hidden, tuple)


def test_a_config_saved_before_precision_existed_loads_as_fp32():
    """Runs saved before the ``precision`` field keep training in float32 on resume."""
    old = VAEConfig().to_dict()
    del old["precision"]
    assert VAEConfig.from_dict(old).precision == "fp32"


def test_binarization_default_depends_on_data_and_likelihood():
    """auto binarization is dynamic only for grey MNIST with a Bernoulli decoder."""
    assert VAEConfig().dynamic_binarization
    assert not VAEConfig(likelihood="gaussian").dynamic_binarization
    assert not VAEConfig(dataset="binarized-mnist").dynamic_binarization
    assert not VAEConfig(binarize="none").dynamic_binarization


BAD = [
    ("latent_dim", 0, ValueError),
    ("latent_dim", 2.5, TypeError),
    ("architecture", "rnn", ValueError),
    ("hidden", (0,), ValueError),
    ("conv_channels", (), ValueError),
    ("activation", "swish", ValueError),
    ("likelihood", "poisson", ValueError),
    ("gaussian_std", -1.0, ValueError),
    ("learn_std", "yes", TypeError),
    ("image_shape", (28,), ValueError),
    ("objective", "vimco", ValueError),
    ("kl", "exact", ValueError),
    ("num_samples", 0, ValueError),
    ("beta", float("nan"), ValueError),
    ("warmup_epochs", -1, ValueError),
    ("dataset", "cifar", ValueError),
    ("binarize", "static", ValueError),
    ("val_size", -1, ValueError),
    ("train_size", 0, ValueError),
    ("epochs", 0, ValueError),
    ("batch_size", 0, ValueError),
    ("lr", 0.0, ValueError),
    ("lr_schedule", "cosine", ValueError),
    ("precision", "fp16", ValueError),
    ("seed", -3, ValueError),
]


@pytest.mark.parametrize(("name", "value", "error"), BAD)
def test_each_bad_field_raises_naming_it(name, value, error):
    """A bad value of each field raises ValueError/TypeError whose message starts with its name."""
    with pytest.raises(error, match=f"^{name} must"):
        VAEConfig(**{name: value})


def test_combination_errors_name_the_fields():
    """Conv with odd image size, IWAE with β≠1, dynamic binarization of non-Bernoulli data."""
    with pytest.raises(ValueError, match="image_shape must have height and width divisible by 4"):
        VAEConfig(architecture="conv", image_shape=(6, 6))
    with pytest.raises(ValueError, match="objective='iwae' .* beta=0.5"):
        VAEConfig(objective="iwae", beta=0.5)
    with pytest.raises(ValueError, match="binarize='dynamic' needs likelihood='bernoulli'"):
        VAEConfig(binarize="dynamic", likelihood="gaussian")
    with pytest.raises(ValueError, match="binarize='dynamic' applies to dataset='mnist'"):
        VAEConfig(binarize="dynamic", dataset="binarized-mnist")


def test_unknown_keys_bad_json_and_missing_file(tmp_path):
    """Unknown fields, invalid JSON, a non-object and a missing file each raise clearly."""
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['latent'\]"):
        VAEConfig.from_dict({"latent": 2})
    with pytest.raises(ValueError, match="config is not valid JSON"):
        VAEConfig.from_json("{")
    with pytest.raises(TypeError, match="config must be a JSON object"):
        VAEConfig.from_json("[1]")
    with pytest.raises(FileNotFoundError, match="config file .* does not exist"):
        VAEConfig.load(tmp_path / "none.json")


def test_burda_schedule_epochs_and_rates():
    """3^i epochs at lr·10^(−i/7), i = 0..7: 3,280 epochs, then the last rate stays."""
    cfg = VAEConfig(lr=1e-3, lr_schedule="burda")
    rates = [cfg.learning_rate(e) for e in range(3300)]
    for i in range(8):
        start = sum(3**j for j in range(i))
        assert rates[start : start + 3**i] == [pytest.approx(1e-3 * 10 ** (-i / 7))] * 3**i
    assert rates[3280:] == [pytest.approx(1e-4)] * 20
    assert VAEConfig(lr=0.01).learning_rate(500) == 0.01
