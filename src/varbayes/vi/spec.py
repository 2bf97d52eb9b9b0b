"""A guide built for a model: one of :func:`varbayes.vi.fit`'s families bound to its sites.

``vi.guide(model, "lowrank", rank=3)`` records the family and the model's latent sites
(name, shape, support, in the order of their slices of z); ``vi.fit(model, g)`` fits
that family after checking that ``model`` has the same sites. A fitted
:class:`~varbayes.vi.Posterior` can stand in for a guide: ``vi.fit(model, post)`` warm
starts, its MAP search (step 1 of the recipe) starting from the previous q's mean
instead of z = 0, with the previous family (new data of the same shape, a model
changed in its priors, a fit continued with other options).

A guide (or posterior) built for another model is a ValueError naming every site that
differs, raised before anything is fitted. (The :class:`~varbayes.vi.Guide` modules of
stochastic VI are a different thing: torch modules over a flat θ of a given length.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from varbayes._validation import check_int

__all__ = ["ModelGuide", "guide", "sites_of"]

FAMILIES = ("auto", "fullrank", "meanfield", "block", "lowrank", "laplace", "map", "flow", "nested")


@dataclass(frozen=True)
class ModelGuide:
    """A family of :func:`varbayes.vi.fit` bound to a model's latent sites.

    ``family`` one of :data:`FAMILIES`; ``rank`` r of ``"lowrank"`` (None: ⌈√D⌉);
    ``sites`` ((name, shape, support), ...) of the model it was built for, ``model_name``
    that model's function name; ``init`` the z (D,) the MAP search starts from (None:
    z = 0; a warm start from a Posterior sets it to the previous q's mean)."""

    family: str
    sites: tuple[tuple[str, tuple[int, ...], str], ...]
    model_name: str
    rank: int | None = None
    init: torch.Tensor | None = None

    def check(self, model) -> None:
        """Raise ValueError, naming each differing site, unless ``model`` has these sites."""
        mismatch = _differences(self.sites, sites_of(model))
        if mismatch:
            raise ValueError(
                f"the guide was built for model {self.model_name!r}, whose latent sites differ "
                f"from those of model {model.name!r}: " + "; ".join(mismatch)
            )


def guide(model, family: str = "auto", *, rank: int | None = None) -> ModelGuide:
    """The ``family`` of :func:`varbayes.vi.fit` (one of :data:`FAMILIES`) for ``model``'s
    latent sites; pass it to ``vi.fit(model, guide)``."""
    from varbayes.vi.model import Model

    if not isinstance(model, Model):
        raise TypeError(f"model must be a varbayes.vi.Model; got {type(model).__name__}")
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}; got {family!r}")
    if rank is not None:
        if family != "lowrank":
            raise ValueError(f"rank is for the 'lowrank' family; got family {family!r}")
        rank = check_int(rank, "rank", minimum=1)
    return ModelGuide(family, sites_of(model), model.name, rank)


def from_posterior(post) -> ModelGuide:
    """The guide of a fitted Posterior, warm-started at its q's mean."""
    init = post.q.mean.detach().reshape(-1)
    return ModelGuide(
        post.guide, sites_of(post.model), post.model.name, post.info.get("rank"), init
    )


def sites_of(model) -> tuple[tuple[str, tuple[int, ...], str], ...]:
    """((name, shape, support), ...) of ``model``'s latents, in the order of z."""
    return tuple((s.name, tuple(s.shape), _support_label(s.support)) for s in model.latents)


def _support_label(support) -> str:
    """The support's repr; its class alone when a bound is a tensor (bounds that depend on
    other latents take the trace's values, which new data may change)."""
    if any(isinstance(v, torch.Tensor) for v in vars(support).values()):
        return type(support).__name__.lstrip("_") + "(...)"
    return repr(support)


def _differences(built, given) -> list[str]:
    built_by, given_by = {s[0]: s for s in built}, {s[0]: s for s in given}
    out = []
    for name, shape, support in built:
        other = given_by.get(name)
        if other is None:
            out.append(f"{name!r} is not in the model")
        elif other[1] != shape:
            out.append(f"{name!r} has shape {shape} in the guide but {other[1]} in the model")
        elif other[2] != support:
            out.append(f"{name!r} has support {support} in the guide but {other[2]} in the model")
    out += [f"{name!r} is not in the guide" for name in given_by if name not in built_by]
    if not out and [s[0] for s in built] != [s[0] for s in given]:
        out.append(
            f"the latents are declared in another order ({[s[0] for s in built]} in the "
            f"guide, {[s[0] for s in given]} in the model)"
        )
    return out
