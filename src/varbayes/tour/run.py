"""Run the tour: the six sections in order, a progress bar each, then the report.

:func:`run_tour` computes every section with varbayes's public API, times it, and writes
``OUT/index.html`` (self-contained: figures embedded, no network needed to open it).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from varbayes import __version__
from varbayes.tour import basics, deep, inference
from varbayes.tour.report import Section, write_report

__all__ = ["SECTIONS", "TourResult", "TourSettings", "run_tour"]

SECTIONS = [
    ("Bayesian framework", basics.bayesian_framework, basics.STEPS_BAYES),
    ("Conjugacy", basics.conjugacy, basics.STEPS_CONJUGACY),
    ("MAP = L2", basics.map_is_l2, basics.STEPS_MAP),
    ("Variational inference", inference.variational_inference, inference.STEPS_VI),
    ("Latent variable models", inference.latent_variables, inference.STEPS_LATENT),
    ("Stochastic VI and the VAE", deep.stochastic_vi_and_vae, deep.STEPS_DEEP),
]
"""(title, function(settings, tick) -> Section, number of ticks) of each section."""


@dataclass
class TourSettings:
    """What a tour run depends on.

    ``quick``: fewer Monte Carlo draws and SVI steps, a short VAE run (3 epochs on 10,000
    MNIST images, or the digits when MNIST is not on disk). ``seed``: every data set,
    initialisation and Monte Carlo draw. ``vae_run``: reuse this trained VAE instead of
    training one. ``vae_config``: VAEConfig fields that replace the trained VAE's defaults.
    """

    out: Path = Path("tour")
    quick: bool = False
    seed: int = 0
    vae_run: Path | None = None
    vae_config: dict | None = None
    data_root: Path | None = None
    progress: bool = True


@dataclass
class TourResult:
    """The sections computed, the report's path, the total wall-clock seconds, the settings."""

    sections: list[Section]
    report: Path
    seconds: float
    settings: TourSettings

    @property
    def failed_checks(self) -> list[str]:
        """The statements of the checks that did not hold."""
        return [c.statement for s in self.sections for c in s.checks if not c.passed]


def run_tour(settings: TourSettings, only: list[int] | None = None) -> TourResult:
    """Compute the sections (all, or the 1-based numbers in ``only``) and write the report."""
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    settings.out = out
    start = time.perf_counter()
    sections = []
    picked = [(i, sec) for i, sec in enumerate(SECTIONS, 1) if only is None or i in only]
    for i, (title, func, steps) in picked:
        t = time.perf_counter()
        with tqdm(
            total=steps, desc=f"{i}/6 {title}", disable=not settings.progress, leave=True
        ) as bar:
            section = func(settings, lambda bar=bar: bar.update(1))
        section.seconds = time.perf_counter() - t
        sections.append(section)
    seconds = time.perf_counter() - start
    meta = {
        "varbayes": __version__,
        "torch": torch.__version__,
        "mode": "--quick" if settings.quick else "full",
        "seed": f"{settings.seed} (data, initialisations and Monte Carlo draws of every section)",
        "total time": f"{seconds:.1f} s on {os.cpu_count()} CPU cores "
        f"(torch threads: {torch.get_num_threads()})",
        "written": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    report = write_report(sections, meta, out / "index.html")
    return TourResult(sections, report, seconds, settings)
