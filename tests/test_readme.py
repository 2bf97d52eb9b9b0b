"""Every Python example in README.md runs as a new user would paste it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_has_python_examples():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index, tmp_path, monkeypatch, capsys):
    """The block runs to its last line, and each of its print calls printed a line."""
    monkeypatch.chdir(tmp_path)  # blocks may save files
    block = BLOCKS[index] + "\n__readme_block_done__ = True\n"
    namespace = {"__name__": "__main__"}
    exec(compile(block, f"README.md block {index + 1}", "exec"), namespace)
    assert namespace.get("__readme_block_done__") is True
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) >= BLOCKS[index].count("print(")
