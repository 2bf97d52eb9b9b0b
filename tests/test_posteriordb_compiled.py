"""``svi.fit(compile=True)`` on every posteriordb translation and every guide family: the
model compiles as one graph, a chunk of steps runs as one compiled loop, and the compiled
steps (Adam inside the graph) take the eager autograd path's steps, to float64 rounding.
Slow (about three minutes: garch's compilation alone takes about 20 s a guide)."""

import pathlib
import sys

import pytest
import torch

from varbayes.vi import FullRankNormal, LowRankNormal, MeanFieldNormal
from varbayes.vi.svi import fit

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "examples" / "posteriordb"))
import _data  # noqa: E402
import posteriordb_models  # noqa: E402

FAMILIES = {
    "meanfield": MeanFieldNormal,
    "fullrank": FullRankNormal,
    "lowrank": lambda d, **kw: LowRankNormal(d, rank=2, **kw),
}


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("name", sorted(posteriordb_models.MODELS))
def test_the_compiled_step_takes_the_eager_steps(name, family):
    try:
        data = _data.load_data(name)
    except FileNotFoundError as e:
        pytest.skip(f"posteriordb not available ({e})")
    model = posteriordb_models.model(name, data)
    flats = []
    for compile in (False, True):
        guide = FAMILIES[family](model.dim, dtype=model.dtype)
        r = fit(model, guide, num_steps=100, rtol=0, window=20, seed=0, compile=compile,
                on_nonfinite="stop")  # fmt: skip
        flats.append(guide.flat.detach())
    assert r.state.compiled.steps_per_call == 20  # a chunk a call, in the compiled loop
    assert not torch.equal(flats[0], FAMILIES[family](model.dim, dtype=model.dtype).flat)
    torch.testing.assert_close(flats[1], flats[0], rtol=1e-10, atol=1e-10)
