"""The shared EM / CAVI loop, the chunked E-step and the hyper-parameter table.

A mixture model has latent assignments z_i ∈ {1..K} for the data x_i (i = 1..N)
and parameters θ = (π, μ, Σ). For any distribution q(z) over the assignments,

    log p(x | θ) = ELBO(q, θ) + KL(q(z) || p(z | x, θ)),
    ELBO(q, θ)   = Σ_i E_q[log p(x_i, z_i | θ)] - Σ_i E_q[log q(z_i)].

EM and mean-field CAVI both alternate two closed-form coordinate steps on this
one objective:

* E-step: q(z_i = k) = r_ik ∝ exp(ρ_ik), with ρ_ik = log π_k + log N(x_i | μ_k, Σ_k)
  (EM) or its expectation under q(θ) (CAVI). After it the ELBO is
  Σ_i log Σ_k exp(ρ_ik) (minus KL(q(θ) || p(θ)) for CAVI): for EM exactly log p(x | θ).
* M-step: θ (EM) or q(θ) (CAVI) from the sufficient statistics
  N_k = Σ_i r_ik, Σ_i r_ik x_i and Σ_i r_ik x_i x_iᵀ.

:class:`BaseMixture` owns everything around the two steps: validation of the
hyper-parameters (one table), of the data, restarts (``n_init``), the convergence
monitor (:class:`varbayes.monitor.ConvergenceMonitor`, fed the ELBO per datum so
``tol`` is independent of N), the chunked pass over the data, the final E-step,
prediction, scoring and saving. The state is a frozen record of
:mod:`varbayes.mixture._state` (:class:`~._state.EMParameters` or
:class:`~._state.VariationalPosterior`); every hook takes the record it needs as an
argument. Subclasses supply ``_initial_state``, ``_rho_constant`` (ρ_ik up to its
Mahalanobis term), ``_update`` (the M-step from a state) and ``_elbo``.
"""

from __future__ import annotations

import math
import numbers
import warnings

import numpy as np
import torch

from varbayes._validation import check_finite
from varbayes.mixture import _covariance as cv
from varbayes.mixture import _estep as es
from varbayes.mixture import distributed as dist
from varbayes.mixture import io as mio
from varbayes.mixture._init import INIT_PARAMS, Draws, initial_assignment
from varbayes.mixture._sklearn import (
    convergence_warning,
    is_random_state,
    not_fitted_error,
    sklearn_tags,
    torch_generator,
)
from varbayes.mixture._state import DataSummary, Gaussians, Stream
from varbayes.monitor import ConvergenceMonitor

__all__ = ["BaseMixture", "load"]

NOT_CONVERGED = (
    "Best performing initialization did not converge. Try different init parameters, "
    "or increase max_iter, tol, or check for degenerate data."
)


# ----------------------------------------------------------------------------- validation
class _Interval:
    def __init__(self, kind, low, high=None, closed="left"):
        self.kind, self.low, self.high, self.closed = kind, low, high, closed

    def check(self, owner, name, value):
        is_int = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        is_real = isinstance(value, numbers.Real) and not isinstance(value, bool)
        if self.kind is int and not is_int:
            raise TypeError(f"{owner}: {name} must be an integer; got {value!r}")
        if self.kind is float and not is_real:
            raise TypeError(f"{owner}: {name} must be a real number; got {value!r}")
        v = float(value)
        lo_ok = self.low is None or (
            v >= self.low if self.closed in ("left", "both") else v > self.low
        )
        hi_ok = self.high is None or (
            v <= self.high if self.closed in ("right", "both") else v < self.high
        )
        if not (lo_ok and hi_ok and math.isfinite(v)):
            lb = "[" if self.closed in ("left", "both") else "("
            rb = "]" if self.closed in ("right", "both") else ")"
            hi = "inf" if self.high is None else self.high
            raise ValueError(f"{owner}: {name} must be in {lb}{self.low}, {hi}{rb}; got {value!r}")


class _Options:
    def __init__(self, *options):
        self.options = options

    def check(self, owner, name, value):
        if not isinstance(value, str) or value not in self.options:
            raise ValueError(f"{owner}: {name} must be one of {list(self.options)}; got {value!r}")


class _Bool:
    def check(self, owner, name, value):
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{owner}: {name} must be True or False; got {value!r}")


class _Optional:
    def __init__(self, inner):
        self.inner = inner

    def check(self, owner, name, value):
        if value is not None:
            self.inner.check(owner, name, value)


class _Seed:
    def check(self, owner, name, value):
        if not is_random_state(value):
            raise TypeError(
                f"{owner}: {name} must be None, an integer >= 0, a numpy.random.RandomState, "
                f"a numpy.random.Generator or a torch.Generator; got {value!r}"
            )


class _Anything:
    def check(self, owner, name, value):
        pass


COMMON_PARAMETERS = {
    "n_components": _Interval(int, 1),
    "covariance_type": _Options(*cv.COVARIANCE_TYPES),
    "tol": _Interval(float, 0.0),
    "reg_covar": _Interval(float, 0.0),
    "max_iter": _Interval(int, 0),
    "n_init": _Interval(int, 1),
    "init_params": _Options(*INIT_PARAMS),
    "random_state": _Seed(),
    "warm_start": _Bool(),
    "verbose": _Interval(int, 0),
    "chunk_size": _Optional(_Interval(int, 1)),
    "distributed": _Bool(),
    "learning_decay": _Interval(float, 0.5, 1.0, closed="right"),
    "learning_offset": _Interval(float, 0.0),
    "device": _Anything(),
    "dtype": _Anything(),
}


_DTYPES = {
    "float64": torch.float64,
    "double": torch.float64,
    "float32": torch.float32,
    "float": torch.float32,
    torch.float64: torch.float64,
    torch.float32: torch.float32,
    np.float64: torch.float64,
    np.float32: torch.float32,
}


def _resolve_dtype(owner, value) -> torch.dtype | None:
    """The compute dtype named by ``value``; None: follow the data (see ``_check_X``)."""
    if value is None:
        return None
    key = np.dtype(value).type if isinstance(value, np.dtype) else value
    try:
        return _DTYPES[key]
    except (KeyError, TypeError):
        raise ValueError(
            f"{owner}: dtype must be None, float32 or float64 (torch, NumPy or a name); "
            f"got {value!r}"
        ) from None


def _resolve_device(owner, value) -> torch.device | None:
    """The compute device named by ``value`` (None: the data's), checked to be usable."""
    if value is None:
        return None
    try:
        dev = torch.device(value)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"{owner}: device must name a torch device; got {value!r}") from exc
    try:
        torch.empty(0, device=dev)
    except (RuntimeError, AssertionError) as exc:  # e.g. CUDA on a CPU-only build
        raise ValueError(
            f"{owner}: device={value!r} is not usable in this torch build or machine "
            f"({str(exc).splitlines()[0]}); use device='cpu' or None"
        ) from None
    return dev


def _output(t: torch.Tensor, like):
    """``t`` as the caller's type: NumPy when ``like`` is None (NumPy or list input),
    else a tensor on the device ``like``."""
    if like is None:
        return t.detach().cpu().numpy()
    return t.to(like)


def _like(X):
    """What :func:`_output` needs to return results in the type of the input ``X``."""
    return X.device if isinstance(X, torch.Tensor) else None


_FEATURE_CACHE_BYTES = 256 * 2**20


# ----------------------------------------------------------------------------- the base
class BaseMixture:
    """Shared machinery of :class:`GaussianMixture` and :class:`VariationalGaussianMixture`.

    Not used directly. Fitted attributes are torch tensors on ``device``; methods that
    return per-datum values return NumPy arrays for NumPy input and tensors for tensor
    input.
    """

    _parameter_table: dict = COMMON_PARAMETERS
    _supported_covariance_types = cv.COVARIANCE_TYPES
    _registry: dict[str, type] = {}  # class name -> class, for load
    _state_type: type[Gaussians] = Gaussians  # the record of the fitted state

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        BaseMixture._registry[cls.__name__] = cls

    # -------------------------------------------------------------- parameters
    def get_params(self, deep: bool = True) -> dict:
        """The constructor's hyper-parameters, by name (scikit-learn API)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params):
        """Set hyper-parameters by name (scikit-learn API); returns ``self``."""
        for name, value in params.items():
            if name not in self._param_names():
                raise ValueError(
                    f"{type(self).__name__}: unknown parameter {name!r}; "
                    f"valid ones are {sorted(self._param_names())}"
                )
            setattr(self, name, value)
        return self

    @classmethod
    def _param_names(cls) -> list[str]:
        import inspect

        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p != "self"]

    def __repr__(self) -> str:
        args = ", ".join(
            f"{k}={v!r}" for k, v in self.get_params().items() if not hasattr(v, "shape")
        )
        return f"{type(self).__name__}({args})"

    def _validate_params(self) -> None:
        owner = type(self).__name__
        for name, rule in self._parameter_table.items():
            rule.check(owner, name, getattr(self, name))
        if self.covariance_type not in self._supported_covariance_types:
            raise ValueError(
                f"{owner}: covariance_type must be one of {list(self._supported_covariance_types)}"
                f"; got {self.covariance_type!r}"
            )
        self._dtype_param = _resolve_dtype(owner, self.dtype)
        self._device_param = _resolve_device(owner, self.device)

    # -------------------------------------------------------------- scikit-learn protocol
    def __sklearn_tags__(self):
        """scikit-learn's estimator tags: a density estimator on dense 2-D input."""
        return sklearn_tags()

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "_state")

    # -------------------------------------------------------------- data
    def _check_X(self, X, name: str = "X", *, reset: bool) -> torch.Tensor:
        """X (N, D) as a tensor on the compute device, in the compute dtype.

        NumPy arrays (any numeric dtype, object arrays of numbers), lists and tensors are
        accepted. With ``reset`` (``fit``) the compute dtype and device are fixed from
        ``dtype``/``device``, or from X where those are None: a float32 X stays float32,
        anything else is float64; a tensor's device is kept.
        """
        if hasattr(X, "nnz") and hasattr(X, "toarray"):
            raise TypeError(
                f"{name}: sparse input is not supported; pass a dense array (X.toarray())"
            )
        if isinstance(X, torch.Tensor):
            t = X.detach()
        else:
            arr = np.asarray(X)
            if arr.dtype == object:
                try:
                    arr = arr.astype(np.float64)
                except (TypeError, ValueError) as exc:
                    raise TypeError(f"{name} must be numeric: {exc}") from None
            if arr.dtype.kind not in "biufc":
                raise TypeError(f"{name} must be numeric; got an array of dtype {arr.dtype}")
            with warnings.catch_warnings():  # read-only input (memmap): never written to
                warnings.filterwarnings("ignore", "The given NumPy array is not writable")
                t = torch.as_tensor(arr)
        if t.is_complex():
            raise ValueError(f"{name}: Complex data not supported; got dtype {t.dtype}")
        if t.layout != torch.strided:
            raise TypeError(f"{name}: sparse input is not supported; pass a dense tensor")
        if t.ndim != 2:
            raise ValueError(
                f"{name} must be a 2-D array of shape (n_samples, n_features); got "
                f"{t.ndim}-D with shape {tuple(t.shape)}. Reshape your data using "
                "X.reshape(-1, 1) if it has a single feature, or X.reshape(1, -1) if it "
                "holds a single sample"
            )
        for n, what, low in ((t.shape[1], "feature", 1), (t.shape[0], "sample", 1)):
            if n < low:
                raise ValueError(
                    f"{name}: found array with {n} {what}(s) (shape={tuple(t.shape)}) while "
                    f"a minimum of {low} is required."
                )
        if reset:
            float32 = t.dtype == torch.float32
            self._dtype = self._dtype_param or (torch.float32 if float32 else torch.float64)
            self._device = self._device_param or t.device
        elif t.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {t.shape[1]} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input"
            )
        x = t.to(device=self._device, dtype=self._dtype)
        return check_finite(x, name)

    def _check_fitted(self) -> None:
        if not hasattr(self, "_state"):
            raise not_fitted_error()(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with "
                "appropriate arguments before using this estimator."
            )

    def _out(self, t):
        """A fitted attribute in the type of the data given to ``fit``."""
        if isinstance(t, tuple):
            return tuple(self._out(v) for v in t)
        return _output(t, self._fit_like)

    def _publish(self, st) -> None:
        """Set the fitted attributes from the state, in the type of the data of ``fit``."""
        for name, value in self._attributes(st).items():
            setattr(
                self, name, self._out(value) if isinstance(value, (torch.Tensor, tuple)) else value
            )

    def _as_param(self, value, name: str) -> torch.Tensor:
        """An array-valued hyper-parameter as a finite tensor in the compute dtype/device."""
        if isinstance(value, torch.Tensor):
            t = value.detach()
        else:
            try:
                t = torch.as_tensor(np.asarray(value, dtype=np.float64))
            except (TypeError, ValueError) as exc:
                raise TypeError(f"{name} must be numeric; got {value!r:.80} ({exc})") from None
        return check_finite(t.to(device=self._device, dtype=self._dtype), name)

    def _draws(self) -> Draws:
        """The initialisation's random numbers (scikit-learn's stream for an int or a
        ``RandomState``, see :mod:`._init`)."""
        rs = self.random_state
        if self._is_distributed and not isinstance(rs, numbers.Integral):
            # the sharded initialisation needs the same draws on every process: rank 0's
            g = torch_generator(rs)
            (seed,) = dist.broadcast([torch.randint(0, 2**62, (1,), generator=g)])
            return Draws(torch.Generator(device="cpu").manual_seed(int(seed)))
        return Draws.from_random_state(rs)

    def _chunk(self, d: int, blocks: bool = False) -> int:
        if self.chunk_size is not None:
            return int(self.chunk_size)
        if blocks:
            width = 2 * self.n_components * d + d + self.n_components
        else:
            width = d + cv.quad_width(self.covariance_type, d) + self.n_components
        # about 4 MiB of features and logits per chunk: few chunks, still cache-resident
        return int(min(65536, max(512, (1 << 22) // (8 * width))))

    @property
    def _is_distributed(self) -> bool:
        return bool(self.distributed) and dist.is_active()

    def _allreduce(self, tensors):
        return dist.allreduce_sum(tensors) if self._is_distributed else tensors

    # -------------------------------------------------------------- global statistics
    def _data_summary(self, x: torch.Tensor) -> DataSummary:
        """N, the centre (mean) used to shift the data, and the centred second moments.

        The second-order statistic Σ_i q(x_i - x̄) gives the pooled covariance of the
        data, used for empty components and for the variational priors.
        """
        d = x.shape[1]
        n = torch.tensor(float(x.shape[0]), dtype=x.dtype, device=x.device)
        (n, s) = self._allreduce([n, x.sum(0)])
        mean = s / n
        chunk = self._chunk(d)
        second = x.new_zeros((d, d))
        lo = torch.full((d,), math.inf, dtype=x.dtype, device=x.device)
        hi = -lo
        for a in range(0, x.shape[0], chunk):
            xc = x[a : a + chunk] - mean
            second.addmm_(xc.T, xc)
            lo = torch.minimum(lo, xc.amin(0))
            hi = torch.maximum(hi, xc.amax(0))
        (second,) = self._allreduce([second])
        cov = second / n
        if not bool(torch.isfinite(cov).all()):
            raise ValueError(
                f"X: the variance of the data overflows {x.dtype} (values up to "
                f"{float(x.abs().max()):.3g}); scale the input data"
            )
        spread = hi - lo
        if self._is_distributed:
            (spread,) = self._allreduce([spread])
        constant = torch.nonzero(spread == 0).flatten().tolist()
        if constant:
            warnings.warn(
                f"feature(s) {constant} of X are constant; their variance in every "
                f"component is reg_covar={self.reg_covar:g}",
                cv.DegenerateMixtureWarning,
                stacklevel=4,
            )
        return DataSummary(n=float(n), mean=mean, cov=cov)

    # -------------------------------------------------------------- the chunked pass
    def _coefficients(self, st: Gaussians) -> es.Coefficients:
        """The E-step's record of ρ_ik = const_k - ½ (x_i - μ_k)ᵀ Λ_k (x_i - μ_k) for ``st``."""
        return es.coefficients(
            self.covariance_type,
            self._rho_constant(st),
            st.means,
            st.precisions,
            st.precisions_cholesky,
            st.iu,
        )

    def _feature_cache(self, x: torch.Tensor):
        """A list to keep the chunks' features φ(x) across iterations, or None.

        φ(x) does not change during a fit. It is kept when it costs at most 256 MiB
        (N = 1e5 rows of D = 16 take 122 MB in float64);
        otherwise it is recomputed per chunk and memory stays O(chunk x (K + D²)) besides
        the data.
        """
        n, d = x.shape
        t = cv.quad_width(self.covariance_type, d)
        return [] if n * (d + t + 1) * x.element_size() <= _FEATURE_CACHE_BYTES else None

    def _pass(self, x: torch.Tensor, st: Gaussians | None, resp=None, cache=None, shift=None):
        """One E-step over ``x`` under the state ``st`` (:func:`._estep.e_step`): the
        statistics and Σ_i log Σ_k exp(ρ_ik); with ``resp`` (and ``st`` None), the
        statistics of those responsibilities in coordinates shifted by ``shift``
        instead (initialisation)."""
        coef = None if resp is not None else self._coefficients(st)
        blocks = isinstance(coef, es.Blocks)
        shift = st.shift if shift is None else shift
        return es.e_step(
            x,
            coef,
            cov_type=self.covariance_type,
            k=self.n_components,
            shift=shift,
            iu=cv.tri_indices(x.shape[1], x.device),
            chunk=self._chunk(x.shape[1], blocks=blocks),
            allreduce=self._allreduce if self._is_distributed else None,
            resp=resp,
            cache=cache,
        )

    def _iter_log_rho(self, x: torch.Tensor, st: Gaussians):
        """Yield (start, stop, ρ (C, K)) over chunks of ``x`` under the state ``st``."""
        coef = self._coefficients(st)
        chunk = self._chunk(x.shape[1], blocks=isinstance(coef, es.Blocks))
        yield from es.iter_log_rho(
            x, coef, cov_type=self.covariance_type, shift=st.shift, iu=st.iu, chunk=chunk
        )

    # -------------------------------------------------------------- the loop
    def fit(self, X, y=None):
        """Fit the mixture to X (N, D) by maximising the ELBO; returns ``self``.

        ``y`` is ignored (scikit-learn API).
        """
        self._fit(X, final_labels=False)
        return self

    def fit_predict(self, X, y=None):
        """Fit to X (N, D) and return the labels argmax_k r_ik (N,) of a final E-step.

        The final E-step uses the returned parameters, so
        ``fit_predict(X) == fit(X).predict(X)``.
        """
        x = self._fit(X, final_labels=True)
        return _output(x, _like(X))

    def _check_n_samples(self, n: int, shape) -> None:
        if n < 2:
            raise ValueError(
                f"X: found array with {n} sample(s) (shape={tuple(shape)}) while a minimum of "
                "2 is required."
            )
        if n < self.n_components:
            raise ValueError(
                "Expected n_samples >= n_components but got "
                f"n_components = {self.n_components}, n_samples = {n}"
            )

    def _fit(self, X, *, final_labels: bool):
        """The EM / CAVI loop, with scikit-learn's semantics.

        Each iteration is an E-step (its ELBO per datum is recorded), then an M-step.
        A run stops when the ELBO changes by less than ``tol`` or after ``max_iter``
        iterations (``max_iter=0`` keeps the initialisation). With ``warm_start`` the
        first change is measured from the previous fit's ``lower_bound_``, so repeated
        one-iteration fits converge as one long fit does. Of ``n_init`` runs the one with
        the largest final ELBO is kept.
        """
        self._validate_params()
        self.__dict__.pop("_stream", None)  # a batch fit forgets partial_fit's statistics
        warm = bool(self.warm_start) and hasattr(self, "_state")
        x = self._check_X(X, reset=not warm)
        n_total = x.shape[0]
        if self._is_distributed:
            (nt,) = dist.allreduce_sum([torch.tensor([float(n_total)], dtype=torch.float64)])
            n_total = int(nt.item())
        self._check_n_samples(n_total, x.shape)
        self._check_init_shapes(x.shape[1])
        if warm and self._state.d != x.shape[1]:
            raise ValueError(
                f"X has {x.shape[1]} features, but the warm-started model has "
                f"{self._state.d}; set warm_start=False"
            )
        self.n_features_in_ = x.shape[1]
        self._fit_like = _like(X)
        summary = self._data_summary(x)
        draws = self._draws()
        max_iter, tol = int(self.max_iter), float(self.tol)
        previous = float(self.lower_bound_) if warm else -math.inf
        best = None
        blocks = es.use_blocks(self.covariance_type, self.n_components, x.shape[1])
        cache = None if blocks else self._feature_cache(x)
        for _ in range(1 if warm else int(self.n_init)):
            if warm:
                state = self._state
            else:
                state = self._initial_state(x, summary, draws)
                if self._is_distributed:
                    state = self._broadcast_state(state)
            self._state = state
            self._warned = set()
            trace: list[float] = []
            monitor, converged = None, False
            if max_iter > 0:
                monitor = ConvergenceMonitor(
                    tol=tol,
                    max_iter=max_iter,
                    # the M-step maximises the ELBO exactly only without reg_covar; with it the
                    # bound may fall by about reg_covar * tr(Λ_k) / 2 per datum (as in sklearn)
                    monotone=float(self.reg_covar) == 0.0,
                    decrease_tol=max(1e-10, 64 * torch.finfo(self._dtype).eps),
                    name=f"{type(self).__name__} ELBO per datum",
                    verbose=bool(self.verbose),
                )
                while True:
                    stats, lse = self._pass(x, self._state, cache=cache)
                    elbo = float(self._elbo(lse, self._state)) / summary.n
                    trace.append(elbo)
                    stop = monitor.update(elbo)
                    self._state = self._update(stats, self._state, summary)
                    first = len(trace) == 1 and abs(elbo - previous) < tol
                    if stop or first:
                        converged = monitor.converged or first
                        monitor.close()
                        break
            bound = trace[-1] if trace else -math.inf
            if best is None or bound > best[0] or max_iter == 0:
                best = (bound, self._state, trace, monitor, converged)
        bound, self._state, trace, self.monitor_, self.converged_ = best
        if not self.converged_ and max_iter > 0:
            change = trace[-1] - (trace[-2] if len(trace) > 1 else previous)
            warnings.warn(
                f"{NOT_CONVERGED} (ELBO per datum {bound:.6g} after {len(trace)} iterations, "
                f"last change {change:.3g}, tol {tol:g})",
                convergence_warning(),
                stacklevel=3,
            )
        self.n_iter_ = len(trace)
        self.lower_bound_ = bound
        self.lower_bounds_ = trace
        self._publish(self._state)
        if final_labels:
            return self._labels(x)
        return None

    # -------------------------------------------------------------- online updates
    def _partial_fit(self, X, n_samples):
        """The loop shared by both ``partial_fit``: an E-step on the batch under the
        current state, per-datum statistics ŝ, s_t = (1 - ρ_t) s_{t-1} + ρ_t ŝ_t with
        ρ_0 = 1 and ρ_t = (t + τ₀)^(-κ), then the subclass's ``_online_step(s_t, N)``.

        N is ``n_samples`` (the rows of the whole data set; at least the batch), or, when
        it is None, the number of rows seen so far, this batch included.
        """
        first = not hasattr(self, "_stream")
        if first:
            self._validate_params()
        x = self._check_X(X, reset=first)
        nb = float(x.shape[0])
        if self._is_distributed:
            (nbt,) = self._allreduce([torch.tensor(nb, dtype=torch.float64)])
            nb = float(nbt)
        if n_samples is not None and n_samples < nb:
            raise ValueError(
                f"n_samples (N, the rows of the whole data set) must be at least the batch "
                f"size {nb:g}; got {n_samples:g}"
            )
        if first:
            if nb < self.n_components:
                raise ValueError(
                    f"X must have at least n_components={self.n_components} samples in the "
                    f"first partial_fit batch; got {nb:g}"
                )
            self.n_features_in_ = x.shape[1]
            self._fit_like = _like(X)
            self._check_init_shapes(x.shape[1])
            summary = self._data_summary(x)
            self._warned = set()
            self._state = self._initial_state(x, summary, self._draws())
            self._stream = Stream(t=0, summary=summary, stats=None, rows=0.0)
            self.lower_bounds_ = []
        on = self._stream
        rows = on.rows + nb
        n_total = rows if n_samples is None else float(n_samples)
        stats, lse = self._pass(x, self._state)
        bound = float(self._elbo(lse * (n_total / nb), self._state)) / n_total
        s_hat = stats.scaled(1.0 / nb)
        rho = 1.0 if on.t == 0 else (on.t + self.learning_offset) ** (-self.learning_decay)
        s = s_hat if on.stats is None else on.stats.blend(s_hat, rho)
        self._state = self._online_step(s, n_total, self._state, on.summary)
        self._stream = Stream(t=on.t + 1, summary=on.summary, stats=s, rows=rows)
        self.lower_bounds_.append(bound)
        self.lower_bound_ = bound
        self.n_iter_ = self._stream.t
        self.converged_ = False
        self._publish(self._state)
        return self

    # -------------------------------------------------------------- hooks
    def _check_init_shapes(self, d: int) -> None:
        pass

    def _broadcast_state(self, state: Gaussians) -> Gaussians:
        """Rank 0's ``state`` on every process."""
        tensors = state.tensors()
        vals = dist.broadcast([t.to(self._dtype) for t in tensors.values()])
        new = {k: v.to(t.dtype) for (k, t), v in zip(tensors.items(), vals, strict=True)}
        return type(state).from_tensors(new)

    def _initial_resp(self, x: torch.Tensor, draws: Draws, shift: torch.Tensor):
        reduce = dist.allreduce_sum if self._is_distributed else None
        return initial_assignment(
            x,
            self.n_components,
            self.init_params,
            draws,
            self._chunk(1),
            allreduce=reduce,
            shift=shift,
        )

    def _warn_once(self, key: str, message: str) -> None:
        if key not in getattr(self, "_warned", set()):
            self._warned = getattr(self, "_warned", set()) | {key}
            warnings.warn(message, cv.DegenerateMixtureWarning, stacklevel=5)

    # -------------------------------------------------------------- prediction
    def _labels(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.empty(x.shape[0], dtype=torch.int64, device=x.device)
        for a, b, r in self._iter_log_rho(x, self._state):
            out[a:b] = r.argmax(1)
        return out

    def predict(self, X):
        """Most probable component argmax_k q(z_i = k) for each row of X (N, D) → (N,)."""
        self._check_fitted()
        x = self._check_X(X, reset=False)
        return _output(self._labels(x), _like(X))

    def predict_proba(self, X):
        """Responsibilities r_ik = q(z_i = k) ∝ exp(ρ_ik) for X (N, D) → (N, K)."""
        self._check_fitted()
        x = self._check_X(X, reset=False)
        out = torch.empty((x.shape[0], self.n_components), dtype=x.dtype, device=x.device)
        for a, b, r in self._iter_log_rho(x, self._state):
            out[a:b] = torch.softmax(r, 1)
        return _output(out, _like(X))

    def score_samples(self, X):
        """log Σ_k exp(ρ_ik) for each row of X (N, D) → (N,).

        For EM this is the log-density log p(x_i | θ) of the fitted mixture.
        """
        self._check_fitted()
        x = self._check_X(X, reset=False)
        out = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
        for a, b, r in self._iter_log_rho(x, self._state):
            out[a:b] = torch.logsumexp(r, 1)
        return _output(out, _like(X))

    def score(self, X, y=None) -> float:
        """Mean of :meth:`score_samples` over the rows of X (a float)."""
        s = self.score_samples(X)
        return float(s.mean())

    def elbo(self, X) -> float:
        """The ELBO per datum of the fitted model on X (N, D), with q(z) at its optimum:

            (1/N) [Σ_i log Σ_k exp(ρ_ik) - KL(q(θ) || p(θ))],

        the quantity recorded in ``lower_bounds_``. For :class:`GaussianMixture` there is
        no KL term and it equals :meth:`score`, the mean log-likelihood; for the
        variational mixture it is the full bound (every constant kept) of the fitted
        q(π, μ, Λ), e.g. on held-out data. ``lower_bound_`` is the bound *before* the
        last update, so on the training data the two agree once the fit has converged.
        X is taken as the whole data set, also with ``distributed=True``.
        """
        self._check_fitted()
        x = self._check_X(X, reset=False)
        lse = x.new_zeros(())
        for _, _, r in self._iter_log_rho(x, self._state):
            lse += torch.logsumexp(r, 1).sum()
        return float(self._elbo(lse, self._state)) / x.shape[0]

    # ------------------------------------------------------------------ sampling
    def sample(self, n_samples: int = 1):
        """Draw x ~ p(x | θ): returns (X (n_samples, D), labels (n_samples,)), sorted by
        component like scikit-learn, in the type of the data given to ``fit``. Uses
        ``random_state``: an int or a ``RandomState`` draws scikit-learn's own numbers
        (the counts by ``multinomial``, then each component's rows; see :class:`._init.Draws`).
        For the variational mixture θ is the posterior mean (weights_, means_,
        covariances_), as in scikit-learn."""
        self._check_fitted()
        if isinstance(n_samples, bool) or not isinstance(n_samples, numbers.Integral):
            raise TypeError(f"n_samples must be an integer; got {n_samples!r}")
        n = int(n_samples)
        if n < 1:
            raise ValueError(
                f"Invalid value for 'n_samples': {n} . The sampling requires at least one sample."
            )
        st = self._state
        draws = self._draws()
        counts = draws.multinomial(n, self._weights(st).detach().cpu().to(torch.float64))
        ct, cov, means = self.covariance_type, st.covariances, st.means + st.shift
        xs = torch.cat(
            [
                draws.normal(means[k], cov if ct == "tied" else cov[k], int(c))
                for k, c in enumerate(counts.tolist())
            ]
        ).to(device=self._device, dtype=self._dtype)
        labels = torch.repeat_interleave(torch.arange(self.n_components), counts).to(self._device)
        return self._out(xs), self._out(labels)

    # ------------------------------------------------------------------ persistence
    def _state_shapes(self, d: int) -> dict[str, tuple]:
        """Saved name -> shape of every tensor of the fitted state (the saved ``state.*``,
        the names of :meth:`._state._Record.tensors`)."""
        cov = self._precision_shape(d)
        return {
            "shift": (d,),
            "means": (self.n_components, d),
            "cov": cov,
            "prec": cov,
            "pchol": cov,
        }

    def _precision_shape(self, d: int) -> tuple:
        k = self.n_components
        return {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}[
            self.covariance_type
        ]

    def save(self, path) -> None:
        """Save the fitted model to the directory ``path`` (safetensors + JSON).

        The save is atomic as a whole (:mod:`varbayes.mixture.io`): ``path`` then holds
        the complete new model, or, after a failure, what it held before.
        """
        self._check_fitted()
        params, tensors, array_params, not_saved = {}, {}, [], []
        for k, v in self.get_params().items():
            if isinstance(v, np.generic):  # NumPy scalars are saved as Python ones
                v = v.item()
            if k == "dtype" and v is not None:
                v = str(self._dtype_param).removeprefix("torch.")
            elif k == "device" and v is not None:
                v = str(v)
            if v is None or isinstance(v, (bool, int, float, str)):
                params[k] = v
            elif isinstance(v, (torch.Tensor, np.ndarray, list, tuple)):
                # *_init and priors given as arrays: saved as tensors, passed back on load
                a = v.detach().cpu() if isinstance(v, torch.Tensor) else v
                tensors[f"param.{k}"] = torch.as_tensor(np.asarray(a, dtype=np.float64))
                array_params.append(k)
            else:  # a generator as random_state: its state is not saved
                params[k] = None
                not_saved.append(k)
        for k, v in self._state.tensors().items():
            tensors[f"state.{k}"] = v
        finite = [float(b) for b in self.lower_bounds_]
        config = {
            "format_version": mio.FORMAT_VERSION,
            "class": type(self).__name__,
            "params": params,
            "array_params": array_params,
            "not_saved": not_saved,
            "fit_input": "numpy" if self._fit_like is None else "torch",
            "n_features_in_": int(self.n_features_in_),
            "n_iter_": int(self.n_iter_),
            "converged_": bool(self.converged_),
            "lower_bound_": float(self.lower_bound_) if math.isfinite(self.lower_bound_) else None,
            "lower_bounds_": finite,
        }
        mio.write_model(path, config, tensors)

    @classmethod
    def load(cls, path, *, device=None):
        """Restore a model written by :meth:`save` from the directory ``path``.

        Everything is checked before a model is returned: the class (one of a fixed
        list), the hyper-parameters, and every state tensor against them (names, shapes
        for n_components, n_features_in_ and covariance_type, floating dtype, finite
        values). A damaged or edited file is one ValueError naming it. ``device``
        overrides the saved one. Attributes are NumPy arrays, or tensors on ``device`` if
        the model was fitted on tensors.
        """
        config, tensors = mio.read_model(path)

        def bad_config(msg):
            return mio.config_error(path, msg)

        name = config.get("class")
        registry = BaseMixture._registry
        if not isinstance(name, str) or name not in registry:
            raise bad_config(f"names class {name!r}; expected one of {sorted(registry)}")
        klass = registry[name]
        if not issubclass(klass, cls):
            raise bad_config(f"holds a {name}, not a {cls.__name__}")
        if config.get("format_version") != mio.FORMAT_VERSION:
            raise bad_config(
                f"format_version {config.get('format_version')!r}; expected {mio.FORMAT_VERSION}"
            )
        params = config.get("params")
        if not isinstance(params, dict):
            raise bad_config(f"'params' must be an object; got {params!r:.80}")
        params = dict(params)
        array_params = config.get("array_params", [])
        if not isinstance(array_params, list):
            raise bad_config(f"'array_params' must be a list; got {array_params!r:.80}")
        for k in array_params:
            if f"param.{k}" not in tensors:
                raise mio.weights_error(path, f"the saved parameter {k!r} is missing")
            params[k] = tensors[f"param.{k}"]
        if device is not None:
            params["device"] = str(device)
        try:
            model = klass(**params)
            model._validate_params()
        except (TypeError, ValueError) as exc:
            raise bad_config(f"invalid hyper-parameters ({exc})") from None
        d = config.get("n_features_in_")
        if isinstance(d, bool) or not isinstance(d, int) or d < 1:
            raise bad_config(f"'n_features_in_' must be an integer >= 1; got {d!r:.80}")
        n_iter, converged = config.get("n_iter_"), config.get("converged_")
        bound, bounds = config.get("lower_bound_"), config.get("lower_bounds_")
        if isinstance(n_iter, bool) or not isinstance(n_iter, int) or n_iter < 0:
            raise bad_config(f"'n_iter_' must be an integer >= 0; got {n_iter!r:.80}")
        if not isinstance(converged, bool):
            raise bad_config(f"'converged_' must be true or false; got {converged!r:.80}")
        if not (bound is None or mio.is_number(bound)):
            raise bad_config(f"'lower_bound_' must be a finite number or null; got {bound!r:.80}")
        if not (isinstance(bounds, list) and all(mio.is_number(b) for b in bounds)):
            raise bad_config(
                f"'lower_bounds_' must be a list of finite numbers; got {bounds!r:.80}"
            )
        state = {k[len("state.") :]: v for k, v in tensors.items() if k.startswith("state.")}
        expected = model._state_shapes(d)
        what = (
            f"n_components={model.n_components}, n_features_in_={d}, "
            f"covariance_type={model.covariance_type!r}"
        )
        if set(state) != set(expected):
            raise mio.weights_error(
                path, f"state tensors {sorted(state)}; a {name} with {what} has {sorted(expected)}"
            )
        dtypes = {v.dtype for v in state.values()}
        if len(dtypes) != 1 or not dtypes <= {torch.float32, torch.float64}:
            raise mio.weights_error(
                path, f"state dtypes {sorted(map(str, dtypes))}; expected one of float32 or float64"
            )
        for k, shape in expected.items():
            t = state[k]
            if tuple(t.shape) != shape:
                raise mio.weights_error(
                    path, f"state {k!r} has shape {tuple(t.shape)}; expected {shape} for {what}"
                )
            if not bool(torch.isfinite(t).all()):
                raise mio.weights_error(path, f"state {k!r} holds NaN or infinite values")
        model._dtype = dtypes.pop()
        model._device = model._device_param or torch.device("cpu")
        model._state = model._state_type.from_tensors(
            {k: v.to(model._device) for k, v in state.items()}
        )
        model._fit_like = model._device if config.get("fit_input") == "torch" else None
        model.n_features_in_ = d
        model.n_iter_ = n_iter
        model.converged_ = converged
        model.lower_bound_ = -math.inf if bound is None else float(bound)
        model.lower_bounds_ = [float(b) for b in bounds]
        model._publish(model._state)
        return model


def load(path, *, device=None):
    """Restore a :class:`GaussianMixture` or :class:`VariationalGaussianMixture` (or
    ``BayesianGaussianMixture``) saved with ``model.save(path)``; see :meth:`BaseMixture.load`."""
    return BaseMixture.load(path, device=device)
