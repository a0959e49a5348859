"""Outcome rules: backoff, retry, deferral, success and failure of a task run."""

from __future__ import annotations

from datetime import timedelta

import pytest

from simplepyq import Backoff, DelayException, Status, policy


def test_fixed_backoff_waits_the_same_every_time() -> None:
    assert [Backoff(5).seconds_after(n) for n in (1, 2, 10)] == [5, 5, 5]


def test_exponential_backoff_grows_up_to_its_cap() -> None:
    backoff = Backoff(1, factor=2, max_delay=10)
    assert [backoff.seconds_after(n) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]


def test_huge_exponents_stay_finite() -> None:
    assert Backoff(1, factor=10).seconds_after(10_000) == 10 * 365 * 86400


def test_backoff_from_seconds_or_timedelta_is_fixed() -> None:
    assert Backoff.coerce(3) == Backoff(3.0)
    assert Backoff.coerce(timedelta(minutes=2)) == Backoff(120.0)
    assert Backoff.coerce(Backoff(1, 2)) == Backoff(1, 2)


@pytest.mark.parametrize(
    ("kwargs", "error", "named"),
    [({"delay": -1}, ValueError, "-1"), ({"delay": "1"}, TypeError, "str"),
     ({"delay": 1, "factor": 0.5}, ValueError, "0.5"),
     ({"delay": 1, "max_delay": -2}, ValueError, "-2")],
)
def test_bad_backoff_is_refused_naming_the_value(
    kwargs: dict[str, object], error: type[Exception], named: str
) -> None:
    with pytest.raises(error, match=named):
        Backoff(**kwargs)  # type: ignore[arg-type]


def test_failure_with_retries_left_is_retried_at_once_by_default() -> None:
    decision = policy.raised(2, 1, "Traceback: boom", Backoff(), now=100.0)
    assert (decision.status, decision.retries, decision.run_at) == (Status.PENDING, 1, None)
    assert decision.error == "Traceback: boom" and decision.finished_at is None


def test_failure_with_backoff_is_delayed_until_the_wait_is_over() -> None:
    decision = policy.raised(1, 3, "boom", Backoff(2, factor=3), now=100.0)
    assert (decision.status, decision.retries, decision.run_at) == (Status.DELAYED, 0, 118.0)


def test_failure_without_retries_fails_for_good() -> None:
    decision = policy.raised(0, 4, "boom", Backoff(60), now=100.0)
    assert (decision.status, decision.retries, decision.finished_at) == (Status.FAILED, 0, 100.0)
    assert decision.error == "boom"


def test_deferral_keeps_retries_and_sets_the_run_time() -> None:
    decision = policy.deferred(3, 0.25, now=100.0)
    assert (decision.status, decision.retries, decision.run_at) == (Status.DELAYED, 3, 100.25)


def test_success_keeps_the_result() -> None:
    decision = policy.succeeded(1, b"\x2a", now=100.0)
    assert (decision.status, decision.result, decision.finished_at) == (Status.DONE, b"\x2a", 100.0)


@pytest.mark.parametrize(("given", "seconds"), [(1, 1.0), (0.05, 0.05),
                                                (timedelta(milliseconds=1500), 1.5)])
def test_delay_exception_accepts_fractions_and_timedeltas(given: object, seconds: float) -> None:
    assert DelayException(given).delay_seconds == seconds  # type: ignore[arg-type]


@pytest.mark.parametrize(("given", "error", "named"),
                         [(-1, ValueError, "-1"), ("soon", TypeError, "str"),
                          (float("inf"), ValueError, "inf"), (None, TypeError, "NoneType")])
def test_delay_exception_refuses_bad_delays_naming_them(
    given: object, error: type[Exception], named: str
) -> None:
    with pytest.raises(error, match=named):
        DelayException(given)  # type: ignore[arg-type]
