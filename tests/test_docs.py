"""The documentation's examples run as the pages say, so that none can rot.

Three kinds of example are checked here:

- the files under ``examples/`` that the pages include, each run as its page runs
  it, in a fresh process (web apps through their framework's own test client);
- the shell sessions of the pages (``.. code-block:: console``): every ``$``
  command runs in order, in one shell per page, in a fresh directory where
  ``examples`` is the checkout's folder, and must print what the page shows (a
  ``...`` stands for any text, a line of ``...`` for any lines);
- the reference names every public name of ``simplepyq``.

The Python snippets of the pages (``.. testcode::``) run under Sphinx's doctest
builder: ``sphinx-build -b doctest docs docs/_build/doctest``, as CI does.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import simplepyq
from simplepyq import SimplePyQ
from tests.backends import drop_schema, new_schema_location, postgres_url
from tests.support import ROOT, SCRIPT, wait_until

DOCS = ROOT / "docs"
EXAMPLES = ROOT / "examples"
PROMPT = "$ "
MARK = "\x1esimplepyq-docs-command"


# -- running the examples ------------------------------------------------------
def environment(**extra: str) -> dict[str, str]:
    """This environment, with the checkout importable and this interpreter's scripts
    first on the PATH (``python``, ``simplepyq``), unbuffered so that stdout and
    stderr interleave as on a terminal, and no store chosen by the caller's own
    ``$SIMPLEPYQ_DB``."""
    env = {key: value for key, value in os.environ.items() if key != "SIMPLEPYQ_DB"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return {**env, **extra}


def run(directory: Path, *command: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=directory, env=environment(**env), capture_output=True,
                          text=True, timeout=60, check=False)


# -- shell sessions ------------------------------------------------------------
def console_blocks(page: Path) -> list[list[str]]:
    """The lines of each ``.. code-block:: console`` of ``page``, dedented."""
    blocks = []
    lines = page.read_text().splitlines()
    for number, line in enumerate(lines):
        if line.strip() != ".. code-block:: console":
            continue
        indent = len(line) - len(line.lstrip()) + 3
        body: list[str] = []
        for text in lines[number + 1:]:
            if text.strip() and len(text) - len(text.lstrip()) < indent:
                break
            body.append(text[indent:].rstrip())
        while body and not body[0]:
            body.pop(0)
        while body and not body[-1]:
            body.pop()
        blocks.append(body)
    return blocks


def commands_of(blocks: list[list[str]]) -> list[tuple[str, list[str]]]:
    """Each ``$`` command of the blocks with the output shown below it."""
    session: list[tuple[str, list[str]]] = []
    for block in blocks:
        for line in block:
            if line.startswith(PROMPT):
                session.append((line[len(PROMPT):], []))
            else:
                assert session, f"output before any command: {line!r}"
                session[-1][1].append(line)
    return session


def shown_matches(shown: list[str], printed: list[str]) -> bool:
    """Whether ``printed`` is what the page shows, ``...`` standing for anything."""
    pattern = "\n".join(shown)
    regex = ".*?".join(re.escape(part) for part in pattern.split("..."))
    return re.fullmatch(regex, "\n".join(printed), re.DOTALL) is not None


def run_session(page: Path, directory: Path, **env: str) -> None:
    """Run the shell session of ``page`` in ``directory``; fail on the first command
    that prints other than the page shows."""
    session = commands_of(console_blocks(page))
    assert session, f"{page} has no console session"
    (directory / "examples").symlink_to(EXAMPLES)
    # Each command's output follows a mark line; $? is kept across the mark, so that
    # a page may show ``echo $?``.
    script = "".join(f"printf '{MARK} %d\\n' {index}\n(exit $status)\n{{ {command}\n}} 2>&1\n"
                     "status=$?\n" for index, (command, _) in enumerate(session))
    script = "status=0\n" + script
    result = subprocess.run(["bash", "-c", script], cwd=directory, env=environment(**env),
                            capture_output=True, text=True, timeout=120, check=False)
    outputs = re.split(rf"^{re.escape(MARK)} \d+\n", result.stdout, flags=re.MULTILINE)[1:]
    assert len(outputs) == len(session), result.stdout + result.stderr
    for (command, shown), printed in zip(session, outputs, strict=True):
        lines = [line.rstrip() for line in printed.splitlines()]
        assert shown_matches(shown, lines), (
            f"{page.relative_to(ROOT)}: $ {command}\nshown:\n" + "\n".join(shown)
            + "\nprinted:\n" + "\n".join(lines))


def test_the_postgresql_page_copies_a_file_into_a_database(tmp_path: Path) -> None:
    url = postgres_url()  # skipped without a server, failed under CI
    location, schema = new_schema_location(url)
    try:
        run_session(DOCS / "howto" / "postgresql.rst", tmp_path, DATABASE_URL=location)
    finally:
        drop_schema(url, schema)


def test_a_session_matches_its_output_with_ellipses_and_fails_otherwise() -> None:
    assert shown_matches(["a ... c", "..."], ["a b c", "d", "e"])
    assert shown_matches([], [])
    assert not shown_matches(["a"], ["a", "b"])
    assert not shown_matches(["exit 0"], ["exit 1"])


@pytest.mark.parametrize("page", ["tutorials/script.rst", "tutorials/maintenance.rst",
                                  "howto/limits.rst", "howto/dashboard.rst"])
def test_the_shell_sessions_of_a_page_print_what_it_shows(page: str, tmp_path: Path) -> None:
    run_session(DOCS / page, tmp_path)


# -- the script tutorial -------------------------------------------------------
def test_the_checksums_script_resumes_what_an_earlier_run_left(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.txt", "b.txt", "c.txt"):
        (photos / name).write_text(name)
    # An earlier run stopped after enqueueing: its tasks wait in the store.
    code = ("import checksums; checksums.queue.enqueue_many('checksum', "
            "checksums.files_under('photos')); checksums.queue.close()")
    enqueued = run(tmp_path, sys.executable, "-c", code, PYTHONPATH=str(EXAMPLES))
    assert enqueued.returncode == 0, enqueued.stderr

    result = run(tmp_path, sys.executable, str(EXAMPLES / "checksums.py"), "photos")
    assert result.returncode == 0, result.stderr
    assert result.stderr == "resuming: 3 file(s) left by an earlier run\n"
    assert len(result.stdout.splitlines()) == 3
    with sqlite3.connect(tmp_path / "checksums.db") as db:
        assert db.execute("SELECT COUNT(*) FROM tasks").fetchone() == (3,)  # none twice


# -- the reference -------------------------------------------------------------
def documented_names() -> set[str]:
    """The names the API reference hands to autodoc, or documents by hand."""
    text = (DOCS / "reference" / "api.rst").read_text()
    found = re.findall(r"^\s*\.\. (?:auto\w+|data|attribute)::\s+([\w.]+)", text, re.MULTILINE)
    return {name.split(".")[-1] for name in found}


def test_the_reference_documents_every_public_name() -> None:
    missing = set(simplepyq.__all__) - documented_names()
    assert not missing, f"docs/reference/api.rst does not document {sorted(missing)}"


def test_the_reference_documents_every_public_member_of_the_queue() -> None:
    public = {name for name in vars(SimplePyQ) if not name.startswith("_")} | {"store_path"}
    missing = public - documented_names()
    assert not missing, f"docs/reference/api.rst does not document SimplePyQ.{sorted(missing)}"


# -- the web application tutorial ----------------------------------------------
def serve(*command: str, **env: str) -> tuple[subprocess.Popen[str], str]:
    """Start ``command`` in ``examples/`` (as the tutorial does after ``cd examples``);
    the process and the URL it says it serves on."""
    process = subprocess.Popen(command, cwd=EXAMPLES, env=environment(**env),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("serving on http://127.0.0.1:"):
        process.kill()
        raise AssertionError(line + process.communicate()[1])
    return process, line.split()[-1]


def fetch_json(method: str, url: str, data: bytes | None = None) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def report_through(url: str) -> dict[str, Any]:
    """Ask the application for a report, then wait for its task as a browser would."""
    assert fetch_json("POST", f"{url}/reports", b"month=13") == (
        400, {"error": "month must be 1 to 12, not '13'"})
    status, answer = fetch_json("POST", f"{url}/reports", b"month=3")
    assert status == 202 and answer == {"task": answer["task"], "url": f"/tasks/{answer['task']}"}
    return wait_until(lambda: (lambda shown: shown if shown["status"] == "done" else None)(
        fetch_json("GET", url + answer["url"])[1]))


def stopped(process: subprocess.Popen[str]) -> int:
    """Stop ``process`` as systemd would (SIGTERM); its exit code."""
    process.send_signal(signal.SIGTERM)
    _, errors = process.communicate(timeout=30)
    assert "Traceback" not in (errors or ""), errors
    return process.returncode


def test_the_web_app_with_its_workers_in_process_answers_then_builds_the_report(
        tmp_path: Path) -> None:
    web, url = serve(sys.executable, "-m", "webapp.web", "--port", "0",
                     WEBAPP_DB=str(tmp_path / "tasks.db"))
    try:
        task = report_through(url)
        assert task == {"task": task["task"], "status": "done", "error": None,
                        "progress": {"day": 28, "of": 28},
                        "result": {"month": 3, "days": 28, "total": 175}}
        assert fetch_json("GET", f"{url}/tasks/999")[0] == 404
    finally:
        assert stopped(web) == 0


def test_the_web_app_split_from_its_worker_process_enqueues_what_the_worker_runs(
        tmp_path: Path) -> None:
    store = str(tmp_path / "tasks.db")
    web, url = serve(sys.executable, "-m", "webapp.web", "--port", "0", "--no-workers",
                     WEBAPP_DB=store)
    worker = subprocess.Popen([str(SCRIPT), "worker", "webapp.tasks:queue"], cwd=EXAMPLES,
                              env=environment(WEBAPP_DB=store, SIMPLEPYQ_DB=store),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert report_through(url)["result"] == {"month": 3, "days": 28, "total": 175}
    finally:
        assert stopped(worker) == 0
        assert stopped(web) == 0
    with SimplePyQ(store) as queue:
        assert queue.stats()["report"]["done"] == 1


# -- the web frameworks how-to -------------------------------------------------
@pytest.mark.parametrize(("tests", "passed"), [("test_flask_app.py", 3),
                                               ("test_fastapi_app.py", 2),
                                               ("test_django_app.py", 2),
                                               ("test_signup.py", 2),
                                               ("test_fixture.py", 1)])
def test_the_example_tests_of_an_app_pass(tests: str, passed: int, tmp_path: Path) -> None:
    result = run(tmp_path, sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                 str(EXAMPLES / tests))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{passed} passed" in result.stdout, result.stdout


DJANGO_SIGNUP = """
import os, django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_app.settings")
django.setup()
from django.test import Client
print(Client().post("/signup", {"email": "ada@example.com"}).json()["task"])
"""


def test_a_django_view_enqueues_what_a_worker_beside_it_runs(tmp_path: Path) -> None:
    store = str(tmp_path / "tasks.db")
    view = run(tmp_path, sys.executable, "-c", DJANGO_SIGNUP, SIMPLEPYQ_DB=store,
               PYTHONPATH=str(EXAMPLES) + os.pathsep + str(ROOT))
    assert view.returncode == 0, view.stderr
    worker = run(EXAMPLES, str(SCRIPT), "worker", "django_app.worker:queue", "--burst",
                 SIMPLEPYQ_DB=store)
    assert worker.returncode == 0, worker.stderr
    with SimplePyQ(store) as queue:
        task = queue.get_task(int(view.stdout))
        assert task is not None and task.result == "welcome mail sent to ada@example.com"


def test_a_django_wsgi_application_runs_the_workers_when_told_to(tmp_path: Path) -> None:
    code = DJANGO_SIGNUP.replace("django.setup()", "from django_app.wsgi import application")
    code = code.replace("print(", "task_id = (") + (
        "from django_app.tasks import queue\n"
        "print(queue.wait(task_id, timeout=10).result)\n")
    result = run(tmp_path, sys.executable, "-c", code, SIMPLEPYQ_DB=str(tmp_path / "tasks.db"),
                 SIMPLEPYQ_WORKERS="app", PYTHONPATH=str(EXAMPLES) + os.pathsep + str(ROOT))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "welcome mail sent to ada@example.com\n"


def test_a_flask_view_enqueues_what_a_worker_beside_it_runs(tmp_path: Path) -> None:
    store = str(tmp_path / "tasks.db")
    code = ("import flask_app\n"
            "client = flask_app.create_app().test_client()\n"
            "print(client.post('/signup', data={'email': 'bob@example.com'}).json['task'])\n")
    view = run(tmp_path, sys.executable, "-c", code, FLASK_TASKS_DB=store,
               SIMPLEPYQ_WORKERS="none", PYTHONPATH=str(EXAMPLES) + os.pathsep + str(ROOT))
    assert view.returncode == 0, view.stderr
    worker = run(EXAMPLES, str(SCRIPT), "worker", "flask_app:queue", "--burst",
                 FLASK_TASKS_DB=store, SIMPLEPYQ_DB=store)
    assert worker.returncode == 0, worker.stderr
    with SimplePyQ(store) as queue:
        task = queue.get_task(int(view.stdout))
        assert task is not None and task.result == "welcome mail sent to bob@example.com"


# -- the systemd how-to --------------------------------------------------------
def unit_service(path: Path) -> dict[str, list[str]]:
    """The [Service] section of a systemd unit: each key's values, in order."""
    section: dict[str, list[str]] = {}
    current = None
    for line in path.read_text().splitlines():
        if line.startswith("["):
            current = line
        elif current == "[Service]" and "=" in line:
            key, value = line.split("=", 1)
            section.setdefault(key, []).append(value)
    return section


def test_the_systemd_unit_runs_a_worker_that_stops_gracefully_on_sigterm(
        tmp_path: Path) -> None:
    service = unit_service(EXAMPLES / "systemd" / "webapp-worker.service")
    assert service["KillMode"] == ["mixed"] and service["Restart"] == ["on-failure"]
    # The unit as installed on this machine: the checkout's examples for /srv/webapp,
    # this interpreter's scripts for its virtualenv, tmp_path for /var/lib/webapp.
    def here(text: str) -> str:
        return (text.replace("/srv/webapp/venv/bin/", str(SCRIPT.parent) + "/")
                .replace("/var/lib/webapp", str(tmp_path)))

    env = dict(here(value).split("=", 1) for value in service["Environment"])
    assert service["WorkingDirectory"] == ["/srv/webapp"]
    worker = subprocess.Popen(here(service["ExecStart"][0]).split(), cwd=EXAMPLES,
                              env=environment(**env), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        with SimplePyQ(env["SIMPLEPYQ_DB"]) as queue:
            queue.declare("report")
            task_id = queue.enqueue("report", {"month": 1})
            assert queue.wait(task_id, timeout=10).status == "done"
    finally:
        worker.send_signal(signal.SIGTERM)  # what systemctl stop sends, KillMode=mixed
        _, errors = worker.communicate(timeout=int(service["TimeoutStopSec"][0]))
    assert worker.returncode == 0, errors
    assert "stopped" in errors.splitlines()[-1]


# -- the dashboard how-to ------------------------------------------------------
def nginx_headers(conf: Path, host: str, client: str) -> dict[str, str]:
    """The headers the nginx configuration sends upstream for a browser's HTTPS request
    to ``host`` from ``client``."""
    values = {"$host": host, "$scheme": "https", "$proxy_add_x_forwarded_for": client}
    headers = {}
    for name, value in re.findall(r"^\s*proxy_set_header\s+(\S+)\s+(\S+);", conf.read_text(),
                                  re.MULTILINE):
        headers[name] = values.get(value, value)
    return headers


def test_the_dashboard_behind_the_proxy_links_under_its_prefix_and_takes_actions(
        tmp_path: Path) -> None:
    store = str(tmp_path / "tasks.db")
    with SimplePyQ(store) as queue:
        queue.declare("report")
        task_id = queue.enqueue("report", {"month": 1})
    server, url = serve(sys.executable, str(EXAMPLES / "dashboard_proxy.py"), "--port", "0",
                        SIMPLEPYQ_DB=store, SIMPLEPYQ_DASHBOARD_PASSWORD="s3cret")
    host, port = url.removeprefix("http://").split(":")
    proxied = nginx_headers(EXAMPLES / "nginx" / "dashboard.conf", "example.com",
                            "203.0.113.7")
    assert proxied["X-Forwarded-Prefix"] == "/queue"
    login = {"Authorization": "Basic " + base64.b64encode(b"admin:s3cret").decode()}

    def request(method: str, path: str, body: str = "",
                **headers: str) -> tuple[int, dict[str, str], str]:
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            connection.request(method, path, body.encode(), {**proxied, **headers})
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read().decode()
        finally:
            connection.close()

    try:
        assert request("GET", "/")[0] == 401  # the password, through the proxy too
        status, _, page = request("GET", "/", **login)
        assert status == 200 and 'href="/queue/tasks' in page
        status, headers, _ = request(
            "POST", f"/tasks/{task_id}/cancel", "back=/", **login,
            **{"Origin": "https://example.com", "Sec-Fetch-Site": "same-origin",
               "Content-Type": "application/x-www-form-urlencoded"})
        assert status == 303 and headers["Location"].startswith("/queue/?flash=")
    finally:
        server.send_signal(signal.SIGINT)
        server.communicate(timeout=30)
    with SimplePyQ(store) as queue:
        assert queue.get_task(task_id).status == "cancelled"  # type: ignore[union-attr]
