"""Binarizing grey-level images into 0/1 pixels by Bernoulli draws.

A grey level p in [0, 1] becomes a pixel x ~ Bernoulli(p). Two conventions are used
with a Bernoulli likelihood p(x | z):

* dynamic binarization: a fresh draw every time (every epoch, every minibatch), which
  acts as data augmentation and keeps E[x] equal to the grey level;
* static binarization: one draw fixed by a seed and reused forever, giving a fixed
  data set whose log-likelihoods can be compared across runs and papers.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["dynamic_binarize", "static_binarize"]


def _check_images(images, name: str = "images") -> torch.Tensor:
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor or NumPy array; got {type(images).__name__}"
        )
    if not images.dtype.is_floating_point:
        raise TypeError(
            f"{name} must hold floats in [0, 1] (grey levels); got dtype {images.dtype}. "
            "Load them with load_mnist(dtype=torch.float32) or divide uint8 images by 255."
        )
    if images.numel() and not bool(((images >= 0) & (images <= 1)).all()):
        bad = images[~((images >= 0) & (images <= 1))].flatten()[0].item()
        raise ValueError(
            f"{name} must hold grey levels in [0, 1]; found {bad!r} "
            f"(tensor of shape {tuple(images.shape)})"
        )
    return images


def dynamic_binarize(images, generator: torch.Generator) -> torch.Tensor:
    """Draw x ~ Bernoulli(images) afresh, from ``generator``.

    Call it once per epoch (or minibatch): each call advances ``generator`` and gives a
    new draw, so E[x] equals the grey level. ``images`` is a float tensor (or NumPy
    array) of any shape with values in [0, 1]; the result has the same shape, dtype and
    device, with values in {0, 1}.

    Raises ``TypeError`` naming ``images`` when it is not floating point (uint8 images
    must be scaled to [0, 1] first) and ``generator`` when it is not a ``torch.Generator``
    on the device of ``images``; ``ValueError`` naming ``images`` for a value outside
    [0, 1] or NaN.
    """
    images = _check_images(images)
    if not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator; got {type(generator).__name__} "
            "(use static_binarize(images, seed) for a fixed draw from a seed)"
        )
    if generator.device.type != images.device.type:
        raise ValueError(
            f"generator must be on the device of images ({images.device}); "
            f"got a generator on {generator.device}"
        )
    return torch.bernoulli(images, generator=generator)


def static_binarize(images, seed: int) -> torch.Tensor:
    """Draw x ~ Bernoulli(images) once, from a generator seeded with ``seed``.

    The same ``images`` and ``seed`` give the same result on the same device, whatever the
    state of the global random number generator. Shapes and checks as
    :func:`dynamic_binarize`; ``TypeError``/``ValueError`` naming ``seed`` when it is not a
    non-negative integer.
    """
    images = _check_images(images)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an integer; got {seed!r}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0; got {seed}")
    generator = torch.Generator(device=images.device).manual_seed(int(seed))
    return torch.bernoulli(images, generator=generator)
