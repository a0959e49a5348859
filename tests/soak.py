"""How big the torture tests are: quick by default, scaled up by ``SIMPLEPYQ_SOAK``.

``SIMPLEPYQ_SOAK=20 python -m pytest tests/test_crash.py tests/test_races.py -s``
multiplies every size below by 20 (tasks, kills, Hypothesis examples) for a long
soak; the tests print what they did (tasks, kills, processes, duplicates, lost).
Unset, the whole suite stays within a few minutes on two cores.
"""

from __future__ import annotations

import os


def _factor() -> int:
    text = os.environ.get("SIMPLEPYQ_SOAK", "").strip()
    if not text:
        return 1
    try:
        factor = int(text)
    except ValueError:
        raise ValueError(f"SIMPLEPYQ_SOAK must be a whole number >= 1, got {text!r}") from None
    if factor < 1:
        raise ValueError(f"SIMPLEPYQ_SOAK must be a whole number >= 1, got {text!r}")
    return factor


FACTOR = _factor()
SOAKING = FACTOR > 1


def scaled(quick: int) -> int:
    """``quick`` in a normal run, ``quick * SIMPLEPYQ_SOAK`` in a soak."""
    return quick * FACTOR


def report(name: str, **figures: object) -> None:
    """Print one line of figures (shown with ``pytest -s``; kept for the README's table)."""
    listing = ", ".join(f"{key}={value}" for key, value in figures.items())
    print(f"\n[soak x{FACTOR}] {name}: {listing}")
