"""``varbayes tour``: the post, section by section, computed and written as one report.

1. Bayesian framework: the heights example (prior 160 cm, posterior near 175, MLE near 185).
2. Conjugacy: Beta-Bernoulli and Gamma-Poisson updating; the posterior predictive.
3. MAP = L2: Bayesian linear regression's MAP equals ridge; path; plug-in predictive.
4. Variational inference: log p(x) = ELBO + KL; mean-field vs full rank; four modes.
5. Latent variable models: EM on a heights mixture; VI switches components off.
6. Stochastic VI and the VAE: gradient variance; manifold, reconstructions, ELBO, NLL.

Every number in the report is in its section's ``facts`` (tests check each against an
independent computation).
"""

from varbayes.tour.report import Check, Figure, Section, Table, render_report, write_report
from varbayes.tour.run import SECTIONS, TourResult, TourSettings, run_tour

__all__ = [
    "SECTIONS",
    "Check",
    "Figure",
    "Section",
    "Table",
    "TourResult",
    "TourSettings",
    "render_report",
    "run_tour",
    "write_report",
]
