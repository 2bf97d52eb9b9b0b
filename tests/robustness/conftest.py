"""Fixtures of the robustness suite: a tiny finished VAE run, and private copies of it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .helpers import TINY_CONFIG, tiny_vae_data


@pytest.fixture(scope="session")
def tiny_run_master(tmp_path_factory) -> Path:
    """A finished 2-epoch VAE run on tiny synthetic images (made once per session)."""
    from varbayes.vae import VAEConfig
    from varbayes.vae.train import train

    run = tmp_path_factory.mktemp("master") / "run"
    train(VAEConfig(**TINY_CONFIG), run, data=tiny_vae_data(), progress=False)
    return run


@pytest.fixture
def tiny_run(tiny_run_master, tmp_path) -> Path:
    """A private copy of the tiny run, free to damage."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run_master, run)
    return run
