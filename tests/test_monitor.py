import math
import warnings

import pytest

from varbayes.monitor import ConvergenceMonitor, ConvergenceWarning, NonFiniteObjectiveError


def test_converges_when_change_below_tol():
    """A geometric sequence L_t = -2^-t stops at the first change below tol."""
    mon = ConvergenceMonitor(tol=1e-3, max_iter=100)
    t = 0
    while not mon.update(-(2.0**-t)):
        t += 1
    assert mon.converged
    # change between t-1 and t is 2^-t; first below 1e-3 is t = 10
    assert mon.n_iter == 11
    assert mon.history[-1] == pytest.approx(-(2.0**-10))


def test_stops_at_max_iter_and_warns():
    """A linearly increasing bound never converges; update returns True at max_iter."""
    mon = ConvergenceMonitor(tol=1e-6, max_iter=5)
    stops = [mon.update(float(i)) for i in range(5)]
    assert stops == [False, False, False, False, True]
    assert not mon.converged
    with pytest.warns(ConvergenceWarning, match="did not converge in 5 iterations"):
        mon.warn_if_not_converged()


def test_monotone_flags_a_decrease_and_does_not_converge_on_it():
    """With monotone=True a drop is recorded and warned about, never taken as convergence."""
    mon = ConvergenceMonitor(tol=1.0, max_iter=10, monotone=True)
    mon.update(0.0)
    with pytest.warns(RuntimeWarning, match="decreased at step 2"):
        stop = mon.update(-0.5)
    assert not stop
    assert mon.state.decreases == [(2, -0.5)]


def test_non_finite_value_raises_naming_the_step():
    """NaN stops the loop with an error naming the step; history keeps the finite values."""
    mon = ConvergenceMonitor(tol=0.0, max_iter=10)
    mon.update(1.0)
    mon.update(2.0)
    with pytest.raises(NonFiniteObjectiveError, match="at step 3") as info:
        mon.update(math.nan)
    assert info.value.step == 3
    assert mon.history == [1.0, 2.0]
    assert mon.best == 2.0 and mon.best_iter == 1


def test_window_smooths_noise():
    """Alternating noise of size 1 around a constant converges only when windows are compared."""
    values = [(-1.0) ** i for i in range(40)]
    plain = ConvergenceMonitor(tol=0.1, max_iter=40)
    assert not any(plain.update(v) for v in values[:-1])
    windowed = ConvergenceMonitor(tol=0.1, max_iter=40, window=4)
    n = next(i for i, v in enumerate(values) if windowed.update(v)) + 1
    assert windowed.converged and n == 8


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"tol": -1}, "tol"),
        ({"max_iter": 0}, "max_iter"),
        ({"window": 0}, "window"),
        ({"rtol": math.inf}, "rtol"),
    ],
)
def test_bad_options_name_the_argument(kwargs, name):
    """Invalid options raise ValueError naming the option."""
    with pytest.raises(ValueError, match=name):
        ConvergenceMonitor(**kwargs)


def test_quiet_monitor_emits_no_warning_when_converged():
    """warn_if_not_converged is silent after convergence."""
    mon = ConvergenceMonitor(tol=1.0)
    mon.update(0.0)
    mon.update(0.5)
    assert mon.converged
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mon.warn_if_not_converged()


def test_non_convergence_warning_reports_the_windowed_change():
    """With window=w the warning reports the change of the w-step means, not one noisy step."""
    mon = ConvergenceMonitor(tol=1e-9, max_iter=8, window=4)
    for v in [0.0, 10.0, 0.0, 10.0, 1.0, 11.0, 1.0, 11.0]:
        mon.update(v)
    with pytest.warns(ConvergenceWarning, match="windowed mean 1,"):
        mon.warn_if_not_converged()


@pytest.mark.parametrize(
    "settings", [dict(tol=0.0, rtol=0.0), dict(tol=0.5, rtol=0.0), dict(tol=0.0, monotone=True)]
)
def test_extend_is_update_value_by_value(settings):
    """extend(chunk) leaves the state update() would (history, best and its step,
    convergence), stops where it would (max_iter), and raises as it does on a NaN."""
    import random

    rng = random.Random(0)
    chunks = [[rng.gauss(-10 + i, 1) for _ in range(7)] for i in range(5)]
    a = ConvergenceMonitor(max_iter=30, window=3, **settings)
    b = ConvergenceMonitor(max_iter=30, window=3, **settings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # monotone: the decreases
        for chunk in chunks:
            stop_a = any(a.update(v) for v in chunk)
            assert b.extend(chunk) == stop_a
            assert a.state == b.state
            if stop_a:
                break
    assert len(b.history) <= 30
    c = ConvergenceMonitor(max_iter=30, **settings)
    with pytest.raises(NonFiniteObjectiveError, match="step 3") as info:
        c.extend([1.0, 2.0, math.nan, 4.0])
    assert info.value.step == 3 and c.history == [1.0, 2.0]
