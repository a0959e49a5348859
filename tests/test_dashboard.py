"""The web dashboard, called as a WSGI application over real stores (both backends), and
``simplepyq dashboard`` run as a real process.

Pages are requested as a server would hand them over (an environ built by
wsgiref's own defaults); what they show is checked against the store, and what
an action did is checked in the store afterwards.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import re
import signal
import socket
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urlencode
from wsgiref.util import setup_testing_defaults

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simplepyq import SimplePyQ, Step, Task
from simplepyq.dashboard import Dashboard
from simplepyq.dashboard.security import CSP
from tests.support import ROOT, SCRIPT, wait_until

SCRIPT_ARGS = "<script>alert('x')</script>"
PASSWORD = "correct horse"


def status_of(queue: SimplePyQ, task_id: int) -> str | None:
    task = queue.get_task(task_id)
    return None if task is None else task.status


def existing(queue: SimplePyQ, task_id: int) -> Task:
    task = queue.get_task(task_id)
    assert task is not None, f"task {task_id} is gone"
    return task


# -- calling the application -------------------------------
@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


def call(app: Dashboard, path: str = "/", *, method: str = "GET", query: str = "",
         form: dict[str, object] | None = None, headers: dict[str, str] | None = None,
         script_name: str = "") -> Answer:
    """One request through the WSGI interface, as a server would make it."""
    body = urlencode({k: v for k, v in (form or {}).items() if v is not None}).encode()
    environ: dict[str, Any] = {"REQUEST_METHOD": method, "PATH_INFO": path,
                               "SCRIPT_NAME": script_name, "QUERY_STRING": query,
                               "wsgi.input": io.BytesIO(body)}
    if form is not None:
        environ["CONTENT_TYPE"] = "application/x-www-form-urlencoded"
        environ["CONTENT_LENGTH"] = str(len(body))
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    setup_testing_defaults(environ)  # HTTP_HOST 127.0.0.1, http
    started: list[Any] = []

    def start_response(status: str, response_headers: list[tuple[str, str]]) -> None:
        started.extend([status, response_headers])

    chunks = b"".join(app(environ, start_response))
    names = [name.lower() for name, _ in started[1]]
    assert len(names) == len(set(names)), f"a header given twice: {names}"
    return Answer(int(started[0].split()[0]), {k.lower(): v for k, v in started[1]},
                  chunks.decode())


SAME_ORIGIN = {"Origin": "http://127.0.0.1", "Sec-Fetch-Site": "same-origin"}


def post(app: Dashboard, path: str, form: Mapping[str, object] | None = None,
         headers: dict[str, str] | None = None, back: str = "/") -> Answer:
    """A POST as the dashboard's own pages send it (from this origin)."""
    return call(app, path, method="POST", form={"back": back, **(form or {})},
                headers=SAME_ORIGIN if headers is None else headers)


def flash_of(answer: Answer) -> str:
    assert answer.status == 303, answer.text
    location = answer.headers["location"]
    return parse_qs(location.partition("?")[2])["flash"][0]


# -- a store with something to show ------------------------
@dataclass
class Store:
    queue: SimplePyQ
    done: int
    failed: int
    script: int
    delayed: int
    pending: int
    chain: list[int]


def boom(args: object) -> None:
    raise ValueError(f"cannot handle {args!r}")


@pytest.fixture
def store(queue: SimplePyQ) -> Store:
    """Channels 'work' and 'boom' with done, failed, pending, delayed and cancelled tasks,
    a task whose args are markup, a chain, a periodic schedule and limits."""
    queue.add_channel("work", lambda args: {"echo": args})
    queue.add_channel("boom", boom)
    done = queue.enqueue("work", {"n": 1}, key="k-1")
    failed = queue.enqueue("boom", {"n": 2})
    script = queue.enqueue("work", SCRIPT_ARGS)
    chain = queue.chain(Step("work", 1), Step("boom", 2), Step("work", 3)).task_ids
    queue.drain()
    delayed = queue.enqueue("work", {"later": True}, delay=3600)
    pending = queue.enqueue("work", {"n": 3})
    queue.add_periodic("nightly", "work", cron="0 3 * * *")
    queue.set_limits("work", rate_limit="10/s", max_running=3)
    return Store(queue, done, failed, script, delayed, pending, list(chain))


@pytest.fixture
def app(store: Store) -> Iterator[Dashboard]:
    dashboard = Dashboard(store.queue)
    yield dashboard
    dashboard.close()


PAGES = ["/", "/tasks", "/tasks?channel=work&status=done", "/failed", "/failed?channel=boom",
         "/workflows", "/periodic", "/channels"]


def every_page(store: Store) -> list[str]:
    workflow = store.queue.links(store.chain[0]).workflow
    return [*PAGES, f"/tasks/{store.done}", f"/tasks/{store.failed}", f"/tasks/{store.script}",
            f"/tasks/{store.delayed}", f"/tasks/{store.chain[2]}", f"/workflows/{workflow}"]


def get(app: Dashboard, page: str, **options: Any) -> Answer:
    path, _, query = page.partition("?")
    return call(app, path, query=query, **options)


# -- pages -------------------------------------------------
def test_every_page_renders_what_the_store_holds(app: Dashboard, store: Store) -> None:
    for page in every_page(store):
        answer = get(app, page)
        assert answer.status == 200, (page, answer.text)
        assert answer.headers["content-type"] == "text/html; charset=utf-8"
    overview = get(app, "/").text
    assert re.search(r"<a href=\"/tasks\?channel=work\">work</a>", overview)
    assert "10/s" in overview and "at most 3 running" in overview
    assert '<svg id="throughput"' in overview
    failed_page = get(app, f"/tasks/{store.failed}").text
    assert "ValueError: cannot handle {&#x27;n&#x27;: 2}" in failed_page
    assert "Traceback (most recent call last)" in failed_page
    done_page = get(app, f"/tasks/{store.done}").text
    assert "k-1" in done_page and "&quot;echo&quot;" in done_page
    blocked = get(app, f"/tasks/{store.chain[2]}").text
    assert f'href="/tasks/{store.chain[1]}"' in blocked  # what it depended on
    assert "nightly" in get(app, "/periodic").text and "0 3 * * *" in get(app, "/periodic").text


def test_every_page_has_a_json_twin_with_its_live_parts(app: Dashboard, store: Store) -> None:
    for page in every_page(store):
        joiner = "&" if "?" in page else "?"
        answer = get(app, page + joiner + "format=json")
        assert answer.status == 200, (page, answer.text)
        assert answer.headers["content-type"] == "application/json; charset=utf-8"
        data = answer.json()
        assert data["parts"], page
        html = get(app, page).text
        for part_id, part in data["parts"].items():
            assert f'id="part-{part_id}" data-version="{part["version"]}"' in html
    chart = get(app, "/?format=json").json()["chart"]
    assert len(chart["done"]) == len(chart["failed"]) == len(chart["minutes"]) == 60
    assert sum(chart["done"]) >= 3 and sum(chart["failed"]) >= 2


def test_overview_counts_tasks_per_channel_and_status(app: Dashboard, store: Store) -> None:
    counts = store.queue.counts()
    html = get(app, "/").text
    for channel, numbers in counts.items():
        for status, count in numbers.items():
            if count:
                link = f'href="/tasks?channel={channel}&amp;status={status}">{count}</a>'
                assert link in html, (channel, status)


def test_overview_lists_live_workers_with_their_host_pid_and_running_tasks(
        store_path: str, queue: SimplePyQ) -> None:
    release = threading.Event()
    queue.add_channel("slow", lambda args: release.wait(30))
    running = queue.enqueue("slow", None)
    queue.start()
    try:
        wait_until(lambda: status_of(queue, running) == "running")
        with Dashboard(store_path) as app:  # its own queue, as another process has
            html = call(app, "/").text
        host = queue.workers()[0].host
    finally:
        release.set()
        queue.stop()
    workers = re.search(r'id="part-workers".*?</section>', html, re.DOTALL)
    assert workers is not None
    assert re.search(rf'<td>{re.escape(host)}</td><td class="num">{os.getpid()}</td>'
                     r'<td>slow</td><td>\d+s</td><td class="num"><span>1</span></td>',
                     workers[0]), workers[0]


def test_args_that_are_markup_show_as_text(app: Dashboard, store: Store) -> None:
    for page in [f"/tasks/{store.script}", "/tasks", "/tasks?format=json",
                 f"/tasks/{store.script}?format=json"]:
        text = get(app, page).text
        assert "<script>alert" not in text, page
        assert "\\u003cscript>alert" not in text, page
    page = get(app, f"/tasks/{store.script}").text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page


def test_channel_names_keys_and_flash_messages_are_escaped(queue: SimplePyQ) -> None:
    queue.add_channel('<b onmouseover="x">', lambda args: None)
    queue.enqueue('<b onmouseover="x">', 1, key='"><i>')
    with Dashboard(queue) as app:
        for page in ["/", "/tasks", "/channels", "/failed"]:
            assert "<b onmouseover" not in get(app, page).text
        assert '"><i>' not in get(app, "/tasks").text
        shown = call(app, "/", query=urlencode({"flash": "<img src=x>"})).text
        assert "&lt;img src=x&gt;" in shown and "<img src=x>" not in shown


class Markup(HTMLParser):
    """Collects what the Content-Security-Policy would refuse, and every link."""

    def __init__(self) -> None:
        super().__init__()
        self.inline: list[str] = []
        self.links: list[str] = []
        self.in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "style" or "style" in found:
            self.inline.append(f"style in <{tag}>")
        if any(name.startswith("on") for name in found):
            self.inline.append(f"handler in <{tag}>")
        if tag == "script" and not found.get("src"):
            self.inline.append("inline <script>")
        for name in ("href", "src", "action", "data-live"):
            if found.get(name):
                self.links.append(str(found[name]))


def test_pages_have_no_inline_script_or_style(app: Dashboard, store: Store) -> None:
    for page in every_page(store):
        markup = Markup()
        markup.feed(get(app, page).text)
        assert markup.inline == [], page


def test_every_response_carries_the_security_headers(app: Dashboard, store: Store) -> None:
    answers = {page: get(app, page) for page in
               ["/", "/tasks?format=json", "/nowhere", "/tasks/abc", "/metrics", "/healthz",
                "/static/dashboard.js"]}
    answers["POST"] = post(app, f"/tasks/{store.failed}/requeue")
    for page, answer in answers.items():
        assert answer.headers["content-security-policy"] == CSP, page
        assert answer.headers["x-content-type-options"] == "nosniff", page
        assert answer.headers["referrer-policy"] == "same-origin", page
    for page in ["/", "/tasks?format=json", "/nowhere", "/tasks/abc"]:
        assert answers[page].headers["cache-control"] == "no-store", page
    assert CSP == ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' "
                   "data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
                   "base-uri 'none'")


def test_static_files_are_served_by_the_dashboard_itself(app: Dashboard) -> None:
    markup = Markup()
    markup.feed(get(app, "/").text)
    assets = [link for link in markup.links if "/static/" in link]
    assert len(assets) == 2
    for link in assets:
        answer = get(app, link)
        assert answer.status == 200 and len(answer.text) > 500
    assert not [link for link in markup.links if link.startswith(("http:", "https:", "//"))]


# -- actions -----------------------------------------------
def test_buttons_requeue_cancel_delete_and_run_now_change_the_store(app: Dashboard,
                                                                    store: Store) -> None:
    queue = store.queue
    assert flash_of(post(app, f"/tasks/{store.failed}/requeue", {"retries": "2"})) \
        == f"task {store.failed} requeued"
    assert status_of(queue, store.failed) == "pending"
    assert existing(queue, store.failed).retries == 2
    assert flash_of(post(app, f"/tasks/{store.pending}/cancel")) \
        == f"task {store.pending} cancelled"
    assert status_of(queue, store.pending) == "cancelled"
    assert flash_of(post(app, f"/tasks/{store.delayed}/run-now")) \
        == f"task {store.delayed} will run now"
    assert status_of(queue, store.delayed) == "pending"
    deleted = post(app, f"/tasks/{store.done}/delete", back=f"/tasks/{store.done}")
    assert flash_of(deleted) == f"task {store.done} deleted"
    assert deleted.headers["location"].startswith("/tasks?")  # its own page is gone
    assert queue.get_task(store.done) is None


def test_an_action_the_task_status_does_not_allow_says_so(app: Dashboard,
                                                        store: Store) -> None:
    answer = post(app, f"/tasks/{store.pending}/requeue", back="/tasks?status=pending")
    assert flash_of(answer) == f"task {store.pending} is pending: not requeued"
    assert "level=error" in answer.headers["location"]
    assert answer.headers["location"].startswith("/tasks?status=pending&")
    assert flash_of(post(app, "/tasks/999999/delete")) == "there is no task 999999"
    assert status_of(store.queue, store.pending) == "pending"


def test_failed_tasks_are_requeued_and_cleared_per_channel(app: Dashboard,
                                                          store: Store) -> None:
    queue = store.queue
    failed = queue.counts()["boom"]["failed"]
    assert failed == 2
    assert flash_of(post(app, "/failed/requeue", {"channel": "boom"})) \
        == "2 failed task(s) of boom made pending again"
    assert queue.counts()["boom"]["failed"] == 0
    queue.drain()
    assert flash_of(post(app, "/failed/clear", {"channel": "boom"})) \
        == "2 failed task(s) of boom deleted"
    assert queue.counts()["boom"]["failed"] == 0


def test_limits_are_changed_and_finished_tasks_purged_from_the_pages(app: Dashboard,
                                                                    store: Store) -> None:
    queue = store.queue
    answer = post(app, "/limits", {"channel": "work", "rate": "5/m", "max_running": "none"})
    assert flash_of(answer) == "limits of work: rate 5/m"
    assert str(queue.limits("work")) == "rate 5/m"
    before = sum(queue.counts()["work"][s] for s in ("done", "cancelled"))
    assert before > 0
    assert flash_of(post(app, "/purge", {"older_than": "0", "channel": "work"})) \
        .startswith(f"{before} finished task(s) of work deleted")


def test_read_only_shows_no_button_and_refuses_every_action(store: Store) -> None:
    with Dashboard(store.queue, read_only=True) as app:
        for page in every_page(store):
            assert "<form method=\"post\"" not in get(app, page).text, page
        for path in [f"/tasks/{store.failed}/requeue", f"/tasks/{store.pending}/cancel",
                     f"/tasks/{store.done}/delete", f"/tasks/{store.delayed}/run-now",
                     "/failed/requeue", "/failed/clear", "/purge", "/limits"]:
            answer = post(app, path, {"channel": "work", "older_than": "0", "rate": "1/s"})
            assert answer.status == 403, path
            assert "read-only" in answer.text
    assert status_of(store.queue, store.failed) == "failed"
    assert store.queue.get_task(store.done) is not None
    assert str(store.queue.limits("work")) == "rate 10/s, at most 3 running"


def test_get_on_an_action_is_405(app: Dashboard, store: Store) -> None:
    for path in [f"/tasks/{store.failed}/requeue", "/failed/clear", "/purge", "/limits"]:
        answer = call(app, path)
        assert answer.status == 405, path
        assert answer.headers["allow"] == "POST"
    assert call(app, "/tasks", method="POST", form={}).status == 405
    assert status_of(store.queue, store.failed) == "failed"


# -- cross-site requests -----------------------------------
@pytest.mark.parametrize("headers", [
    {"Origin": "https://evil.example"},
    {"Origin": "http://127.0.0.1:8181"},  # another port is another origin
    {"Origin": "null"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},
    {"Sec-Fetch-Site": "cross-site", "Origin": "http://127.0.0.1"},
    {},  # neither header, and no token
], ids=lambda headers: ",".join(f"{k}={v}" for k, v in headers.items()) or "none")
def test_a_cross_site_post_is_refused(app: Dashboard, store: Store,
                                      headers: dict[str, str]) -> None:
    answer = post(app, f"/tasks/{store.pending}/cancel", headers=headers)
    assert answer.status == 403, answer.text
    assert "refused" in answer.text
    assert status_of(store.queue, store.pending) == "pending"


def test_a_post_without_origin_headers_needs_the_token_of_the_pages(app: Dashboard,
                                                                   store: Store) -> None:
    page = get(app, f"/tasks/{store.pending}").text
    token = re.search(r'name="csrf" value="([^"]+)"', page)
    assert token is not None
    wrong = post(app, f"/tasks/{store.pending}/cancel", {"csrf": token[1][:-1] + "x"}, {})
    assert wrong.status == 403
    right = post(app, f"/tasks/{store.pending}/cancel", {"csrf": token[1]}, {})
    assert flash_of(right) == f"task {store.pending} cancelled"


def test_a_same_origin_post_is_accepted_by_either_header(app: Dashboard,
                                                         store: Store) -> None:
    assert post(app, f"/tasks/{store.pending}/cancel",
                headers={"Sec-Fetch-Site": "same-origin"}).status == 303
    assert post(app, f"/tasks/{store.delayed}/cancel",
                headers={"Origin": "http://127.0.0.1:80"}).status == 303
    assert status_of(store.queue, store.pending) == "cancelled"
    assert status_of(store.queue, store.delayed) == "cancelled"


def test_behind_a_proxy_that_terminates_tls_the_browsers_sec_fetch_site_decides(
        app: Dashboard, store: Store) -> None:
    """The dashboard sees http://127.0.0.1 where the browser posts to https://...: its
    Origin differs, but its Sec-Fetch-Site compared the origins the user saw."""
    behind = {"Sec-Fetch-Site": "same-origin", "Origin": "https://127.0.0.1"}
    assert post(app, f"/tasks/{store.pending}/cancel", headers=behind).status == 303
    assert status_of(store.queue, store.pending) == "cancelled"
    older = post(app, f"/tasks/{store.delayed}/cancel", headers={"Origin": "https://127.0.0.1"})
    assert older.status == 403  # a browser that sends Origin alone: the scheme must match
    assert status_of(store.queue, store.delayed) == "delayed"


def test_an_action_goes_back_only_to_a_page_of_the_dashboard(app: Dashboard,
                                                             store: Store) -> None:
    for back in ["//evil.example/x", "https://evil.example/", "\\\\evil", "x"]:
        answer = post(app, f"/tasks/{store.pending}/cancel", back=back)
        assert answer.status == 400, back
    assert status_of(store.queue, store.pending) == "pending"


# -- auth --------------------------------------------------
def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def test_a_password_guards_every_url(store: Store) -> None:
    with Dashboard(store.queue, password=PASSWORD) as app:
        urls = [*every_page(store), "/metrics", "/healthz", "/static/dashboard.js",
                "/nowhere", "/tasks?format=json"]
        for url in urls:
            for headers in [{}, basic("admin", "wrong"), {"Authorization": "Bearer x"},
                            {"Authorization": "Basic !!!"}]:
                answer = get(app, url, headers=headers)
                assert answer.status == 401, (url, headers)
                assert answer.headers["www-authenticate"].startswith("Basic realm=")
                assert store.queue.store_path not in answer.text
            assert get(app, url, headers=basic("anyone", PASSWORD)).status in (200, 404), url
        refused = call(app, f"/tasks/{store.pending}/cancel", method="POST",
                       form={"back": "/"}, headers=SAME_ORIGIN)
        assert refused.status == 401
        assert status_of(store.queue, store.pending) == "pending"
        accepted = call(app, f"/tasks/{store.pending}/cancel", method="POST",
                        form={"back": "/"}, headers={**SAME_ORIGIN, **basic("", PASSWORD)})
        assert accepted.status == 303


# -- metrics and health ------------------------------------
def parse_metrics(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Prometheus text format 0.0.4, read strictly: every sample's metric has a TYPE."""
    types: dict[str, str] = {}
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    label = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("gauge", "counter")
            types[name] = kind
            samples.setdefault(name, {})
            continue
        if line.startswith("# HELP ") or not line:
            continue
        found = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\} (\S+)", line)
        assert found, line
        name, labels, value = found.groups()
        assert name in types, f"{name} has no TYPE"
        pairs = label.findall(labels)
        assert ",".join(f'{k}="{v}"' for k, v in pairs) == labels, line
        unescaped = tuple((k, re.sub(r"\\(.)", lambda m: "\n" if m[1] == "n" else m[1], v))
                          for k, v in pairs)
        samples[name][unescaped] = float(value)
    return samples


def test_metrics_parse_and_the_finished_counter_rises(app: Dashboard, store: Store) -> None:
    answer = get(app, "/metrics")
    assert answer.status == 200
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    metrics = parse_metrics(answer.text)
    counts = store.queue.counts()
    for channel, numbers in counts.items():
        for status, count in numbers.items():
            assert metrics["simplepyq_tasks"][(("channel", channel), ("status", status))] \
                == count
    done = metrics["simplepyq_tasks_finished_total"][(("channel", "work"), ("outcome", "done"))]
    assert done >= 3
    assert metrics["simplepyq_oldest_pending_seconds"][(("channel", "work"),)] >= 0
    assert metrics["simplepyq_oldest_pending_seconds"][(("channel", "boom"),)] == 0
    assert metrics["simplepyq_workers"][(("channel", "work"),)] == 0
    store.queue.enqueue("work", 10)
    store.queue.enqueue("work", 11)
    ran = store.queue.drain()  # these two, and the pending task of the store
    assert [task.status for task in ran] == ["done"] * 3
    store.queue.purge(0)  # deleting finished tasks does not take them off the counter
    after = parse_metrics(get(app, "/metrics").text)
    assert after["simplepyq_tasks_finished_total"][
        (("channel", "work"), ("outcome", "done"))] == done + 3


def test_metric_labels_escape_backslash_quote_and_newline(queue: SimplePyQ) -> None:
    odd = 'we"ird\\chan\nnel'
    queue.add_channel(odd, lambda args: None)
    queue.enqueue(odd, 1)
    with Dashboard(queue) as app:
        text = get(app, "/metrics").text
        assert 'channel="we\\"ird\\\\chan\\nnel"' in text
        metrics = parse_metrics(text)
    assert metrics["simplepyq_tasks"][(("channel", odd), ("status", "pending"))] == 1


def test_healthz_says_ok_while_the_store_answers_and_503_once_it_does_not(
        store_path: str) -> None:
    queue = SimplePyQ(store_path)
    queue.declare("work")
    app = Dashboard(queue)
    answer = get(app, "/healthz")
    assert (answer.status, answer.text) == (200, "ok\n")
    queue.close()  # (a closed queue's store refuses every call)
    broken = get(app, "/healthz")
    assert broken.status == 503
    assert "does not answer" in broken.text


# -- bad input ---------------------------------------------
@pytest.mark.parametrize(("page", "named"), [
    ("/tasks/abc", "'abc'"), ("/tasks/0", "'0'"), ("/tasks/99999999999999999999", "999"),
    ("/workflows/x1", "'x1'"), ("/tasks/²", "'²'"),
    pytest.param("/tasks/" + "9" * 5000, "9999", id="/tasks/9...9"),
    ("/tasks?status=sleeping", "'sleeping'"),
    ("/tasks?channel=nope", "'nope'"), ("/tasks?limit=100000000", "limit=100000000"),
    ("/tasks?limit=-1", "limit=-1"), ("/tasks?before=soon", "'soon'"),
    ("/tasks?status=done&status=failed", "status is given twice"),
    ("/tasks?id=12a", "'12a'"), ("/tasks?key=%ff", "cannot be read"),
    ("/?format=xml", "'xml'"), ("/failed?limit=abc", "'abc'"),
    ("/workflows?before=1.5", "'1.5'"), ("/?level=panic&flash=x", "'panic'"),
])
def test_malformed_input_gets_a_400_page_naming_it(app: Dashboard, page: str,
                                                   named: str) -> None:
    answer = get(app, page)
    assert answer.status == 400, answer.text
    assert named in answer.text.replace("&#x27;", "'")
    assert "Traceback" not in answer.text


@pytest.mark.parametrize(("path", "form", "named"), [
    ("/tasks/{failed}/requeue", {"retries": "lots"}, "'lots'"),
    ("/tasks/{failed}/requeue", {"retries": "-2"}, "retries=-2"),
    ("/purge", {"older_than": "soon"}, "'soon'"),
    ("/purge", {}, "older_than is missing"),
    ("/limits", {"channel": "work", "rate": "fast"}, "'fast'"),
    ("/limits", {"channel": "work", "max_running": "0"}, "max_running"),
    ("/limits", {"channel": "nope"}, "'nope'"),
    ("/failed/clear", {"channel": "nope"}, "'nope'"),
])
def test_malformed_forms_get_a_400_page_naming_the_value(app: Dashboard, store: Store,
                                                         path: str, form: dict[str, str],
                                                         named: str) -> None:
    answer = post(app, path.format(failed=store.failed), form)
    assert answer.status == 400, answer.text
    assert named in answer.text.replace("&#x27;", "'")
    assert status_of(store.queue, store.failed) == "failed"


QUERIED = ["/", "/tasks", "/failed", "/workflows", "/periodic", "/channels", "/metrics",
           "/tasks/1", "/workflows/4"]
NAMES = ["channel", "status", "key", "before", "limit", "id", "format", "flash", "level",
         "after"]


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(QUERIED), name=st.sampled_from(NAMES), value=st.text(),
       raw=st.text(max_size=40))
def test_no_query_string_makes_a_page_fail(app: Dashboard, path: str, name: str, value: str,
                                           raw: str) -> None:
    for query in [urlencode({name: value}), raw]:
        answer = call(app, path, query=query)
        assert answer.status in (200, 303, 400, 404), (path, query, answer.text)


def test_an_unknown_page_or_task_is_a_404(app: Dashboard) -> None:
    for page in ["/nowhere", "/tasks/424242", "/workflows/424242", "/static/other.js",
                 "/tasks/1/explode"]:
        answer = get(app, page)
        assert answer.status == 404, page
        assert "Traceback" not in answer.text


def test_a_page_that_fails_is_a_500_whose_traceback_goes_to_the_log(
        app: Dashboard, store: Store, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> list[object]:
        raise RuntimeError("the schedules table is unreadable")

    monkeypatch.setattr(store.queue, "periodics", broken)
    with caplog.at_level(logging.ERROR, logger="simplepyq"):
        answer = get(app, "/periodic")
    assert answer.status == 500
    assert "Traceback" not in answer.text and "unreadable" not in answer.text
    assert "the traceback is in the server" in answer.text
    record = next(r for r in caplog.records if r.name == "simplepyq")
    assert record.exc_info is not None and "unreadable" in str(record.exc_info[1])


# -- paging and mounting -----------------------------------
def test_tasks_are_paged_newest_first_by_id(queue: SimplePyQ) -> None:
    queue.declare("work")
    ids = [queue.enqueue("work", i) for i in range(7)]
    with Dashboard(queue) as app:
        seen: list[int] = []
        query = "limit=3"
        for _ in range(5):
            html = call(app, "/tasks", query=query).text
            seen += [int(i) for i in re.findall(r'<td class="num"><a href="/tasks/(\d+)">', html)]
            older = re.search(r'href="/tasks\?([^"]*)">older', html)
            if older is None:
                break
            query = older[1].replace("&amp;", "&")
            assert "before=" in query and "offset" not in query
        assert seen == sorted(ids, reverse=True)
        found = call(app, "/tasks", query=f"id={ids[2]}")
        assert found.status == 303 and found.headers["location"] == f"/tasks/{ids[2]}"


def test_tasks_are_filtered_by_channel_status_and_key(app: Dashboard, store: Store) -> None:
    html = call(app, "/tasks", query="key=k-1").text
    assert re.findall(r'href="/tasks/(\d+)">#', html) == [str(store.done)]
    html = call(app, "/tasks", query="channel=boom&status=failed").text
    assert set(re.findall(r'href="/tasks/(\d+)">#', html)) == {str(store.failed),
                                                               str(store.chain[1])}


def test_every_link_keeps_the_prefix_the_dashboard_is_mounted_under(app: Dashboard,
                                                                    store: Store) -> None:
    prefix = "/ops/queue"
    for page in every_page(store):
        path, _, query = page.partition("?")
        answer = call(app, path, query=query, script_name=prefix)
        assert answer.status == 200, page
        markup = Markup()
        markup.feed(answer.text)
        internal = [link for link in markup.links if not link.startswith("data:")]
        assert internal and all(link.startswith(prefix + "/") for link in internal), page
    answer = call(app, f"/tasks/{store.failed}/requeue", method="POST", script_name=prefix,
                  form={"back": "/failed?channel=boom"}, headers=SAME_ORIGIN)
    assert answer.headers["location"].startswith(prefix + "/failed?channel=boom&flash=")
    assert call(app, "/tasks", query="id=3", script_name=prefix).headers["location"] \
        == f"{prefix}/tasks/3"


# -- the command -------------------------------------------
def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=60,
                          env=_env(env))


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("SIMPLEPYQ_DB", "SIMPLEPYQ_DASHBOARD_PASSWORD")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return {**env, **(extra or {})}


@pytest.fixture
def served(store_path: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``simplepyq dashboard --port 0`` on a store with one channel; its process and URL."""
    queue = SimplePyQ(store_path)
    queue.declare("work")
    queue.enqueue("work", SCRIPT_ARGS)
    queue.close()
    child = subprocess.Popen([str(SCRIPT), "dashboard", "--db", store_path, "--port", "0"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=_env({"SIMPLEPYQ_DASHBOARD_PASSWORD": PASSWORD}))
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        found = re.search(r"on (http://127\.0\.0\.1:(\d+)/)$", line.strip())
        assert found and found[2] != "0", (line, child.stderr and child.stderr.read())
        yield child, found[1]
    finally:
        if child.poll() is None:
            child.kill()
        child.communicate(timeout=30)


def fetch(url: str, password: str | None = PASSWORD) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={} if password is None
                                     else basic("ops", password))
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_the_command_serves_on_a_free_port_and_stops_on_sigterm(
        served: tuple[subprocess.Popen[str], str]) -> None:
    child, url = served
    assert fetch(url + "healthz") == (200, "ok\n")
    assert fetch(url + "healthz", password=None)[0] == 401
    status, page = fetch(url + "tasks")
    assert status == 200 and "&lt;script&gt;" in page
    assert "simplepyq_tasks{" in fetch(url + "metrics")[1]
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=30) == 0


def test_the_command_refuses_a_non_loopback_address_without_a_password(
        store_path: str) -> None:
    SimplePyQ(store_path).close()
    result = run_cli("dashboard", "--db", store_path, "--host", "0.0.0.0", "--port", "0")
    assert result.returncode == 2
    assert "SIMPLEPYQ_DASHBOARD_PASSWORD" in result.stderr
    assert "--insecure-no-password" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""


@pytest.mark.sqlite_only
def test_insecure_no_password_serves_anywhere_with_a_loud_warning(store_path: str) -> None:
    SimplePyQ(store_path).close()
    child = subprocess.Popen([str(SCRIPT), "dashboard", "--db", store_path, "--host", "0.0.0.0",
                              "--port", "0", "--insecure-no-password", "--read-only"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=_env())
    try:
        assert child.stdout is not None and child.stderr is not None
        line = child.stdout.readline()
        port = re.search(r":(\d+)/ \(read-only\)$", line.strip())
        assert port, line
        warning = child.stderr.readline()
        assert "INSECURE" in warning and "WITHOUT A PASSWORD" in warning
        assert fetch(f"http://127.0.0.1:{port[1]}/healthz", password=None) == (200, "ok\n")
    finally:
        child.send_signal(signal.SIGTERM)
        child.communicate(timeout=30)
    assert child.returncode == 0


@pytest.mark.sqlite_only
def test_the_command_says_in_one_line_that_the_port_is_in_use(store_path: str) -> None:
    SimplePyQ(store_path).close()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("dashboard", "--db", store_path, "--port", str(port))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"simplepyq: error: cannot serve on 127.0.0.1 port {port}: Address already in use"]


def test_the_command_says_in_one_line_that_the_store_is_missing(store_path: str) -> None:
    result = run_cli("dashboard", "--db", store_path, "--port", "0")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "there is no task store at" in lines[0]


@pytest.mark.parametrize(("args", "message"), [
    (["--port", "http"], "'http' is not a port"),
    (["--port", "70000"], "'70000' is not a port"),
    (["--color"], "unrecognized arguments: --color"),
])
def test_the_command_refuses_bad_options_with_exit_2(tmp_path: Any, args: list[str],
                                                    message: str) -> None:
    result = run_cli("dashboard", "--db", str(tmp_path / "x.db"), *args)
    assert result.returncode == 2
    assert message in result.stderr

