"""Write per-parameter summaries of the posteriordb reference draws to tests/data.

For each of the eight posteriors: per Stan element name (``theta[1]``), the mean, sd and
5%/50%/95% quantiles of its 10,000 reference NUTS draws. The tests compare fitted posteriors
with these summaries, so they need neither the draws nor ``../shared``.

Run: python examples/posteriordb/make_reference.py [--out tests/data/posteriordb_reference.json]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import _data  # noqa: E402

OUT = pathlib.Path(__file__).resolve().parents[2] / "tests" / "data" / "posteriordb_reference.json"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(OUT), help=f"output JSON (default {OUT})")
    args = p.parse_args(argv)
    ref = {}
    for short, full in _data.POSTERIORS.items():
        draws = _data.load_reference_draws(short)
        n = len(next(iter(draws.values())))
        ref[short] = {"posterior": full, "ndraws": n, "summary": _data.summarise(draws)}
        print(f"{short:18s} {len(draws):3d} parameters, {n} draws")
    out = pathlib.Path(args.out)
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".json")  # write, then rename
    with os.fdopen(fd, "w") as f:
        json.dump(ref, f, indent=1, sort_keys=False)
        f.write("\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
