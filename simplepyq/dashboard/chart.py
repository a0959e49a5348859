"""The overview's throughput chart: tasks done and failed per minute over the last hour.

Drawn here as an inline SVG of stacked bars, so that the page shows it without
script; ``dashboard.js`` redraws the same bars from ``Throughput.data()`` (the
page's JSON) every refresh, reading the geometry from the SVG's ``data-``
attributes, so that both draw alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from simplepyq.counters import FinishedMinute
from simplepyq.dashboard.markup import Html, tag

MINUTES = 60
WIDTH, HEIGHT = 720, 150
TOP, BASE = 14, 128
"""The y of the top of the tallest bar, and of the base line (SVG y grows downwards)."""
SLOT = WIDTH / MINUTES
BAR = SLOT - 2


@dataclass(frozen=True)
class Throughput:
    """Done and failed tasks of every channel, per minute, oldest minute first."""

    minutes: list[datetime]
    done: list[int]
    failed: list[int]

    @classmethod
    def of(cls, rows: Iterable[FinishedMinute], now: datetime) -> Throughput:
        """The last ``MINUTES`` minutes up to ``now``'s, each with the rows of its minute."""
        last = now.astimezone(timezone.utc).replace(second=0, microsecond=0)
        minutes = [last - timedelta(minutes=MINUTES - 1 - i) for i in range(MINUTES)]
        index = {minute: i for i, minute in enumerate(minutes)}
        done, failed = [0] * MINUTES, [0] * MINUTES
        for row in rows:
            i = index.get(row.minute.astimezone(timezone.utc).replace(second=0, microsecond=0))
            if i is not None:
                done[i] += row.done
                failed[i] += row.failed
        return cls(minutes, done, failed)

    @property
    def peak(self) -> int:
        return max(d + f for d, f in zip(self.done, self.failed, strict=True))

    def data(self) -> dict[str, Any]:
        """The series as the page's JSON carries them to the script."""
        return {"minutes": [minute.strftime("%H:%MZ") for minute in self.minutes],
                "done": self.done, "failed": self.failed}


def svg(throughput: Throughput) -> Html:
    """Stacked bars, done below failed, scaled to the busiest minute."""
    scale = (BASE - TOP) / max(throughput.peak, 1)
    bars = []
    for i, (minute, done, failed) in enumerate(zip(
            throughput.minutes, throughput.done, throughput.failed, strict=True)):
        x = f"{i * SLOT + 1:.1f}"
        done_height, failed_height = done * scale, failed * scale
        bars.append(tag(
            "g", {"class": "bar"},
            tag("title", {}, _told(minute.strftime("%H:%MZ"), done, failed)),
            tag("rect", {"class": "done", "x": x, "width": f"{BAR:.1f}",
                         "y": f"{BASE - done_height:.1f}", "height": f"{done_height:.1f}"}),
            tag("rect", {"class": "failed", "x": x, "width": f"{BAR:.1f}",
                         "y": f"{BASE - done_height - failed_height:.1f}",
                         "height": f"{failed_height:.1f}"})))
    return tag(
        "svg", {"id": "throughput", "class": "chart", "viewBox": f"0 0 {WIDTH} {HEIGHT}",
                "role": "img", "aria-label": "tasks done and failed per minute, last hour",
                "data-top": TOP, "data-base": BASE, "xmlns": "http://www.w3.org/2000/svg"},
        tag("line", {"class": "axis", "x1": 0, "x2": WIDTH, "y1": BASE, "y2": BASE}),
        tag("g", {"class": "bars"}, bars),
        tag("text", {"class": "label", "x": 2, "y": 10, "id": "throughput-peak"},
            f"peak {throughput.peak:,}/min"),
        tag("text", {"class": "label", "x": 2, "y": HEIGHT - 4}, "60 min ago"),
        tag("text", {"class": "label end", "x": WIDTH - 2, "y": HEIGHT - 4}, "now"))


def _told(minute: str, done: int, failed: int) -> str:
    """A bar's tooltip; ``dashboard.js`` writes the same words."""
    return f"{minute}: {done:,} done, {failed:,} failed"
