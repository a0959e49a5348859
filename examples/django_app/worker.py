"""Where ``simplepyq worker django_app.worker:queue`` finds the queue: Django is set
up first, so that the tasks may use the ORM, the cache and the settings."""

from __future__ import annotations

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_app.settings")
django.setup()

from django_app.tasks import queue  # noqa: E402 (after Django is set up)

__all__ = ["queue"]
