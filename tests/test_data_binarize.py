"""Dynamic and static binarization of grey levels by Bernoulli draws."""

import numpy as np
import pytest
import torch

from varbayes.data import dynamic_binarize, static_binarize

GREY = torch.linspace(0, 1, 11)


def test_mean_of_dynamic_draws_approaches_grey_level():
    """The mean of K fresh draws is within 5 standard errors of each grey level.

    With K = 4000 draws the standard error sqrt(p(1-p)/K) is at most 0.0079; a 5-sigma
    band fails with probability < 1e-6 per level (normal approximation), so < 1e-5 for
    the 11 levels. Levels 0 and 1 must be reproduced exactly.
    """
    g = torch.Generator().manual_seed(0)
    k = 4000
    total = torch.zeros_like(GREY)
    for _ in range(k):
        draw = dynamic_binarize(GREY, g)
        total += draw
    mean = total / k
    tol = 5 * torch.sqrt(GREY * (1 - GREY) / k)
    assert bool(((mean - GREY).abs() <= tol).all()), (mean, GREY)


def test_draws_are_binary_with_input_shape_and_dtype():
    """A draw has the shape, dtype and device of its input and values in {0, 1}."""
    x = torch.rand(6, 28, 28, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for out in (dynamic_binarize(x, torch.Generator().manual_seed(2)), static_binarize(x, 3)):
        assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
        assert set(out.unique().tolist()) <= {0.0, 1.0}


def test_dynamic_draws_differ_between_epochs():
    """Two successive calls with one generator (two epochs) give different draws."""
    g = torch.Generator().manual_seed(0)
    x = torch.full((1000,), 0.5)
    assert not torch.equal(dynamic_binarize(x, g), dynamic_binarize(x, g))


def test_dynamic_draws_reproduce_from_the_generator_seed():
    """The sequence of dynamic draws is a function of the generator's seed alone."""
    x = torch.full((500,), 0.5)
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    with torch.random.fork_rng():
        torch.manual_seed(123)  # the global generator must not matter
        a = [dynamic_binarize(x, g1) for _ in range(3)]
        torch.manual_seed(456)
        b = [dynamic_binarize(x, g2) for _ in range(3)]
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))


def test_static_draw_is_fixed_by_seed():
    """Same seed gives the same draw whatever the global RNG; another seed differs."""
    x = torch.full((1000,), 0.5)
    with torch.random.fork_rng():
        torch.manual_seed(1)
        a = static_binarize(x, 42)
        torch.manual_seed(2)
        b = static_binarize(x, 42)
    assert torch.equal(a, b)
    assert not torch.equal(a, static_binarize(x, 43))


def test_numpy_input_is_accepted():
    """A float NumPy array is binarized like the equivalent tensor."""
    x = np.full((100,), 0.25)
    assert torch.equal(static_binarize(x, 0), static_binarize(torch.from_numpy(x), 0))


@pytest.mark.parametrize(
    "fn", [lambda x: dynamic_binarize(x, torch.Generator()), lambda x: static_binarize(x, 0)]
)
def test_integer_images_are_rejected(fn):
    """uint8 images (0..255) are a TypeError naming images, not silently clipped."""
    with pytest.raises(TypeError, match="images must hold floats"):
        fn(torch.full((3,), 200, dtype=torch.uint8))


@pytest.mark.parametrize("bad", [1.5, -0.1, float("nan")])
def test_grey_levels_outside_unit_interval_are_rejected(bad):
    """A value outside [0, 1] (or NaN) is a ValueError naming images."""
    x = torch.tensor([0.2, bad, 0.3])
    with pytest.raises(ValueError, match=r"images must hold grey levels in \[0, 1\]"):
        dynamic_binarize(x, torch.Generator())
    with pytest.raises(ValueError, match="images"):
        static_binarize(x, 0)


def test_non_tensor_images_are_rejected():
    """A list is a TypeError naming images."""
    with pytest.raises(TypeError, match="images"):
        static_binarize([0.5, 0.5], 0)


def test_generator_must_be_a_generator():
    """An int passed as generator is a TypeError naming generator."""
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        dynamic_binarize(torch.full((3,), 0.5), 0)


@pytest.mark.parametrize(("seed", "exc"), [(-1, ValueError), (1.5, TypeError), (True, TypeError)])
def test_bad_seed_is_rejected(seed, exc):
    """A negative or non-integer seed is an error naming seed."""
    with pytest.raises(exc, match="seed"):
        static_binarize(torch.full((3,), 0.5), seed)
