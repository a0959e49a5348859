"""A Flask application whose views enqueue tasks, with workers in its own processes
or beside it.

    flask --app flask_app run                # workers in the app's process
    SIMPLEPYQ_WORKERS=none flask --app flask_app run
    simplepyq worker flask_app:queue         # ... and workers beside it

``create_app`` starts the queue's workers unless ``$SIMPLEPYQ_WORKERS`` is
``none``. The store is ``$FLASK_TASKS_DB``, or ``flask_tasks.db`` in the current
directory. The how-to guide "Use it from Django, Flask or FastAPI" explains it.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, request

from simplepyq import SimplePyQ

queue = SimplePyQ(os.environ.get("FLASK_TASKS_DB", "flask_tasks.db"))


@queue.channel("email", max_workers=2, backoff=30)
def send_welcome(args: dict[str, str]) -> str:
    return f"welcome mail sent to {args['email']}"  # your mail client goes here


def create_app(workers: bool | None = None) -> Flask:
    """The application; it starts the queue's workers in this process if ``workers``
    (by default, unless ``$SIMPLEPYQ_WORKERS`` is ``none``)."""
    app = Flask(__name__)

    @app.post("/signup")
    def signup() -> tuple[dict[str, Any], int]:
        email = request.form.get("email", "")
        if "@" not in email:
            return {"error": f"not an email address: {email!r}"}, 400
        task_id = send_welcome.enqueue({"email": email}, retries=3)
        return {"task": task_id}, 202

    @app.get("/tasks/<int:task_id>")
    def task(task_id: int) -> tuple[dict[str, Any], int]:
        found = queue.get_task(task_id)
        if found is None:
            return {"error": f"no task {task_id}"}, 404
        return {"status": found.status, "result": found.result}, 200

    if workers if workers is not None else os.environ.get("SIMPLEPYQ_WORKERS") != "none":
        queue.start()  # stopped at the interpreter's exit: running tasks finish
    return app
