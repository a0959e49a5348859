"""Settings of the example project: only what its two views need, and the store."""

from __future__ import annotations

import os

SECRET_KEY = "only-for-this-example"  # an example's: a project reads its own from the environment
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
ROOT_URLCONF = "django_app.urls"
INSTALLED_APPS: list[str] = []
DATABASES: dict[str, object] = {}
USE_TZ = True

SIMPLEPYQ_DB = os.environ.get("SIMPLEPYQ_DB", "django_tasks.db")
"""The task store: a file, or a postgresql:// URL."""
SIMPLEPYQ_WORKERS = os.environ.get("SIMPLEPYQ_WORKERS", "beside")
"""``app``: the web process runs the workers (wsgi.py starts them); ``beside``:
``simplepyq worker django_app.worker:queue`` runs them."""
