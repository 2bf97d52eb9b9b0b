"""One convergence monitor for every ELBO-maximising loop (EM, CAVI, SVI, VAE epochs).

The algorithm supplies one step and one bound; the monitor owns the rest:
the ELBO trace, the tolerance test, the best value so far, the check that a
bound which theory promises never falls does not fall, windowed means for
noisy (Monte Carlo) objectives, the progress bar and the non-convergence
warning.

Convergence is declared when the change of the (windowed mean of the) bound
between two consecutive checks falls below ``tol``::

    |L̄_t - L̄_{t-1}| < tol          (absolute; pass the ELBO per datum so tol is
                                      independent of N, as scikit-learn does)
    |L̄_t - L̄_{t-1}| < rtol * |L̄_t|  (relative; for objectives on any scale)

With ``window = w > 1``, ``L̄_t`` is the mean of the last ``w`` values and
consecutive checks compare disjoint windows, which smooths Monte Carlo noise.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, replace

from tqdm.auto import tqdm

__all__ = ["ConvergenceMonitor", "ConvergenceWarning", "NonFiniteObjectiveError", "MonitorState"]


class ConvergenceWarning(UserWarning):
    """A loop stopped at ``max_iter`` before its bound converged."""


class NonFiniteObjectiveError(FloatingPointError):
    """The objective became NaN or infinite; ``step`` is the 1-based step at which it happened."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


@dataclass
class MonitorState:
    """Everything the monitor knows, so that a run can be saved and resumed exactly."""

    history: list[float] = field(default_factory=list)
    best: float = -math.inf
    best_iter: int = -1
    converged: bool = False
    decreases: list[tuple[int, float]] = field(default_factory=list)

    def copy(self) -> MonitorState:
        """An independent copy (the lists copied, their immutable items shared: a
        ``deepcopy`` of a long history costs milliseconds)."""
        return replace(self, history=list(self.history), decreases=list(self.decreases))


class ConvergenceMonitor:
    """Track a bound ``L_t`` (an ELBO, to be maximised) and decide when to stop.

    Parameters
    ----------
    tol : float
        Absolute tolerance on the change of the windowed mean of ``L``; ``0``
        disables the absolute test (the loop then runs ``max_iter`` steps unless
        ``rtol`` fires).
    max_iter : int
        Largest number of updates before :meth:`update` returns ``True``.
    rtol : float
        Relative tolerance, ``|ΔL̄| < rtol * |L̄|``; ``0`` disables it.
    window : int
        Number of values averaged before comparing (1 for deterministic bounds).
    monotone : bool
        The bound must never decrease (EM, CAVI). A decrease larger than
        ``decrease_tol * max(1, |L|)`` is recorded in ``state.decreases`` and a
        ``RuntimeWarning`` names the step; it never counts as convergence.
    min_iter : int
        Do not declare convergence before this many updates.
    name : str
        Label of the loop, used in messages and the progress bar.
    verbose : bool
        Show a tqdm progress bar with the current bound.
    """

    def __init__(
        self,
        tol: float = 1e-3,
        max_iter: int = 100,
        *,
        rtol: float = 0.0,
        window: int = 1,
        monotone: bool = False,
        decrease_tol: float = 1e-10,
        min_iter: int = 1,
        name: str = "ELBO",
        verbose: bool = False,
    ):
        if not (isinstance(tol, (int, float)) and tol >= 0 and math.isfinite(tol)):
            raise ValueError(f"tol must be a finite number >= 0; got {tol!r}")
        if not (isinstance(rtol, (int, float)) and rtol >= 0 and math.isfinite(rtol)):
            raise ValueError(f"rtol must be a finite number >= 0; got {rtol!r}")
        if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
            raise ValueError(f"max_iter must be an integer >= 1; got {max_iter!r}")
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be an integer >= 1; got {window!r}")
        self.tol = float(tol)
        self.rtol = float(rtol)
        self.max_iter = max_iter
        self.window = window
        self.monotone = monotone
        self.decrease_tol = decrease_tol
        self.min_iter = min_iter
        self.name = name
        self.verbose = verbose
        self.state = MonitorState()
        self._bar = None

    # ------------------------------------------------------------------ views
    @property
    def history(self) -> list[float]:
        """The bound after every update, in order."""
        return self.state.history

    @property
    def n_iter(self) -> int:
        """Number of updates so far."""
        return len(self.state.history)

    @property
    def converged(self) -> bool:
        """Whether the tolerance test has fired."""
        return self.state.converged

    @property
    def best(self) -> float:
        """Largest bound seen."""
        return self.state.best

    @property
    def best_iter(self) -> int:
        """0-based index of the largest bound seen (-1 before any update)."""
        return self.state.best_iter

    @property
    def last(self) -> float:
        """The most recent bound (``-inf`` before any update)."""
        return self.state.history[-1] if self.state.history else -math.inf

    def smoothed(self) -> float:
        """Mean of the last ``window`` values."""
        tail = self.state.history[-self.window :]
        return sum(tail) / len(tail) if tail else -math.inf

    # ---------------------------------------------------------------- update
    def update(self, value: float) -> bool:
        """Record the bound of one more step; return ``True`` when the loop should stop.

        Raises :class:`NonFiniteObjectiveError` (naming the step) when ``value`` is
        NaN or infinite; the history keeps only the finite values before it.
        """
        value = float(value)
        st = self.state
        step = len(st.history) + 1
        if not math.isfinite(value):
            self.close()
            raise NonFiniteObjectiveError(
                f"{self.name} became {value} at step {step}; the last finite value was "
                f"{self.last:.6g} (step {step - 1}). Lower the learning rate, add "
                "regularisation, or check the data for extreme values.",
                step,
            )
        if self.monotone and st.history:
            prev = st.history[-1]
            if value < prev - self.decrease_tol * max(1.0, abs(prev)):
                st.decreases.append((step, value - prev))
                warnings.warn(
                    f"{self.name} decreased at step {step} by {prev - value:.3g} "
                    f"(from {prev:.10g} to {value:.10g}) although it should never decrease",
                    RuntimeWarning,
                    stacklevel=2,
                )
        st.history.append(value)
        if value > st.best:
            st.best, st.best_iter = value, step - 1
        self._progress(value)

        n, w = len(st.history), self.window
        if n >= max(self.min_iter, 2 * w) and (n % w == 0 or w == 1):
            cur = sum(st.history[-w:]) / w
            prev = sum(st.history[-2 * w : -w]) / w
            change = cur - prev
            # a fall within rounding (decrease_tol) at a fixed point is "no change"
            fell = self.monotone and change < -self.decrease_tol * max(1.0, abs(prev))
            if not fell and (
                abs(change) < self.tol or (self.rtol > 0 and abs(change) < self.rtol * abs(cur))
            ):
                st.converged = True
        if st.converged or n >= self.max_iter:
            self.close()
            return True
        return False

    def extend(self, values: list[float]) -> bool:
        """:meth:`update` with each value in turn, up to the first that returns ``True``
        (and raising as it does); returns whether the loop should stop. Records a whole
        chunk at once when the monitor only records (no tolerance, no monotone check)
        and every value is finite."""
        st = self.state
        room = self.max_iter - len(st.history)
        if (
            self.monotone
            or self.tol > 0
            or self.rtol > 0
            or room < 1
            or not all(map(math.isfinite, values))
        ):
            return any(self.update(v) for v in values)
        take = [float(v) for v in values[:room]]
        if not take:
            return False
        top = max(take)
        if top > st.best:
            st.best, st.best_iter = top, len(st.history) + take.index(top)
        st.history.extend(take)
        if self.verbose:
            self._progress(take[-1], len(take))
        if len(st.history) >= self.max_iter:
            self.close()
            return True
        return False

    def warn_if_not_converged(self, hint: str = "increase max_iter or tol") -> None:
        """Emit a :class:`ConvergenceWarning` when the loop ended without converging."""
        if not self.state.converged:
            warnings.warn(
                f"{self.name} did not converge in {self.n_iter} iterations "
                f"(last change of the {'windowed mean' if self.window > 1 else 'bound'} "
                f"{self._last_change():.3g}, tol {self.tol:g}, rtol {self.rtol:g}); {hint}",
                ConvergenceWarning,
                stacklevel=2,
            )

    def _last_change(self) -> float:
        """Change between the last two windows (single values when ``window = 1``)."""
        h, w = self.state.history, self.window
        if len(h) < 2 * w:
            return math.nan
        return (sum(h[-w:]) - sum(h[-2 * w : -w])) / w

    # ---------------------------------------------------------- progress bar
    def _progress(self, value: float, steps: int = 1) -> None:
        if not self.verbose:
            return
        if self._bar is None:
            self._bar = tqdm(total=self.max_iter, desc=self.name, leave=False)
        self._bar.update(steps)
        self._bar.set_postfix({self.name: f"{value:.6g}"}, refresh=False)

    def close(self) -> None:
        """Close the progress bar, if any."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
