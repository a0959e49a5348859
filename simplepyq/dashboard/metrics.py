"""``/metrics``: the store's figures in Prometheus' text exposition format (0.0.4).

Every figure is read from the store at each scrape, so that any number of
dashboards (or none running for a while) report the same values:
``simplepyq_tasks_finished_total`` is the store's own count of tasks finished
per channel and outcome, which never goes down (a purge or a restart does not
reset it), so Prometheus' ``rate()`` reads it as the counter it is.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime

from simplepyq.queue import SimplePyQ

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OUTCOMES = ("done", "failed", "cancelled")


def exposition(queue: SimplePyQ, now: datetime) -> str:
    """The text Prometheus scrapes: each metric's HELP and TYPE, then its samples."""
    counts = queue.counts()
    since = queue.pending_since()
    totals = queue.finished_totals()
    workers = [worker for worker in queue.workers() if worker.alive]
    lines: list[str] = []
    _metric(lines, "simplepyq_tasks", "gauge", "Tasks in the store, per channel and status.",
            (({"channel": name, "status": status}, count)
             for name, numbers in counts.items() for status, count in numbers.items()))
    _metric(lines, "simplepyq_oldest_pending_seconds", "gauge",
            "How long the channel's longest-waiting pending task has been due (0: none "
            "pending; NaN: unknown, a task without an enqueue time).",
            (({"channel": name}, _waited(now, since, name)) for name in counts))
    _metric(lines, "simplepyq_tasks_finished_total", "counter",
            "Tasks finished per channel and outcome, as the store counts them.",
            (({"channel": name, "outcome": outcome}, totals.get(name, {}).get(outcome, 0))
             for name in sorted(set(counts) | set(totals)) for outcome in OUTCOMES))
    _metric(lines, "simplepyq_workers", "gauge",
            "Live worker processes (queue instances running workers) per channel.",
            (({"channel": name}, sum(name in w.channels for w in workers))
             for name in counts))
    return "\n".join(lines) + "\n"


def _waited(now: datetime, since: dict[str, datetime | None], channel: str) -> float:
    if channel not in since:
        return 0.0
    moment = since[channel]
    return math.nan if moment is None else max((now - moment).total_seconds(), 0.0)


def _metric(lines: list[str], name: str, kind: str, help_text: str,
            samples: Iterable[tuple[dict[str, str], float]]) -> None:
    lines.append(f"# HELP {name} {_help(help_text)}")
    lines.append(f"# TYPE {name} {kind}")
    for labels, value in samples:
        shown = ",".join(f'{key}="{label_value(text)}"' for key, text in labels.items())
        lines.append(f"{name}{{{shown}}} {_number(value)}")


def label_value(text: str) -> str:
    """A label value as the format writes it: backslash, double quote and newline escaped."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _help(text: str) -> str:
    """HELP text escapes backslash and newline (not quotes)."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if isinstance(value, int) or value.is_integer():
        return str(int(value))
    return repr(value)
