"""One dataclass holding everything that defines a VAE run: model, objective, data, optimiser.

The configuration is plain data (numbers, strings, tuples), saved beside every checkpoint
as JSON and read back with :meth:`VAEConfig.from_json`; a saved run can always be rebuilt
from it. Values are checked in one place (:meth:`VAEConfig.validate`, run on construction),
and each error names the field, what was expected and what was given.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from varbayes._io import atomic_write

__all__ = [
    "ACTIVATIONS",
    "ARCHITECTURES",
    "DATASETS",
    "DATASET_DEFAULTS",
    "KL_ESTIMATORS",
    "LIKELIHOODS",
    "OBJECTIVES",
    "PRECISIONS",
    "PRIORS",
    "VAEConfig",
]

ARCHITECTURES = ("mlp", "conv")
ACTIVATIONS = ("relu", "elu", "tanh", "softplus", "leaky_relu", "gelu")
LIKELIHOODS = ("bernoulli", "gaussian", "continuous-bernoulli")
OBJECTIVES = ("elbo", "iwae")
KL_ESTIMATORS = ("analytic", "mc")
PRIORS = ("standard", "vampprior")
DATASETS = ("mnist", "binarized-mnist", "digits")
DATASET_DEFAULTS: dict[str, dict] = {
    "digits": {"image_shape": (8, 8), "val_size": 150, "epochs": 100},
}
"""Per-data-set defaults that :meth:`VAEConfig.for_dataset` fills in (fields not given)."""
BINARIZATIONS = ("auto", "dynamic", "none")
LR_SCHEDULES = ("constant", "burda", "burda-scaled")
PRECISIONS = ("fp32", "bf16-mixed", "bf16-matmul")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass
class VAEConfig:
    """Everything that defines a VAE and its training run.

    Model: x (an image of ``image_shape`` = (H, W), D = H·W pixels) and a latent
    z ∈ R^L (L = ``latent_dim``) with prior p(z) = N(0, I); the encoder gives
    q(z|x) = N(μφ(x), diag σφ²(x)); the decoder gives the parameters of p(x|z)
    (``likelihood``: Bernoulli logits, Gaussian mean, continuous-Bernoulli logits).

    Fields
    ------
    latent_dim : L ≥ 1 (2 for pictures of the latent space, 20-50 for density).
    architecture : ``"mlp"`` (``hidden`` widths) or ``"conv"`` (``conv_channels``,
        then one hidden layer of ``hidden[-1]`` units; needs H and W divisible by 4).
    hidden : widths of the encoder's hidden layers; the decoder mirrors them.
    activation : one of :data:`ACTIVATIONS`.
    likelihood : ``"bernoulli"`` (x ∈ [0, 1], usually binary), ``"gaussian"``
        (N(sigmoid(out), s²), s = ``gaussian_std``, learned per pixel when
        ``learn_std``) or ``"continuous-bernoulli"`` (x ∈ [0, 1]).
    objective : ``"elbo"``: ELBO = E_q[log p(x|z)] − β·KL(q(z|x) || p(z)) with
        ``num_samples`` draws of z; ``"iwae"``: log (1/k) Σ_i p(x, z_i)/q(z_i|x) with
        k = ``num_samples`` (Burda et al. 2015).
    kl : ``"analytic"`` (closed form, ``torch.distributions.kl_divergence``; standard
        prior, one stochastic layer) or ``"mc"`` (log q(z|x) − log p(z) at the drawn z);
        None (the default): ``"analytic"`` where it exists, ``"mc"`` otherwise.
    prior : ``"standard"`` (p(z) = N(0, I)) or ``"vampprior"`` (Tomczak & Welling 2018:
        p(z) = (1/K) Σ_k q(z|u_k) with K = ``num_pseudo_inputs`` learned pseudo-inputs;
        its KL is ``"mc"``).
    stochastic_layers : 1, or 2 (Burda et al. 2015): x → ``hidden`` → z₁ (``latent_dim``)
        → ``top_hidden`` → z₂ (``top_latent_dim``), p(z₂) = N(0, I), Gaussian p(z₁|z₂)
        through the mirrored ``top_hidden``, p(x|z₁) through the mirrored ``hidden``;
        ``kl="mc"`` and the standard prior (on z₂).
    beta : weight β ≥ 0 of the KL term (β = 1: the ELBO).
    warmup_epochs : KL warm-up: β_t rises linearly from 0 to ``beta`` over this many
        epochs (0: no warm-up). ELBO objective only.
    dataset : ``"mnist"`` (grey levels in [0, 1]), ``"binarized-mnist"`` (the fixed
        .amat benchmark; train/valid/test as published) or ``"digits"`` (scikit-learn's
        bundled 8×8 digits, grey levels / 16, no download; needs ``image_shape=(8, 8)``,
        which :meth:`for_dataset` fills in).
    binarize : ``"dynamic"`` (x ~ Bernoulli(grey level) afresh for every batch),
        ``"none"`` (grey levels as they are) or ``"auto"`` (dynamic for grey-level MNIST
        or digits with a Bernoulli likelihood, none otherwise).
    val_size : images of the MNIST training split held out for validation.
    train_size : use only the first ``train_size`` training images (None: all).
    epochs, batch_size, lr, seed : Adam with learning rate ``lr`` on minibatches of
        ``batch_size``; ``seed`` fixes initial weights, data order and all noise.
    lr_schedule : ``"constant"``, or ``"burda"``: Burda et al. (2015)'s schedule, 3^i
        epochs at ``lr``·10^(−i/7) for i = 0, 1, …, 7 (3,280 epochs in all; the last
        rate is kept beyond them), or ``"burda-scaled"``: the same eight stages squeezed
        (or stretched) into ``epochs`` (stage i takes 3^i/3280 of them).
    precision : arithmetic of the training step (:mod:`varbayes.vae.precision`). ``"fp32"``:
        float32 throughout. ``"bf16-mixed"``: the encoder's and decoder's layers run in
        bfloat16 under ``torch.autocast`` and hand their outputs back as float32;
        z = μ + σ ⊙ ε, log q, the KL and the log-likelihood are float32, and so are the
        weights and Adam (the gradients reach it as float32). ``"bf16-matmul"`` (CPU
        only): every tensor stays float32, and oneDNN computes the matrix products and
        convolutions from bfloat16-rounded inputs with float32 accumulation (the CPU's
        counterpart of TF32), with no casts. Both are meant for CPUs with bfloat16
        instructions (AVX512-BF16, AMX); ``"bf16-mixed"`` also for GPUs. Measured with
        ``benchmarks/vae_throughput.py`` (784-400-20 model, batch 128): on an Intel Xeon
        with AMX ``"bf16-matmul"`` trained 1.1x the samples/s of ``"fp32"`` and
        ``"bf16-mixed"`` 1.03x; on an AMD EPYC with AVX512-BF16 ``"bf16-mixed"`` 1.3x
        (1.0-1.6x over repeated runs). Without bfloat16 instructions ``"bf16-mixed"`` may
        be slower and ``"bf16-matmul"`` keeps float32 products (the trainer warns).
        Evaluation is always float32.
    """

    latent_dim: int = 2
    architecture: str = "mlp"
    hidden: tuple[int, ...] = (512, 256)
    conv_channels: tuple[int, ...] = (32, 64)
    activation: str = "relu"
    likelihood: str = "bernoulli"
    gaussian_std: float = 0.1
    learn_std: bool = False
    image_shape: tuple[int, int] = (28, 28)
    objective: str = "elbo"
    kl: str | None = None
    prior: str = "standard"
    num_pseudo_inputs: int = 500
    stochastic_layers: int = 1
    top_hidden: tuple[int, ...] = (50, 50)
    top_latent_dim: int = 50
    num_samples: int = 1
    beta: float = 1.0
    warmup_epochs: float = 0.0
    dataset: str = "mnist"
    binarize: str = "auto"
    val_size: int = 5000
    train_size: int | None = None
    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    lr_schedule: str = "constant"
    precision: str = "fp32"
    seed: int = 0
    #: whether ``kl`` was left to its default (``replace`` then re-resolves it)
    _kl_default: bool = dataclasses.field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self):
        self.hidden = tuple(self.hidden) if isinstance(self.hidden, (list, tuple)) else self.hidden
        if isinstance(self.top_hidden, list):
            self.top_hidden = tuple(self.top_hidden)
        if isinstance(self.conv_channels, list):
            self.conv_channels = tuple(self.conv_channels)
        if isinstance(self.image_shape, list):
            self.image_shape = tuple(self.image_shape)
        self._kl_default = self.kl is None
        if self.kl is None:  # the closed form where it exists
            self.kl = "analytic" if self.analytic_kl else "mc"
        self.validate()

    # ----------------------------------------------------------------- checks
    def validate(self) -> None:
        """Raise ``ValueError``/``TypeError`` naming the first bad field."""
        _int_at_least("latent_dim", self.latent_dim, 1)
        _choice("architecture", self.architecture, ARCHITECTURES)
        _int_tuple("hidden", self.hidden, allow_empty=self.architecture == "mlp")
        _int_tuple("conv_channels", self.conv_channels, allow_empty=False)
        _choice("activation", self.activation, ACTIVATIONS)
        _choice("likelihood", self.likelihood, LIKELIHOODS)
        if not (_is_number(self.gaussian_std) and self.gaussian_std > 0):
            raise ValueError(f"gaussian_std must be a finite number > 0; got {self.gaussian_std!r}")
        if not isinstance(self.learn_std, bool):
            raise TypeError(f"learn_std must be True or False; got {self.learn_std!r}")
        if (
            not isinstance(self.image_shape, tuple)
            or len(self.image_shape) != 2
            or not all(_is_int(s) and s >= 1 for s in self.image_shape)
        ):
            raise ValueError(
                f"image_shape must be (height, width) with two integers >= 1; "
                f"got {self.image_shape!r}"
            )
        if self.architecture == "conv" and any(s % 4 for s in self.image_shape):
            raise ValueError(
                "image_shape must have height and width divisible by 4 for "
                f"architecture='conv'; got {self.image_shape!r}"
            )
        _choice("objective", self.objective, OBJECTIVES)
        _choice("kl", self.kl, KL_ESTIMATORS)
        _int_at_least("num_samples", self.num_samples, 1)
        _choice("prior", self.prior, PRIORS)
        _int_at_least("num_pseudo_inputs", self.num_pseudo_inputs, 1)
        if not _is_int(self.stochastic_layers):
            raise TypeError(f"stochastic_layers must be 1 or 2; got {self.stochastic_layers!r}")
        _choice("stochastic_layers", self.stochastic_layers, (1, 2))
        _int_tuple("top_hidden", self.top_hidden, allow_empty=True)
        _int_at_least("top_latent_dim", self.top_latent_dim, 1)
        if self.stochastic_layers == 2 and self.prior != "standard":
            raise ValueError(
                "stochastic_layers=2 puts N(0, I) on the top layer z2: it needs "
                f"prior='standard'; got prior={self.prior!r}"
            )
        if self.kl == "analytic" and not self.analytic_kl:
            raise ValueError(
                "kl='analytic' needs the standard normal prior and one stochastic layer; got "
                f"prior={self.prior!r}, stochastic_layers={self.stochastic_layers} "
                "(use kl='mc')"
            )
        if not (_is_number(self.beta) and self.beta >= 0):
            raise ValueError(f"beta must be a finite number >= 0; got {self.beta!r}")
        if not (_is_number(self.warmup_epochs) and self.warmup_epochs >= 0):
            raise ValueError(
                f"warmup_epochs must be a finite number >= 0; got {self.warmup_epochs!r}"
            )
        if self.objective == "iwae" and (self.warmup_epochs > 0 or self.beta != 1):
            raise ValueError(
                "objective='iwae' is a bound on log p(x) only with beta=1 and no warm-up; "
                f"got beta={self.beta!r}, warmup_epochs={self.warmup_epochs!r}"
            )
        _choice("dataset", self.dataset, DATASETS)
        if self.dataset == "digits" and self.image_shape != (8, 8):
            raise ValueError(
                f"image_shape must be (8, 8) for dataset='digits'; got {self.image_shape!r} "
                "(VAEConfig.for_dataset('digits') sets it)"
            )
        _choice("binarize", self.binarize, BINARIZATIONS)
        if self.binarize == "dynamic" and self.likelihood != "bernoulli":
            raise ValueError(
                "binarize='dynamic' needs likelihood='bernoulli'; got "
                f"likelihood={self.likelihood!r} (use binarize='none' or 'auto')"
            )
        if self.dataset == "binarized-mnist" and self.binarize == "dynamic":
            raise ValueError(
                "binarize='dynamic' applies to dataset='mnist'; binarized-mnist is already "
                "binary (use binarize='auto' or 'none')"
            )
        _int_at_least("val_size", self.val_size, 0)
        if self.train_size is not None:
            _int_at_least("train_size", self.train_size, 1)
        _int_at_least("epochs", self.epochs, 1)
        _int_at_least("batch_size", self.batch_size, 1)
        if not (_is_number(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0; got {self.lr!r}")
        _choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _choice("precision", self.precision, PRECISIONS)
        _int_at_least("seed", self.seed, 0)

    # ------------------------------------------------------------ derived
    @property
    def data_dim(self) -> int:
        """D = H·W, the number of pixels of one image."""
        return self.image_shape[0] * self.image_shape[1]

    @property
    def analytic_kl(self) -> bool:
        """Whether KL(q(z|x) || p(z)) has a closed form (standard prior, one layer)."""
        return self.prior == "standard" and self.stochastic_layers == 1

    @property
    def dynamic_binarization(self) -> bool:
        """Whether training draws x ~ Bernoulli(grey level) afresh for every batch."""
        if self.binarize == "auto":
            return self.dataset in ("mnist", "digits") and self.likelihood == "bernoulli"
        return self.binarize == "dynamic"

    def learning_rate(self, epoch: int) -> float:
        """The learning rate of (0-based) ``epoch`` under ``lr_schedule``."""
        if self.lr_schedule == "constant":
            return self.lr
        # burda-scaled: the same stages, on a clock of 3280 / epochs Burda epochs per epoch
        e = epoch if self.lr_schedule == "burda" else epoch * 3280 / self.epochs
        i, end = 0, 1
        while e >= end and i < 7:
            i += 1
            end += 3**i
        return self.lr * 10 ** (-i / 7)

    @classmethod
    def for_dataset(cls, dataset: str = "mnist", **fields) -> VAEConfig:
        """A config for ``dataset`` whose unspecified fields take that data set's defaults.

        :data:`DATASET_DEFAULTS` holds them (``"digits"``: 8×8 images, 150 validation
        images, 100 epochs); ``fields`` override them, and every other field keeps the
        class default.
        """
        return cls(dataset=dataset, **{**DATASET_DEFAULTS.get(dataset, {}), **fields})

    def replace(self, **changes) -> VAEConfig:
        """A copy with ``changes`` applied (and checked). A ``kl`` left to its default is
        resolved again for the copy (``VAEConfig().replace(prior="vampprior").kl`` is
        ``"mc"``); one given explicitly is kept."""
        if "kl" not in changes and self._kl_default:
            changes["kl"] = None
        return dataclasses.replace(self, **changes)

    # --------------------------------------------------------------- JSON
    def to_dict(self) -> dict:
        """Plain-data dict (tuples as lists), ready for ``json.dumps``."""
        out = {}
        for f in dataclasses.fields(self):
            if f.name.startswith("_"):
                continue
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def from_dict(cls, data: dict) -> VAEConfig:
        """Build from :meth:`to_dict` output; unknown keys raise ``ValueError`` naming them."""
        if not isinstance(data, dict):
            raise TypeError(f"config must be a JSON object (dict); got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls) if not f.name.startswith("_")}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(
                f"config has unknown field(s) {unknown}; expected a subset of {sorted(names)}"
            )
        return cls(**data)

    def to_json(self) -> str:
        """The configuration as an indented JSON string."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> VAEConfig:
        """Parse :meth:`to_json` output; invalid JSON raises ``ValueError``."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"config is not valid JSON: {exc}") from exc
        return cls.from_dict(data)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the JSON to ``path`` atomically; return the path."""
        with atomic_write(path) as f:
            f.write((self.to_json() + "\n").encode())
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> VAEConfig:
        """Read a configuration written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {str(path)!r} does not exist")
        return cls.from_json(path.read_text())


def _int_at_least(name: str, value, minimum: int) -> None:
    if not _is_int(value):
        raise TypeError(f"{name} must be an integer >= {minimum}; got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")


def _choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}; got {value!r}")


def _int_tuple(name: str, value, *, allow_empty: bool) -> None:
    if not isinstance(value, tuple) or not all(_is_int(v) and v >= 1 for v in value):
        raise ValueError(f"{name} must be a sequence of integers >= 1; got {value!r}")
    if not value and not allow_empty:
        raise ValueError(f"{name} must not be empty; got {value!r}")
