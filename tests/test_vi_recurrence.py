"""vi.linear_recurrence against a Python loop over time (values and gradients), with
torch's gradcheck, under torch.func and torch.compile, and on bad input."""

from __future__ import annotations

import pytest
import torch

from varbayes.vi.recurrence import linear_recurrence

D64 = torch.float64


def loop(c, a):
    """The oracle: s_1 = c_1, s_t = a s_{t-1} + c_t, one step at a time."""
    a = torch.as_tensor(a, dtype=c.dtype)[..., None]
    c, a = torch.broadcast_tensors(c, a.expand(*a.shape[:-1], c.shape[-1]))
    out = [c[..., 0]]
    for t in range(1, c.shape[-1]):
        out.append(a[..., t] * out[-1] + c[..., t])
    return torch.stack(out, -1)


@pytest.mark.parametrize("shape_c, shape_a", [((1,), ()), ((2,), ()), ((7,), ()),
                                              ((3, 200), (3,)), ((33,), (4,)),
                                              ((2, 3, 17), (2, 3))])  # fmt: skip
def test_values_and_gradients_are_the_loops(shape_c, shape_a):
    g = torch.Generator().manual_seed(sum(shape_c))
    c = torch.rand(shape_c, generator=g, dtype=D64, requires_grad=True)
    a = (torch.rand(shape_a, generator=g, dtype=D64) * 1.8 - 0.9).requires_grad_()
    s = linear_recurrence(c, a)
    expected = loop(c, a)
    torch.testing.assert_close(s, expected, rtol=1e-12, atol=1e-12)
    w = torch.randn(expected.shape, generator=g, dtype=D64)
    got = torch.autograd.grad((s * w).sum(), (c, a))
    want = torch.autograd.grad((expected * w).sum(), (c, a), materialize_grads=True)  # T = 1
    for x, y in zip(got, want, strict=True):
        assert x.shape == y.shape
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)


def test_gradcheck_and_a_python_number():
    g = torch.Generator().manual_seed(1)
    c = torch.rand(2, 9, generator=g, dtype=D64, requires_grad=True)
    a = torch.tensor([0.3, -0.7], dtype=D64, requires_grad=True)
    assert torch.autograd.gradcheck(linear_recurrence, (c, a))
    torch.testing.assert_close(linear_recurrence(c, 0.5), loop(c, 0.5))


def test_it_composes_with_torch_func_and_compiles_as_one_graph():
    g = torch.Generator().manual_seed(2)
    c = torch.rand(5, 40, generator=g, dtype=D64)
    a = torch.rand(5, generator=g, dtype=D64)
    w = torch.randn(5, 40, generator=g, dtype=D64)

    def loss(c, a):
        return (linear_recurrence(c, a) * w).sum()

    want = torch.func.grad(lambda c, a: (loop(c, a) * w).sum(), argnums=(0, 1))(c, a)

    def row_loss(ci, ai, wi):
        return (linear_recurrence(ci, ai) * wi).sum()

    per_row = torch.func.vmap(torch.func.grad(row_loss, argnums=(0, 1)))(c, a, w)
    compiled = torch.compile(torch.func.grad(loss, argnums=(0, 1)), fullgraph=True)
    for got in (torch.func.grad(loss, argnums=(0, 1))(c, a), per_row, compiled(c, a)):
        for x, y in zip(got, want, strict=True):
            torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="c must be a tensor with a time dimension"):
        linear_recurrence(torch.tensor(1.0), 0.5)
    with pytest.raises(ValueError, match="c must be a tensor"):
        linear_recurrence([1.0, 2.0], 0.5)
