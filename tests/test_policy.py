"""Outcome rules: backoff, retry, deferral, success and failure of a task run."""

from __future__ import annotations

from datetime import timedelta

import pytest

from simplepyq import Backoff, DelayException, Status, policy

TEN_YEARS = 10 * 365 * 86400.0


# -- Backoff ----------------------------------------------------------------------------

def test_default_backoff_retries_at_once() -> None:
    assert [Backoff().seconds_after(n) for n in (0, 1, 2, 50)] == [0, 0, 0, 0]


def test_fixed_backoff_waits_the_same_every_time() -> None:
    assert [Backoff(5).seconds_after(n) for n in (1, 2, 3, 10)] == [5, 5, 5, 5]


def test_exponential_backoff_grows_by_its_factor_up_to_its_cap() -> None:
    backoff = Backoff(1, factor=2, max_delay=10)
    assert [backoff.seconds_after(n) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]


def test_exponential_backoff_without_a_cap_keeps_growing() -> None:
    backoff = Backoff(0.5, factor=3)
    assert [backoff.seconds_after(n) for n in range(1, 5)] == [0.5, 1.5, 4.5, 13.5]


def test_first_failure_waits_the_base_delay() -> None:
    assert Backoff(2, factor=10).seconds_after(1) == 2
    assert Backoff(2, factor=10).seconds_after(0) == 2


def test_huge_exponents_stay_finite() -> None:
    assert Backoff(1, factor=10).seconds_after(10_000) == TEN_YEARS


@pytest.mark.parametrize(("value", "expected"), [
    (3, Backoff(3.0)),
    (0.25, Backoff(0.25)),
    (0, Backoff()),
    (timedelta(minutes=2), Backoff(120.0)),
    (timedelta(milliseconds=1500), Backoff(1.5)),
])
def test_backoff_from_seconds_or_timedelta_is_fixed(value: object, expected: Backoff) -> None:
    coerced = Backoff.coerce(value)  # type: ignore[arg-type]
    assert coerced == expected
    assert coerced.factor == 1 and coerced.max_delay is None


def test_backoff_coerced_from_a_backoff_is_that_backoff() -> None:
    backoff = Backoff(1, 2, max_delay=30)
    assert Backoff.coerce(backoff) is backoff


@pytest.mark.parametrize(("value", "error", "named"), [
    (-1, ValueError, "-1"), ("5", TypeError, "str"), (None, TypeError, "NoneType"),
    (True, TypeError, "bool"), (float("inf"), ValueError, "inf"),
])
def test_bad_backoff_coercions_are_refused_naming_the_value(
    value: object, error: type[Exception], named: str
) -> None:
    with pytest.raises(error, match=named):
        Backoff.coerce(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "error", "named"),
    [
        pytest.param({"delay": -1}, ValueError, "-1", id="negative-delay"),
        pytest.param({"delay": "1"}, TypeError, "str", id="text-delay"),
        pytest.param({"delay": float("nan")}, ValueError, "nan", id="nan-delay"),
        pytest.param({"delay": 1, "factor": 0.5}, ValueError, "0.5", id="shrinking-factor"),
        pytest.param({"delay": 1, "factor": 0}, ValueError, "0", id="zero-factor"),
        pytest.param({"delay": 1, "factor": float("nan")}, ValueError, "nan", id="nan-factor"),
        pytest.param({"delay": 1, "factor": "2"}, TypeError, "str", id="text-factor"),
        pytest.param({"delay": 1, "factor": True}, TypeError, "bool", id="bool-factor"),
        pytest.param({"delay": 1, "max_delay": -2}, ValueError, "-2", id="negative-cap"),
        pytest.param({"delay": 1, "max_delay": "60"}, TypeError, "str", id="text-cap"),
    ],
)
def test_bad_backoff_is_refused_naming_the_value(
    kwargs: dict[str, object], error: type[Exception], named: str
) -> None:
    with pytest.raises(error, match=named):
        Backoff(**kwargs)  # type: ignore[arg-type]


def test_backoff_is_frozen() -> None:
    backoff = Backoff(1)
    with pytest.raises(AttributeError):
        backoff.delay = 2  # type: ignore[misc]


# -- decisions --------------------------------------------------------------------------

def test_failure_with_retries_left_and_no_backoff_is_pending_again_at_once() -> None:
    decision = policy.raised(2, 1, "Traceback: boom", Backoff(), now=100.0)
    assert (decision.status, decision.retries, decision.run_at) == (Status.PENDING, 1, None)
    assert decision.error == "Traceback: boom"
    assert decision.finished_at is None and decision.result is None


@pytest.mark.parametrize(("attempts", "run_at"), [(1, 102.0), (2, 106.0), (3, 118.0)])
def test_failure_with_a_backoff_is_delayed_until_the_wait_is_over(
    attempts: int, run_at: float
) -> None:
    decision = policy.raised(1, attempts, "boom", Backoff(2, factor=3), now=100.0)
    assert (decision.status, decision.retries, decision.run_at) == (Status.DELAYED, 0, run_at)
    assert decision.error == "boom"
    assert decision.finished_at is None and decision.result is None


@pytest.mark.parametrize("backoff", [Backoff(), Backoff(60)])
def test_failure_without_retries_fails_for_good(backoff: Backoff) -> None:
    decision = policy.raised(0, 4, "boom", backoff, now=100.0)
    assert (decision.status, decision.retries, decision.finished_at) == (Status.FAILED, 0, 100.0)
    assert decision.error == "boom" and decision.run_at is None


def test_unrunnable_task_fails_even_with_retries_left() -> None:
    decision = policy.unrunnable(3, "args could not be decoded", now=100.0)
    assert (decision.status, decision.retries, decision.finished_at) == (Status.FAILED, 3, 100.0)
    assert decision.error == "args could not be decoded"


@pytest.mark.parametrize("retries", [0, 3])
def test_deferral_keeps_retries_and_sets_the_run_time(retries: int) -> None:
    decision = policy.deferred(retries, 0.25, now=100.0)
    assert (decision.status, decision.retries, decision.run_at) == (
        Status.DELAYED, retries, 100.25)
    assert decision.error is None and decision.finished_at is None


def test_success_keeps_the_result_and_the_retries() -> None:
    decision = policy.succeeded(1, b"\x2a", now=100.0)
    assert decision == policy.Decision(Status.DONE, 1, result=b"\x2a", finished_at=100.0,
                                       ended_at=100.0)
    assert type(decision) is policy.Decision and decision.progress is None


# -- DelayException ---------------------------------------------------------------------

@pytest.mark.parametrize(("given", "seconds"), [(1, 1.0), (0, 0.0), (0.05, 0.05),
                                                (timedelta(milliseconds=1500), 1.5),
                                                (timedelta(hours=1), 3600.0)])
def test_delay_exception_accepts_fractions_and_timedeltas(given: object, seconds: float) -> None:
    delay = DelayException(given)  # type: ignore[arg-type]
    assert delay.delay_seconds == seconds
    assert isinstance(delay.delay_seconds, float)
    assert isinstance(delay, Exception)


@pytest.mark.parametrize(("given", "error", "named"),
                         [(-1, ValueError, "-1"), (-0.5, ValueError, "-0.5"),
                          (timedelta(seconds=-3), ValueError, "delay_seconds"),
                          ("soon", TypeError, "str"), (None, TypeError, "NoneType"),
                          (True, TypeError, "bool"), (float("inf"), ValueError, "inf"),
                          (float("nan"), ValueError, "nan")])
def test_delay_exception_refuses_bad_delays_naming_them(
    given: object, error: type[Exception], named: str
) -> None:
    with pytest.raises(error, match=named):
        DelayException(given)  # type: ignore[arg-type]


def test_delay_exception_too_long_to_show_as_a_date_is_refused() -> None:
    with pytest.raises(ValueError, match="delay_seconds"):
        DelayException(1e12)  # about 31,700 years: past datetime.max
