"""The scripts in examples/ run as a new user would run them."""

import pathlib
import re
import subprocess
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def _run(name, cwd):
    res = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_heights_example_writes_figure(tmp_path):
    """examples/heights.py prints the three estimates and writes heights.png."""
    out = _run("heights.py", tmp_path)
    assert "posterior" in out and "MLE" in out
    assert (tmp_path / "heights.png").stat().st_size > 1000


def test_map_is_ridge_example_shows_equality(tmp_path):
    """examples/map_is_ridge.py finds MAP and ridge equal to rounding error."""
    out = _run("map_is_ridge.py", tmp_path)
    diff = float(re.search(r"max \|MAP - ridge\| = (\S+)", out).group(1))
    assert diff < 1e-10
    assert "evidence maximum" in out


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_every_example_has_a_docstring_with_run_line(name):
    """Each example starts with a docstring that says how to run it."""
    text = (EXAMPLES / name).read_text()
    assert text.startswith('"""') and "Run:" in text.split('"""')[1]
