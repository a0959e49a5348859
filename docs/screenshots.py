"""Take the README's screenshots of the dashboard: docs/images/dashboard-overview.png and
docs/images/dashboard-task.png.

    SIMPLEPYQ_SCREENSHOTS=1 python -m pytest tests/test_dashboard_browser.py -k screenshots

(or ``python docs/screenshots.py``) builds a store with a few channels and an hour
of history, serves the dashboard over it with workers running, and photographs
two pages in headless Chromium at 1200x800. The history is made by running real
tasks with the clock set back minute by minute, so the chart has bars to show.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from unittest import mock

if TYPE_CHECKING:
    from playwright.sync_api import Browser

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from simplepyq import SimplePyQ  # noqa: E402 (after the checkout is importable)
from simplepyq.dashboard import Dashboard  # noqa: E402
from simplepyq.dashboard import server as dashboard_server  # noqa: E402


def send_email(args: dict[str, Any]) -> str:
    if args.get("bounce"):
        _connect(args["to"])
    return f"sent to {args['to']}"


def _connect(to: str) -> None:
    raise ConnectionRefusedError(f"smtp.example.com:587 refused the connection for {to}")


def render_report(args: dict[str, Any]) -> dict[str, Any]:
    if args["month"] == "2026-02":
        raise KeyError("revenue")
    return {"pages": 12, "month": args["month"]}


def build(store: Path, release: threading.Event) -> tuple[SimplePyQ, int]:
    """A store with an hour of history, pending and running tasks; the queue (running the
    'thumbnails' workers, whose tasks wait for ``release``) and a failed task's id."""
    queue = SimplePyQ(store)
    queue.add_channel("email", send_email)
    queue.add_channel("reports", render_report)
    queue.add_channel("thumbnails", lambda args: release.wait(600), max_workers=2)
    queue.declare("webhooks")
    queue.set_limits("email", rate_limit="50/s")
    queue.set_limits("reports", max_running=2)
    now = time.time()
    for minute in range(59, -1, -1):
        busy = 18 + (minute * 7) % 23 + (12 if 20 <= minute <= 30 else 0)
        with mock.patch("time.time", return_value=now - minute * 60 - 20):
            queue.enqueue_many("email", [{"to": f"user{i}@example.com",
                                          "bounce": i % 17 == minute % 5}
                                         for i in range(busy)])
            queue.enqueue_many("reports", [{"month": f"2026-0{1 + i % 9}"}
                                           for i in range(minute % 4)])
            queue.drain(["email", "reports"])
    failed = queue.enqueue("email", {"to": "ada@example.com", "template": "welcome",
                                     "bounce": True}, retries=2, key="welcome:ada")
    queue.drain(["email"], due=True)
    queue.enqueue_many("webhooks", [{"url": f"https://example.com/hook/{i}"} for i in range(7)])
    queue.enqueue("email", {"to": "later@example.com"}, delay=600)
    queue.enqueue_many("thumbnails", [{"image": f"img_{i}.png"} for i in range(5)])
    queue.start(["thumbnails"])
    deadline = time.monotonic() + 30
    while queue.counts()["thumbnails"]["running"] < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    return queue, failed


def take(browser: Browser, store: Path, out: Path) -> list[Path]:
    """Build the store at ``store`` and save the two screenshots in ``out``; their paths.

    The store is opened by its file name from its own directory, so that the pages'
    header shows ``tasks.db``, not the scratch directory's path."""
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    release = threading.Event()
    here = os.getcwd()
    os.chdir(store.parent)
    try:
        return _take(browser, Path(store.name), out, release)
    finally:
        os.chdir(here)


def _take(browser: Browser, store: Path, out: Path, release: threading.Event) -> list[Path]:
    queue, failed = build(store, release)
    dashboard = Dashboard(str(store))
    bound = dashboard_server.bind(dashboard, "127.0.0.1", 0)
    threading.Thread(target=bound.serve_forever, daemon=True).start()
    url = dashboard_server.url(bound).rstrip("/")
    shots = [(f"{url}/", out / "dashboard-overview.png"),
             (f"{url}/tasks/{failed}", out / "dashboard-task.png")]
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    try:
        page = context.new_page()
        for address, path in shots:
            page.goto(address)
            page.wait_for_selector("#live-state.live-state")
            page.screenshot(path=str(path))
    finally:
        context.close()
        bound.shutdown()
        bound.server_close()
        dashboard.close()
        release.set()
        queue.close()
    return [path for _, path in shots]


def main() -> None:
    import tempfile

    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright, tempfile.TemporaryDirectory() as scratch:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium",
                                             headless=True, args=["--no-sandbox"])
        for path in take(browser, Path(scratch) / "tasks.db", ROOT / "docs" / "images"):
            print(path)
        browser.close()


if __name__ == "__main__":
    main()
