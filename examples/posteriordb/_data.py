"""Read the eight posteriordb posteriors: their data and their reference draws.

The posteriors live in ``../shared/posteriordb/<full name>/`` next to the repository (or in
the folder named by ``$VARBAYES_POSTERIORDB``), each with ``model.stan``, ``data.json`` and
``reference_draws.json.zip`` (10 chains x 1,000 NUTS draws, keyed by Stan's 1-based names
such as ``theta[1]``). Only JSON is read: loading never executes code.

Run: not a script; ``import _data`` from this folder (``make_reference.py`` uses it).
"""

from __future__ import annotations

import json
import os
import pathlib
import zipfile

import numpy as np

#: Short name -> posteriordb's full name (``<data>-<model>``).
POSTERIORS = {
    "eight_schools": "eight_schools-eight_schools_noncentered",
    "kidiq": "kidiq-kidscore_momiq",
    "diamonds": "diamonds-diamonds",
    "garch": "garch-garch11",
    "mesquite": "mesquite-logmesquite_logvas",
    "low_dim_gauss_mix": "low_dim_gauss_mix-low_dim_gauss_mix",
    "gp_pois_regr": "gp_pois_regr-gp_pois_regr",
    "nes": "nes1980-nes",
}

_REPO = pathlib.Path(__file__).resolve().parents[2]


def root() -> pathlib.Path:
    """The folder holding the posteriordb posteriors: ``$VARBAYES_POSTERIORDB`` when set,
    else ``<repository>/../shared/posteriordb``."""
    env = os.environ.get("VARBAYES_POSTERIORDB")
    return pathlib.Path(env) if env else _REPO.parent / "shared" / "posteriordb"


def folder(name: str, base: str | os.PathLike | None = None) -> pathlib.Path:
    """The folder of posterior ``name`` (a short name of :data:`POSTERIORS` or a full name)."""
    full = POSTERIORS.get(name, name)
    if full not in POSTERIORS.values():
        raise ValueError(
            f"name: expected one of {sorted(POSTERIORS)} (or their full posteriordb names), "
            f"got {name!r}"
        )
    path = pathlib.Path(base) if base is not None else root()
    path = path / full
    if not path.is_dir():
        raise FileNotFoundError(
            f"posteriordb folder {str(path)!r} not found; set VARBAYES_POSTERIORDB to the folder "
            "holding the posteriordb posteriors"
        )
    return path


def load_data(name: str, base=None) -> dict:
    """The posterior's ``data.json``: lists become float64 (or int64) NumPy arrays, scalars
    stay Python numbers."""
    with open(folder(name, base) / "data.json") as f:
        raw = json.load(f)
    return {k: np.asarray(v) if isinstance(v, list) else v for k, v in raw.items()}


def load_reference_draws(name: str, base=None) -> dict[str, np.ndarray]:
    """The reference NUTS draws, chains concatenated: Stan name (``theta[1]``) -> (10000,)."""
    with zipfile.ZipFile(folder(name, base) / "reference_draws.json.zip") as z:
        (member,) = z.namelist()
        chains = json.loads(z.read(member))
    return {k: np.concatenate([np.asarray(c[k], dtype=float) for c in chains]) for k in chains[0]}


def summarise(draws: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Per named element: mean, sd (ddof 1) and the 5%/50%/95% quantiles of its draws."""
    out = {}
    for k, x in draws.items():
        x = np.asarray(x, dtype=float)
        q5, q50, q95 = np.quantile(x, [0.05, 0.5, 0.95])
        out[k] = {
            "mean": float(x.mean()),
            "sd": float(x.std(ddof=1)),
            "q5": float(q5),
            "q50": float(q50),
            "q95": float(q95),
        }
    return out


def stan_names(name: str, value) -> dict[str, float]:
    """Flatten one named value to Stan's 1-based element names: a scalar keeps ``name``,
    a vector element i becomes ``name[i+1]``, a matrix element ``name[i+1,j+1]``."""
    a = np.asarray(value, dtype=float)
    if a.ndim == 0:
        return {name: float(a)}
    return {
        f"{name}[{','.join(str(i + 1) for i in idx)}]": float(a[idx]) for idx in np.ndindex(a.shape)
    }


def transformed_data(name: str, data: dict) -> dict[str, np.ndarray]:
    """The arrays each Stan program computes in its ``transformed data`` block (and the data
    it uses as is), as float64 NumPy arrays:

    - eight_schools: ``y`` (8,), ``sigma`` (8,)
    - kidiq: ``kid_score`` (N,), ``mom_iq`` (N,)
    - diamonds: ``Y`` (N,), ``Xc`` (N, K-1) the predictors without the intercept column,
      each centred; ``means_X`` (K-1,) their means
    - garch: ``y`` (T,), ``sigma1`` ()
    - mesquite: ``log_weight`` (N,), ``X`` (N, 7): 1, log canopy volume, log canopy area,
      log canopy shape, log total height, log density, group
    - low_dim_gauss_mix: ``y`` (N,)
    - gp_pois_regr: ``x`` (N,), ``k`` (N,) counts
    - nes: ``partyid7`` (N,), ``X`` (N, 9): 1, real_ideo, race_adj, age 30-44, 45-64, 65+
      (dummies of age_discrete 2, 3, 4), educ1, gender, income

    ``XcT``/``XT``: the design matrix transposed, (K, N), stored contiguous. The varbayes
    models write ``beta @ XT``: in the compiled SVI loop that product ran 1.6-1.9x faster
    than ``beta @ X.T``, the transposed view of the (N, K) matrix (diamonds 29,605 against
    15,871 steps/s, nes 78,733 against 49,654; one particle).
    """

    def f(key):
        return np.asarray(data[key], dtype=float)

    if name == "eight_schools":
        return {"y": f("y"), "sigma": f("sigma")}
    if name == "kidiq":
        return {"kid_score": f("kid_score"), "mom_iq": f("mom_iq")}
    if name == "diamonds":
        x = f("X")[:, 1:]
        means = x.mean(axis=0)
        xc = x - means
        return {"Y": f("Y"), "Xc": xc, "XcT": np.ascontiguousarray(xc.T), "means_X": means}
    if name == "garch":
        return {"y": f("y"), "sigma1": np.asarray(float(data["sigma1"]))}
    if name == "mesquite":
        d1, d2, h = f("diam1"), f("diam2"), f("canopy_height")
        cols = [np.ones_like(d1), np.log(d1 * d2 * h), np.log(d1 * d2), np.log(d1 / d2)]
        cols += [np.log(f("total_height")), np.log(f("density")), f("group")]
        X = np.stack(cols, axis=1)
        return {"log_weight": np.log(f("weight")), "X": X, "XT": np.ascontiguousarray(X.T)}
    if name == "low_dim_gauss_mix":
        return {"y": f("y")}
    if name == "gp_pois_regr":
        return {"x": f("x"), "k": f("k")}
    if name == "nes":
        age = np.asarray(data["age_discrete"])
        cols = [np.ones(len(age)), f("real_ideo"), f("race_adj")]
        cols += [(age == a).astype(float) for a in (2, 3, 4)]
        cols += [f("educ1"), f("gender"), f("income")]
        X = np.stack(cols, axis=1)
        return {"partyid7": f("partyid7"), "X": X, "XT": np.ascontiguousarray(X.T)}
    raise ValueError(f"name: expected one of {sorted(POSTERIORS)}, got {name!r}")


def compare(reference: dict, draws: dict) -> dict[str, tuple[float, float]]:
    """Accuracy of draws against a reference summary, per reference parameter (Stan name):
    (|mean − ref mean| / ref sd, sd / ref sd).

    ``reference`` maps Stan names to their summary (``mean``, ``sd``, ...), as
    :func:`summarise` makes it; ``draws`` maps site names to (n, *shape) draws in the
    constrained space (NumPy arrays or tensors). A reference parameter without draws is a
    KeyError."""
    flat = {}
    for site, x in draws.items():
        x = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=float)
        for idx in np.ndindex(x.shape[1:]):
            key = site if not idx else f"{site}[{','.join(str(i + 1) for i in idx)}]"
            flat[key] = x[(slice(None), *idx)]
    out = {}
    for key, ref in reference.items():
        if key not in flat:
            raise KeyError(f"the draws have no reference parameter {key!r}; have {sorted(flat)}")
        out[key] = (
            abs(flat[key].mean() - ref["mean"]) / ref["sd"],
            flat[key].std(ddof=1) / ref["sd"],
        )
    return out
