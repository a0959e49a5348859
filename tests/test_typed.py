"""Ages and limits as people type them, read alike by the command line and the dashboard."""

from __future__ import annotations

import pytest

from simplepyq import typed
from simplepyq.limits import Rate


@pytest.mark.parametrize(("text", "seconds"), [
    ("90", 90.0), ("1.5h", 5400.0), (" 30m ", 1800.0), (".5s", 0.5), ("7d", 604800.0)])
def test_an_age_is_a_number_of_seconds_or_one_with_a_unit(text: str, seconds: float) -> None:
    assert typed.age(text) == seconds


@pytest.mark.parametrize("text", ["", "ten", "-5", "5w", "5 m s", "1e3"])
def test_an_age_that_is_not_one_is_refused_naming_the_text(text: str) -> None:
    with pytest.raises(ValueError, match=rf"{text!r} is not a duration.*30m, 7d"):
        typed.age(text)


def test_none_removes_a_limit_and_anything_else_must_read_as_one() -> None:
    assert typed.rate(" None ") is None and typed.max_running("none") is None
    assert typed.rate("10/s") == Rate(10, 1.0)
    assert typed.max_running("3") == 3
    with pytest.raises(ValueError, match=r"'fast'.*or none removes the limit"):
        typed.rate("fast")
    with pytest.raises(ValueError, match=r"'three' is not a whole number \(at least 1\) or none"):
        typed.max_running("three")
    with pytest.raises(ValueError, match=r"at least 1.*got 0; or none removes the limit"):
        typed.max_running("0")
