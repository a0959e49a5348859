"""The web front end: a WSGI application that enqueues reports and shows their tasks.

    python -m webapp.web [--port 8000] [--no-workers]

``POST /reports`` with ``month=N`` enqueues a report and answers at once (202)
with the task's id; ``GET /tasks/ID`` shows the task: its status, its progress,
and its result once done. Without ``--no-workers`` the workers run in this
process (``queue.start()``); with it, this process only enqueues, and a worker
process runs the tasks: ``simplepyq worker webapp.tasks:queue``.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import threading
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, make_server

from webapp.tasks import build_report, queue

StartResponse = Callable[[str, list[tuple[str, str]]], Any]
TASK_URL = re.compile(r"/tasks/(\d+)")


def application(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """Route a request: enqueue a report, or show a task."""
    method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "/")
    if method == "POST" and path == "/reports":
        return create_report(environ, start_response)
    found = TASK_URL.fullmatch(path)
    if method == "GET" and found:
        return show_task(int(found[1]), start_response)
    return respond(start_response, "404 Not Found", {"error": f"no such page: {path}"})


def create_report(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """Enqueue the report and answer at once: the worker builds it later."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    form = parse_qs(environ["wsgi.input"].read(length).decode())
    month = form.get("month", [""])[0]
    if not month.isdigit() or not 1 <= int(month) <= 12:
        return respond(start_response, "400 Bad Request",
                       {"error": f"month must be 1 to 12, not {month!r}"})
    task_id = build_report.enqueue({"month": int(month)}, retries=2)
    return respond(start_response, "202 Accepted", {"task": task_id, "url": f"/tasks/{task_id}"})


def show_task(task_id: int, start_response: StartResponse) -> Iterable[bytes]:
    """The task as stored now: its status, progress and result (or error)."""
    task = queue.get_task(task_id)
    if task is None:
        return respond(start_response, "404 Not Found", {"error": f"no task {task_id}"})
    error = task.error.strip().splitlines()[-1] if task.error else None
    return respond(start_response, "200 OK", {"task": task.id, "status": task.status,
                                              "progress": task.progress,
                                              "result": task.result, "error": error})


def respond(start_response: StartResponse, status: str, body: object) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(data)))])
    return [data]


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Keep the terminal for the application's own lines."""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the reports application.")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--no-workers", action="store_true",
                        help="only enqueue: a worker process runs the tasks")
    options = parser.parse_args(argv)
    if not options.no_workers:
        queue.start()  # workers in background threads of this process
    with make_server("127.0.0.1", options.port, application,
                     handler_class=QuietHandler) as server:
        # SIGTERM (systemd, docker stop) stops the server as Ctrl-C does; shutdown()
        # waits for serve_forever() to return, so it is called from another thread.
        signal.signal(signal.SIGTERM, lambda signum, frame: threading.Thread(
            target=server.shutdown).start())
        print(f"serving on http://127.0.0.1:{server.server_port}", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            queue.close()  # running tasks finish; unstarted ones stay pending


if __name__ == "__main__":
    main()
