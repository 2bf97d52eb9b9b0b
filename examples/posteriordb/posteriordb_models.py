"""The eight posteriordb posteriors as varbayes models: a registry, and a command that fits
one and prints its summary beside the reference NUTS summary.

Each model is one function ``fn(m, data)`` in its own file (``eight_schools.py``, ...),
translated from the posterior's ``model.stan``: same parameters (Stan's names), constraints,
priors and parameterization; a parameter without a prior statement is a flat latent on its
support; ``target +=`` is ``m.factor``. Data go in as the Stan program's transformed data
(:func:`_data.transformed_data`), float64.

    import posteriordb_models as pdb            # with examples/posteriordb on sys.path
    model = pdb.model("kidiq")                  # a varbayes.vi.Model
    post = vi.fit(model)

Run: python examples/posteriordb/posteriordb_models.py kidiq [--guide meanfield]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import _data  # noqa: E402
from diamonds import diamonds  # noqa: E402
from eight_schools import eight_schools  # noqa: E402
from garch import garch  # noqa: E402
from gp_pois_regr import gp_pois_regr  # noqa: E402
from kidiq import kidiq  # noqa: E402
from low_dim_gauss_mix import low_dim_gauss_mix  # noqa: E402
from mesquite import mesquite  # noqa: E402
from nes import nes  # noqa: E402

from varbayes import vi  # noqa: E402

#: Short name (as in :data:`_data.POSTERIORS`) -> model function fn(m, data).
MODELS = {
    "eight_schools": eight_schools,
    "kidiq": kidiq,
    "diamonds": diamonds,
    "garch": garch,
    "mesquite": mesquite,
    "low_dim_gauss_mix": low_dim_gauss_mix,
    "gp_pois_regr": gp_pois_regr,
    "nes": nes,
}

_REFERENCE = pathlib.Path(__file__).resolve().parents[2] / "tests/data/posteriordb_reference.json"


def model(name: str, data: dict | None = None, **options) -> vi.Model:
    """The varbayes model of posterior ``name`` on its data (``data``: the raw ``data.json``
    content; default: read from the posteriordb folder). ``options`` go to :class:`vi.Model`."""
    if name not in MODELS:
        raise ValueError(f"name: expected one of {sorted(MODELS)}, got {name!r}")
    raw = _data.load_data(name) if data is None else data
    return vi.Model(MODELS[name], _data.transformed_data(name, raw), **options)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("name", choices=sorted(MODELS))
    p.add_argument("--guide", default="fullrank", choices=vi.GUIDES)
    args = p.parse_args(argv)
    post = vi.fit(model(args.name), args.guide)
    print(post)
    print(post.message)
    ref = json.loads(_REFERENCE.read_text())[args.name]["summary"]
    draws = post.sample(10_000)
    print(f"{'parameter':14s} {'|mean - ref mean| / ref sd':>27s} {'sd / ref sd':>12s}")
    for key, (err, ratio) in _data.compare(ref, draws).items():
        print(f"{key:14s} {err:27.3f} {ratio:12.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
