"""A model p(x, θ) written as plain Python over named latent variables.

The user writes one function ``fn(m, data)``; ``m`` is a small recording object with
four methods, and every value it hands back carries a leading particle dimension S:

* ``m.latent(name, prior, *, support=None, shape=None)`` declares θ_name ~ prior (which
  may depend on earlier latents). Without a prior, θ_name has a flat density on
  ``support``. Returns θ_name, shape ``(S, *shape)``, in the constrained space.
* ``m.derived(name, value)`` records a deterministic function of θ (returned as is).
* ``m.observe(name, distribution, value)`` adds log p(x_name | θ), scaled by N/B on a
  minibatch of B of the N rows.
* ``m.factor(name, log_density, *, likelihood=False)`` adds a free term of shape
  ``(S,)`` or a scalar (Stan's ``target +=``); ``likelihood=True`` marks a term that is
  a sum over the data rows, scaled by N/B on a minibatch like ``observe``.

Every latent lives on an unconstrained u ∈ R^{D_name}, θ = T(u) with T =
:func:`varbayes.vi.supports.bijection` (support), and all the u are stacked into one flat
z ∈ R^D. :meth:`Model.log_density` is the density the variational families fit,

    log p(x, z) = Σ_latents [log p(θ_i | θ_<i) + log |det ∂T_i/∂u_i|]
                  + (N/B) Σ_observed log p(x | θ) + Σ_factors f(θ),

for z of shape ``(S, D)``, returning ``(S,)``. :meth:`Model.log_likelihood` is its
likelihood part alone, (N/B) [Σ_observed log p(x | θ) + Σ_likelihood factors], the first
term of the analytic-KL ELBO. Each site's log density is summed over its
own dimensions (found by one unbatched trace at construction), so a value of shape
``(S, 8)`` contributes ``(S,)``.

Writing fast models: the function runs once per step on all S particles, so write it
with tensor operations over the leading ``...`` dimension (``mu[..., None]``,
``beta @ X.T``, ``torch.cumsum``) rather than Python loops over data rows; a recursion
over time is best written as a matrix product or a cumulative operation. A mixture of
two components is ``torch.logaddexp(a, b)``, not ``torch.logsumexp`` over a stacked last
dimension of size 2 (half the compiled step on low_dim_gauss_mix). For a regression,
store the design matrix transposed, (K, N) contiguous, and write ``beta @ XT``: in the
compiled SVI loop that ran 1.6-1.9x faster than ``beta @ X.T`` on an (N, K) matrix.

Example (eight schools, non-centred)::

    import torch
    from torch import distributions as dist
    from varbayes import vi

    def eight_schools(m, data):
        mu = m.latent("mu", dist.Normal(0.0, 5.0))
        tau = m.latent("tau", dist.HalfCauchy(5.0))
        theta_tilde = m.latent("theta_tilde", dist.Normal(0.0, 1.0).expand([8]))
        theta = m.derived("theta", mu[..., None] + tau[..., None] * theta_tilde)
        m.observe("y", dist.Normal(theta, data["sigma"]), data["y"])

    data = {"y": [28.0, 8, -3, 7, -1, 1, 18, 12], "sigma": [15.0, 10, 16, 11, 9, 11, 10, 18]}
    model = vi.Model(eight_schools, data)
    model.dim                        # 10 = mu, log tau, theta_tilde[8]
    model.log_density(torch.zeros(4, model.dim)).shape   # (4,)
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.distributions import Distribution, Normal, constraints

from varbayes.vi.supports import bijection

__all__ = ["Model", "Site", "no_validation"]

_KINDS = ("latent", "derived", "observed", "factor")


@dataclass(frozen=True)
class Site:
    """One named site of a model, as found by the trace at construction.

    ``kind`` one of ``"latent"``, ``"derived"``, ``"observed"``, ``"factor"``; ``shape`` the
    per-particle shape of its value; for latents ``unconstrained_shape`` and the slice
    ``[start, stop)`` of z holding its u, ``has_prior`` (False: flat on its support) and
    ``support``; ``log_prob_ndim`` and ``jacobian_ndim`` the per-particle dimensions of its
    log density terms (summed away).
    """

    name: str
    kind: str
    shape: torch.Size
    unconstrained_shape: torch.Size | None = None
    start: int = 0
    stop: int = 0
    has_prior: bool = False
    support: object = None
    log_prob_ndim: int = 0
    jacobian_ndim: int = -1  # -1: identity transform, no Jacobian term


class _Recorder:
    """The ``m`` handed to the user's function: records or evaluates one pass.

    ``mode`` is ``"trace"`` (unbatched, at the initial point, building the sites),
    ``"density"`` (accumulate log p(x, z) for z of shape (S, D)), ``"values"`` (collect
    the constrained latents and derived values) or ``"predict"`` (as values, drawing the
    observed sites)."""

    def __init__(self, model, mode, z, batch):
        self.model, self.mode, self.z, self.batch = model, mode, z, batch
        self.log_density = None
        self.log_likelihood = None  # the observed sites and likelihood factors alone
        self.values: dict[str, torch.Tensor] = {}
        self.sites: list[Site] = []
        self._offset = 0

    # ---------------------------------------------------------------- helpers
    def _add(self, term, ndim, likelihood=False):
        if ndim:
            term = term.sum(tuple(range(-ndim, 0)))
        self.log_density = term if self.log_density is None else self.log_density + term
        if likelihood:
            lik = self.log_likelihood
            self.log_likelihood = term if lik is None else lik + term

    def _site(self, name, kind):
        if self.mode == "trace":
            if not isinstance(name, str) or not name:
                raise TypeError(f"site names must be non-empty strings; got {name!r}")
            if any(s.name == name for s in self.sites):
                raise ValueError(f"site name {name!r} is used twice; each site needs its own name")
            return None
        site = self.model._by_name.get(name)
        if site is None or site.kind != kind:
            raise ValueError(
                f"site {name!r} ({kind}) was not in the model's trace; the function must "
                "declare the same sites on every call"
            )
        return site

    def _check(self, name, what, value, shape=None):
        """Trace-time check: ``value`` finite (and of ``shape``) at the initial point."""
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"site {name!r}: {what} must be a tensor; got {type(value).__name__}")
        if shape is not None and value.shape != shape:
            raise ValueError(
                f"site {name!r}: {what} must have shape {tuple(shape)}; got {tuple(value.shape)}"
            )
        if not bool(torch.isfinite(value).all()):
            raise ValueError(f"site {name!r}: {what} is not finite at the initial point")

    # ---------------------------------------------------------------- the four methods
    def latent(
        self,
        name: str,
        prior: Distribution | None = None,
        *,
        support: constraints.Constraint | None = None,
        shape: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """θ_name ~ ``prior`` (flat on ``support`` when there is no prior); returns θ_name,
        ``(S, *shape)``, constrained. ``support`` defaults to ``prior.support``; ``shape``
        to the prior's ``batch_shape + event_shape`` (a broadcastable prior is expanded)."""
        site = self._site(name, "latent")
        if site is None:
            return self._trace_latent(name, prior, support, shape)
        if support is None:
            support = prior.support
        u = self.z[..., site.start : site.stop].reshape(self.batch + site.unconstrained_shape)
        if site.jacobian_ndim < 0:
            theta = u
        else:
            transform = bijection(support)
            theta = transform(u)
            if self.mode == "density":
                self._add(transform.log_abs_det_jacobian(u, theta), site.jacobian_ndim)
        if self.mode == "density":
            if prior is not None:
                self._add(prior.log_prob(theta), site.log_prob_ndim)
        else:
            self.values[name] = theta
        return theta

    def _trace_latent(self, name, prior, support, shape):
        if prior is not None and not isinstance(prior, Distribution):
            raise TypeError(
                f"latent {name!r}: prior must be a torch.distributions.Distribution; got "
                f"{type(prior).__name__}"
            )
        if prior is None and support is None:
            raise ValueError(
                f"latent {name!r} needs a prior or a support (a flat density on the support)"
            )
        if support is None:
            support = prior.support
        if not isinstance(support, constraints.Constraint):
            raise TypeError(
                f"latent {name!r}: support must be a torch.distributions.constraints."
                f"Constraint; got {type(support).__name__}"
            )
        if prior is not None and (prior.support.is_discrete or support.is_discrete):
            raise ValueError(f"latent {name!r}: discrete latents are not supported ({support})")
        prior_shape = (
            torch.Size(prior.batch_shape + prior.event_shape) if prior is not None else None
        )
        if shape is None:
            shape = prior_shape if prior_shape is not None else torch.Size()
        else:
            try:
                shape = torch.Size(shape)
            except TypeError as exc:
                raise TypeError(f"latent {name!r}: shape must be a tuple of ints") from exc
            if prior_shape is not None and torch.broadcast_shapes(prior_shape, shape) != shape:
                raise ValueError(
                    f"latent {name!r}: the prior's shape {tuple(prior_shape)} does not "
                    f"broadcast to shape {tuple(shape)}"
                )
        try:
            transform = bijection(support)
        except NotImplementedError as exc:
            raise ValueError(
                f"latent {name!r}: support {support!r} has no bijection to the real line "
                "(torch.distributions.biject_to does not know it)"
            ) from exc
        identity = _is_real(support)
        ushape = shape if identity else torch.Size(transform.inverse_shape(shape))
        size = int(math.prod(ushape))
        u = torch.zeros(ushape, dtype=self.model.dtype, device=self.model.device)
        theta = u if identity else transform(u)
        lp_ndim, jac_ndim = 0, -1
        if not identity:
            jac = transform.log_abs_det_jacobian(u, theta)
            self._check(name, "the log-Jacobian", jac)
            jac_ndim = jac.ndim
            self._add(jac, jac_ndim)
        if prior is not None:
            lp = prior.log_prob(theta)
            self._check(name, "the prior's log density", lp)
            lp_ndim = lp.ndim
            self._add(lp, lp_ndim)
        start = self._offset
        self._offset += size
        self.sites.append(
            Site(name, "latent", shape, ushape, start, self._offset, prior is not None,
                 support, lp_ndim, jac_ndim)
        )  # fmt: skip
        self.values[name] = theta
        return theta

    def derived(self, name: str, value) -> torch.Tensor:
        """Record ``value`` (a function of the latents) under ``name``; returns it."""
        site = self._site(name, "derived")
        if site is None:
            value = torch.as_tensor(value)
            self.sites.append(Site(name, "derived", value.shape))
        if self.mode != "density":
            self.values[name] = value
        return value

    def observe(self, name: str, distribution: Distribution, value) -> torch.Tensor:
        """Add log p(x_name = ``value`` | θ) (times N/B on a minibatch); returns ``value``.

        With ``value=None`` (allowed only in :meth:`Model.predict`) the site is drawn."""
        site = self._site(name, "observed")
        if site is None:
            return self._trace_observe(name, distribution, value)
        if self.mode == "density":
            lp = distribution.log_prob(value)
            self._add(self.model.scale * lp, site.log_prob_ndim, likelihood=True)
            return value
        if self.mode == "predict":
            value = distribution.sample()
            self.values[name] = value
        return value

    def _trace_observe(self, name, distribution, value):
        if not isinstance(distribution, Distribution):
            raise TypeError(
                f"observed {name!r}: the likelihood must be a torch.distributions."
                f"Distribution; got {type(distribution).__name__}"
            )
        if value is None:
            if not self.model._predicting:
                raise ValueError(f"observed {name!r}: the observed value is None")
            value = distribution.sample()
        elif not isinstance(value, torch.Tensor):
            value = torch.as_tensor(value, dtype=self.model.dtype, device=self.model.device)
        if not bool(distribution.support.check(value).all()):
            raise ValueError(
                f"observed {name!r}: the observed value lies outside the likelihood's "
                f"support {distribution.support}"
            )
        lp = distribution.log_prob(value)
        self._check(name, "the log likelihood", lp)
        self.sites.append(Site(name, "observed", value.shape, log_prob_ndim=lp.ndim))
        self._add(lp, lp.ndim, likelihood=True)
        return value

    def factor(self, name: str, log_density, *, likelihood: bool = False) -> torch.Tensor:
        """Add ``log_density`` to log p(x, θ): shape ``(S,)`` (one value per particle) or
        a scalar (a Python number or 0-d tensor, the same for every particle).

        ``likelihood=True``: the term is a log likelihood summed over the ``rows`` data,
        so it is scaled by N/B on a minibatch and counted in :meth:`Model.log_likelihood`."""
        site = self._site(name, "factor")
        if not isinstance(log_density, torch.Tensor):
            log_density = torch.as_tensor(
                log_density, dtype=self.model.dtype, device=self.model.device
            )
        if site is None:
            self._check(name, "the factor (one log density per particle)", log_density, ())
            self.sites.append(Site(name, "factor", torch.Size()))
        elif self.mode == "density" and log_density.shape not in (self.batch, ()):
            raise ValueError(
                f"factor {name!r} must have shape {tuple(self.batch)} (one log density "
                f"per particle) or be a scalar; got {tuple(log_density.shape)}"
            )
        if self.mode in ("trace", "density"):
            term = self.model.scale * log_density if likelihood else log_density
            self._add(term, 0, likelihood=likelihood)
        return log_density


class Model:
    """p(x, θ) from a plain Python function ``fn(m, data)`` over named latents.

    Parameters
    ----------
    fn : callable
        ``fn(m, data)`` (``fn(m)`` when ``data`` is None), declaring sites on ``m``
        (see the module docstring). Values carry a leading particle dimension.
    data : mapping, optional
        Named data. Numbers, lists and NumPy arrays become tensors (floating ones in
        ``dtype``); floating data must be finite.
    rows : sequence of str
        The data entries whose first dimension indexes the N data points; they are the
        ones :meth:`subsample` takes rows of (the likelihood is then scaled by N/B).
    dtype : torch.dtype
        Of z and of floating data (float64 by default: the curvature-based steps of
        :func:`varbayes.vi.fit` on badly scaled posteriors need it).

    The constructor runs ``fn`` once, unbatched, at the initial point (every u = 0: the
    prior-free centre of each support, e.g. θ = 1 for θ > 0) and checks every site: unique
    names, priors that are Distributions, supports that have a bijection, finite log
    densities of the right shape, observed values inside the likelihood's support.
    Errors name the site; nothing is built on failure.

    Attributes
    ----------
    sites : tuple of :class:`Site`, in declaration order.
    latents : the latent sites; ``dim`` = D, the length of z.
    """

    def __init__(
        self,
        fn: Callable,
        data: Mapping | None = None,
        *,
        rows: Sequence[str] = (),
        dtype: torch.dtype = torch.float64,
        device=None,
    ):
        if not callable(fn):
            raise TypeError(f"fn must be callable as fn(m, data); got {type(fn).__name__}")
        if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise TypeError(f"dtype must be a floating torch.dtype; got {dtype!r}")
        self.fn = fn
        self.dtype = dtype
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.data = _prepare_data(data, dtype, self.device)
        self.rows = tuple(rows)
        self.num_data = _check_rows(self.data, self.rows)
        self.scale = 1.0
        self._predicting = False
        self._trace()

    def _trace(self):
        rec = _Recorder(self, "trace", None, torch.Size())
        with no_validation(False):
            self._run(rec)
        self.sites = tuple(rec.sites)
        self._by_name = {s.name: s for s in self.sites}
        self.latents = tuple(s for s in self.sites if s.kind == "latent")
        if not self.latents:
            raise ValueError("the model declares no latent variables (m.latent)")
        self.dim = self.latents[-1].stop
        self.initial_log_density = float(rec.log_density)

    def _run(self, rec):
        # Python numbers in the user's distributions (Normal(0.0, 5.0)) become tensors of
        # torch's default dtype: make it the model's for the call.
        before = torch.get_default_dtype()
        torch.set_default_dtype(self.dtype)
        try:
            return self.fn(rec) if self.data is None else self.fn(rec, self.data)
        finally:
            torch.set_default_dtype(before)

    def _record(self, mode, z):
        z = self._check_z(z)
        rec = _Recorder(self, mode, z, z.shape[:-1])
        self._run(rec)
        return rec

    def _check_z(self, z):
        if not isinstance(z, torch.Tensor):
            raise TypeError(f"z must be a tensor of shape (S, {self.dim}); got {type(z).__name__}")
        if z.ndim < 1 or z.shape[-1] != self.dim:
            raise ValueError(f"z must have shape (S, {self.dim}); got {tuple(z.shape)}")
        return z

    # ------------------------------------------------------------------ densities
    def log_density(self, z: torch.Tensor) -> torch.Tensor:
        """log p(x, z) on the unconstrained space (log-Jacobians included).

        ``z`` of shape ``(S, D)`` (or ``(D,)``); returns ``(S,)`` (or ``()``)."""
        with no_validation():
            rec = self._record("density", z)
        out = rec.log_density
        return out.expand(z.shape[:-1]) if out.shape != z.shape[:-1] else out

    __call__ = log_density

    def log_likelihood(self, z: torch.Tensor) -> torch.Tensor:
        """The likelihood part of :meth:`log_density`: (N/B) times the observed sites' and
        the ``likelihood=True`` factors' log densities. ``z`` ``(S, D)``; returns ``(S,)``
        (zeros for a model without observations)."""
        with no_validation():
            rec = self._record("density", z)
        out = rec.log_likelihood
        if out is None:
            return z.new_zeros(z.shape[:-1])
        return out.expand(z.shape[:-1]) if out.shape != z.shape[:-1] else out

    def constrain(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """The named latents and derived values at z: name → ``(S, *shape)`` tensors."""
        with torch.no_grad(), no_validation():
            return self._record("values", z).values

    def predict(self, z: torch.Tensor, generator: torch.Generator | None = None) -> dict:
        """As :meth:`constrain`, plus a draw of every observed site given θ(z)."""
        seed = int(torch.randint(0, 2**62, (), generator=generator))
        with torch.no_grad(), no_validation(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self._record("predict", z).values

    # ------------------------------------------------------------------ views
    def with_data(self, data: Mapping | None) -> Model:
        """The same model on other data (validated and traced again; for prediction an
        observed value may be None)."""
        view = object.__new__(Model)
        view.__dict__.update(self.__dict__)
        view.data = _prepare_data(data, self.dtype, self.device)
        view.rows = tuple(k for k in view.rows if (view.data or {}).get(k) is not None)
        view.num_data = _check_rows(view.data, view.rows)
        view.scale = 1.0
        view._predicting = True
        view._trace()
        if [(s.name, s.shape) for s in view.latents] != [(s.name, s.shape) for s in self.latents]:
            raise ValueError("the new data changes the model's latent variables or their shapes")
        return view

    def rebind(self, tensors: Mapping[str, torch.Tensor]) -> Model:
        """The same model reading the data tensors ``tensors`` in place of its own
        (same names, shapes and dtypes; not validated nor traced again): for a compiled
        function that takes the data as arguments (:mod:`varbayes.vi.compiled`)."""
        view = object.__new__(type(self))
        view.__dict__.update(self.__dict__)
        view.data = {**self.data, **tensors}
        return view

    def subsample(self, index) -> Model:
        """The minibatch model on rows ``index`` of the ``rows`` data: likelihood × N/B
        (the view's ``num_data`` is B, so a view of a view scales by N/B' in all)."""
        if not self.rows:
            raise ValueError("subsample needs Model(..., rows=[...]): the per-row data names")
        index = torch.as_tensor(index, device=self.device)
        view = self.rebind({k: self.data[k][index] for k in self.rows})
        view.num_data = int(index.numel())
        view.scale = self.scale * self.num_data / view.num_data
        return view

    @property
    def name(self) -> str:
        """The model function's name (for messages)."""
        return getattr(self.fn, "__name__", type(self.fn).__name__)

    @property
    def names(self) -> tuple[str, ...]:
        """The latent names, in declaration order (the order of their slices of z)."""
        return tuple(s.name for s in self.latents)

    def signature(self) -> tuple:
        """(function, latent names, shapes and supports): what a guide built for this model
        checks against."""
        return (self.fn, tuple((s.name, tuple(s.shape), repr(s.support)) for s in self.latents))

    def __repr__(self):
        latents = ", ".join(f"{s.name}{list(s.shape) if s.shape else ''}" for s in self.latents)
        return f"Model({self.name}: {latents}; D={self.dim})"


# ---------------------------------------------------------------------------- helpers
def _validation_on() -> bool:
    try:
        Normal(torch.zeros(()), -torch.ones(()))
    except ValueError:
        return True
    return False


_VALIDATING: list[bool] = []  # the setting inside each open no_validation block


@contextlib.contextmanager
def no_validation(off: bool = True):
    """Switch torch.distributions argument validation off (``off``) inside the block, and
    restore the caller's setting after. Inputs are validated once, at the boundary
    (:class:`Model`'s trace); the hot loop then skips ~25% of a small model's step.
    Inside another block the setting is known, so a nested block (every
    :meth:`Model.log_density` within a fit) does not probe torch for it."""
    before = _VALIDATING[-1] if _VALIDATING else _validation_on()
    if _VALIDATING and before == (not off):  # already so: nothing to switch (and nothing
        yield  # for torch.compile to trace through)
        return
    Distribution.set_default_validate_args(not off)
    _VALIDATING.append(not off)
    try:
        yield
    finally:
        _VALIDATING.pop()
        Distribution.set_default_validate_args(before)


def _is_real(support) -> bool:
    base = support
    while isinstance(base, constraints.independent):
        base = base.base_constraint
    return base is constraints.real


def _prepare_data(data, dtype, device):
    if data is None:
        return None
    if not isinstance(data, Mapping):
        raise TypeError(f"data must be a mapping from names to values; got {type(data).__name__}")
    out = {}
    for key, value in data.items():
        if isinstance(value, (bool, int, float, list, tuple, np.ndarray, np.generic)) or (
            isinstance(value, torch.Tensor)
        ):
            try:
                t = torch.as_tensor(value, device=device)
            except (TypeError, ValueError, RuntimeError):
                out[key] = value
                continue
            if t.dtype.is_floating_point:
                t = t.to(dtype)
                if not bool(torch.isfinite(t).all()):
                    raise ValueError(f"data[{key!r}] has NaN or infinite values")
            out[key] = t
        else:
            out[key] = value
    return out


def _check_rows(data, rows):
    if not rows:
        return 0
    if data is None:
        raise ValueError("rows needs data")
    n = None
    for k in rows:
        if k not in data or not isinstance(data[k], torch.Tensor) or data[k].ndim == 0:
            raise ValueError(f"rows: data[{k!r}] must be a tensor with a first dimension N")
        if n is None:
            n = data[k].shape[0]
        elif data[k].shape[0] != n:
            raise ValueError(
                f"rows: data[{k!r}] has {data[k].shape[0]} rows but data[{rows[0]!r}] has {n}"
            )
    return int(n)
