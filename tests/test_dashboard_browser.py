"""The dashboard in a real browser: headless Chromium (Debian's) driven by Playwright.

The dashboard is served by the library's own server, in a thread, over a real
store whose workers run in this process; their tasks wait for events the tests
set, so that what the page must show next is decided by the test, never by
timing, and every wait on the page is bounded. Each page's console is watched:
an error there, a Content-Security-Policy violation or a dialog fails the test.

The tests skip, saying why, without Playwright or /usr/bin/chromium
(``bash .ci/chromium.sh`` installs it); under ``CI`` they fail instead.
"""

from __future__ import annotations

import importlib.util
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from simplepyq import SimplePyQ, Step
from simplepyq.dashboard import Dashboard
from simplepyq.dashboard import server as dashboard_server
from tests.support import ROOT, wait_until
from tests.test_dashboard import existing, status_of

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = "/usr/bin/chromium"
SCRIPT_ARGS = "<script>alert('x')</script>"
WAIT_MS = 15_000
"""How long a wait on the page may take (the page refreshes every 2 s)."""


def _missing() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "Playwright is not installed (pip install -e '.[test]')"
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing: install Debian's chromium (bash .ci/chromium.sh)"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    reason = _missing()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser tests, but {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                              args=["--no-sandbox"])
        yield launched
        launched.close()


# -- a store with workers, and the dashboard served --------
@dataclass
class Site:
    queue: SimplePyQ
    """The process's queue, running the workers of 'gate'."""
    url: str
    gates: dict[str, threading.Event] = field(default_factory=dict)
    runs: dict[str, int] = field(default_factory=dict)

    def gate(self, name: str) -> threading.Event:
        return self.gates.setdefault(name, threading.Event())


def serve(dashboard: Dashboard) -> tuple[str, Any]:
    """Serve ``dashboard`` on a free port of 127.0.0.1 in a thread; its URL and server."""
    bound = dashboard_server.bind(dashboard, "127.0.0.1", 0)
    threading.Thread(target=bound.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    return dashboard_server.url(bound).rstrip("/"), bound


@pytest.fixture
def site(store_path: str) -> Iterator[Site]:
    """Channel 'gate' (run here: each task waits for the event named by its args'
    ``name``; with ``fail`` it raises on its first run) and channel 'idle' (no worker
    runs it: its tasks stay pending)."""
    queue = SimplePyQ(store_path, poll_interval=0.01)
    site = Site(queue, "")

    def gate(args: dict[str, Any]) -> str:
        name = args["name"]
        site.runs[name] = site.runs.get(name, 0) + 1
        if args.get("fail") and site.runs[name] == 1:
            raise RuntimeError(f"{name} fails on its first run")
        if not site.gate(name).wait(30):
            raise TimeoutError(f"the test never opened gate {name}")
        return str(name)

    queue.add_channel("gate", gate, max_workers=4)
    queue.declare("idle")
    queue.start(["gate"])
    dashboard = Dashboard(store_path)  # a queue of its own, as a separate process has
    site.url, bound = serve(dashboard)
    try:
        yield site
    finally:
        for event in site.gates.values():
            event.set()
        bound.shutdown()
        bound.server_close()
        dashboard.close()
        queue.close()


@dataclass
class Watched:
    """A page and what it said that a clean page never says."""

    page: Page
    problems: list[str]


@pytest.fixture
def watched(browser: Browser) -> Iterator[Watched]:
    """A fresh page (1200x800) whose console errors, script errors, CSP violations and
    dialogs are recorded; the test fails if any was."""
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    page = context.new_page()
    problems: list[str] = []
    context.add_init_script("document.addEventListener('securitypolicyviolation', e => "
                            "console.error('CSP violation: ' + e.violatedDirective));")
    page.on("console", lambda message: problems.append(f"console: {message.text}")
            if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(f"script error: {error}"))

    def dialog(opened: Any) -> None:
        problems.append(f"dialog: {opened.message}")
        opened.dismiss()

    page.on("dialog", dialog)
    try:
        yield Watched(page, problems)
    finally:
        context.close()
    assert problems == []


def expect_text(page: Page, selector: str, text: str | re.Pattern[str]) -> None:
    from playwright.sync_api import expect

    expect(page.locator(selector)).to_have_text(text, timeout=WAIT_MS)


# -- the tests ---------------------------------------------
def test_the_overview_updates_as_tasks_finish_without_a_reload(site: Site,
                                                               watched: Watched) -> None:
    page, queue = watched.page, site.queue
    ids = [queue.enqueue("gate", {"name": f"t{i}"}) for i in range(3)]
    wait_until(lambda: all(status_of(queue, i) == "running" for i in ids))
    page.goto(site.url + "/")
    page.evaluate("window.notReloaded = true")
    done = "#part-counts a[href$='channel=gate&status=done']"
    running = "#part-counts a[href$='channel=gate&status=running']"
    expect_text(page, running, "3")
    assert page.locator(done).count() == 0
    assert page.evaluate(_BAR_HEIGHT) == 0
    site.gate("t0").set()
    expect_text(page, done, "1")
    expect_text(page, running, "2")
    site.gate("t1").set()
    site.gate("t2").set()
    expect_text(page, done, "3")
    expect_text(page, "#part-workers td.num >> nth=1", "0")  # the worker runs nothing now
    assert page.evaluate(_BAR_HEIGHT) > 0  # the chart was redrawn from the page's JSON
    assert page.evaluate("window.notReloaded") is True
    expect_text(page, "#live-state", "live")


_BAR_HEIGHT = """() => [...document.querySelectorAll('#throughput rect.done')]
    .reduce((sum, bar) => sum + Number(bar.getAttribute('height')), 0)"""


def test_the_refresh_pauses_while_the_tab_is_hidden(site: Site, watched: Watched) -> None:
    page = watched.page
    page.goto(site.url + "/")
    page.evaluate("""() => {
        Object.defineProperty(document, 'hidden', {value: true, configurable: true});
        document.dispatchEvent(new Event('visibilitychange'));
    }""")
    expect_text(page, "#live-state", "paused")
    site.queue.enqueue("idle", 1)
    page.evaluate("""() => {
        Object.defineProperty(document, 'hidden', {value: false, configurable: true});
        document.dispatchEvent(new Event('visibilitychange'));
    }""")
    expect_text(page, "#part-counts a[href$='channel=idle&status=pending']", "1")
    expect_text(page, "#live-state", "live")


def test_tasks_are_filtered_and_paged(site: Site, watched: Watched) -> None:
    page, queue = watched.page, site.queue
    ids = [queue.enqueue("idle", {"n": i}) for i in range(7)]
    queue.enqueue("gate", {"name": "other"})
    page.goto(site.url + "/tasks?limit=3")
    page.select_option("select[name=channel]", "idle")
    page.select_option("select[name=status]", "pending")
    page.click("form.filters button:text('filter')")
    page.wait_for_url(re.compile(r"channel=idle"))
    seen: list[int] = []
    for _ in range(3):
        links = page.locator("#part-list td.num a").all_inner_texts()
        seen += [int(text.lstrip("#")) for text in links]
        older = page.locator("a:text('older »')")
        if older.count() == 0:
            break
        older.click()
        page.wait_for_url(re.compile(r"before="))
    assert seen == sorted(ids, reverse=True)


def test_a_task_opens_with_its_script_args_shown_as_text(site: Site,
                                                        watched: Watched) -> None:
    page, queue = watched.page, site.queue
    task_id = queue.enqueue("idle", SCRIPT_ARGS, key="<b>key</b>")
    page.goto(site.url + "/tasks")
    page.click(f"a:text-is('#{task_id}')")
    page.wait_for_url(re.compile(rf"/tasks/{task_id}$"))
    expect_text(page, "#part-args pre", f'"{SCRIPT_ARGS}"')
    expect_text(page, "h1", f"Task {task_id}")
    assert "<b>key</b>" in page.locator("#part-summary").inner_text()
    assert page.locator("script").count() == 1  # the dashboard's own, nothing else
    assert page.locator("#part-args b, #part-summary b").count() == 0


def test_buttons_requeue_a_failed_task_and_cancel_a_pending_one(site: Site,
                                                               watched: Watched) -> None:
    page, queue = watched.page, site.queue
    site.gate("flaky").set()
    failed = queue.enqueue("gate", {"name": "flaky", "fail": True})
    wait_until(lambda: status_of(queue, failed) == "failed")
    pending = queue.enqueue("idle", {"n": 1})

    page.goto(f"{site.url}/tasks/{failed}")
    page.click("#part-actions button:text('requeue')")
    expect_text(page, ".flash", f"task {failed} requeued")
    wait_until(lambda: status_of(queue, failed) == "done")
    assert existing(queue, failed).result == "flaky"
    expect_text(page, "#part-summary .badge", "done")  # the page caught up by itself

    page.goto(f"{site.url}/tasks/{pending}")
    page.click("#part-actions button:text('cancel')")
    expect_text(page, ".flash", f"task {pending} cancelled")
    assert status_of(queue, pending) == "cancelled"


def test_a_post_from_another_site_is_refused(site: Site, watched: Watched) -> None:
    page, queue = watched.page, site.queue
    pending = queue.enqueue("idle", {"n": 1})
    target = f"{site.url}/tasks/{pending}/cancel"

    class Evil(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = (f'<form method="post" action="{target}"><input type="hidden" '
                    'name="back" value="/"><button>win a prize</button></form>').encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    evil = ThreadingHTTPServer(("127.0.0.1", 0), Evil)
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    try:
        # localhost and 127.0.0.1 are different sites to the browser
        page.goto(f"http://localhost:{evil.server_address[1]}/")
        with page.expect_response(target) as answer:
            page.click("button")
        assert answer.value.status == 403
        assert "refused" in page.locator(".problem").inner_text()
    finally:
        evil.shutdown()
        evil.server_close()
    assert status_of(queue, pending) == "pending"
    watched.problems[:] = [p for p in watched.problems if "403" not in p]


def test_every_page_loads_clean_in_the_browser(site: Site, watched: Watched) -> None:
    page, queue = watched.page, site.queue
    site.gate("quick").set()
    queue.chain(Step("gate", {"name": "quick"}), Step("gate", {"name": "quick"}))
    task_id = queue.enqueue("idle", {"text": "x" * 5000})
    queue.add_periodic("hourly", "idle", cron="@hourly")
    for path in ["/", "/tasks", f"/tasks/{task_id}", "/failed", "/workflows", "/periodic",
                 "/channels"]:
        page.goto(site.url + path)
        expect_text(page, "#live-state", "live")
    page.goto(f"{site.url}/tasks/{task_id}")
    page.click("#part-args summary")  # the long value, folded, opens
    assert len(page.locator("#part-args details pre").inner_text()) > 5000


# -- screenshots for the README ----------------------------
def test_screenshots_for_the_readme(browser: Browser, tmp_path: Path) -> None:
    """Run by hand with SIMPLEPYQ_SCREENSHOTS=1: rewrites docs/images/dashboard-*.png."""
    if os.environ.get("SIMPLEPYQ_SCREENSHOTS") != "1":
        pytest.skip("set SIMPLEPYQ_SCREENSHOTS=1 to rewrite docs/images/dashboard-*.png")
    spec = importlib.util.spec_from_file_location("screenshots", ROOT / "docs" / "screenshots.py")
    assert spec is not None and spec.loader is not None
    screenshots = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(screenshots)
    images = screenshots.take(browser, tmp_path / "tasks.db", ROOT / "docs" / "images")
    for image in images:
        assert image.stat().st_size > 10_000
