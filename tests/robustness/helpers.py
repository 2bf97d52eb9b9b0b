"""Helpers of the robustness suite: run the CLI, snapshot a folder, tiny VAE data."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from varbayes.cli import main


def snapshot(root: Path) -> dict[str, str]:
    """{relative path: sha256 of the content, or "dir"} of everything under ``root``."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``varbayes ARGV``; argparse's SystemExit counts too."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse: usage errors exit 2 by themselves
        code = exc.code
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def assert_one_line_error(err: str, *fragments: str) -> None:
    """stderr is one ``varbayes: error:`` line (no traceback) holding every fragment."""
    lines = err.strip().splitlines()
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    assert lines[0].startswith("varbayes: error: "), err
    for f in fragments:
        assert f in lines[0], (f, err)


def tiny_vae_data(n: int = 96, seed: int = 0):
    """Grey-level 6x6 images: noisy copies of 3 prototypes, (train, val)."""
    from varbayes.vae.data import VAEData

    g = torch.Generator().manual_seed(seed)
    protos = torch.rand(3, 36, generator=g)
    idx = torch.randint(0, 3, (n + 32,), generator=g)
    x = (protos[idx] + 0.1 * torch.randn(n + 32, 36, generator=g)).clamp(0, 1)
    return VAEData(x[:n].reshape(-1, 6, 6), x[n:])


TINY_CONFIG = dict(
    image_shape=(6, 6), hidden=(8,), latent_dim=2, epochs=2, batch_size=32, val_size=0
)
