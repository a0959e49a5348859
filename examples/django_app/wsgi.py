"""The WSGI application, as ``gunicorn django_app.wsgi`` serves it. With
``SIMPLEPYQ_WORKERS=app`` each web process also runs the queue's workers."""

from __future__ import annotations

import os

from django.conf import settings
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_app.settings")
application = get_wsgi_application()

if settings.SIMPLEPYQ_WORKERS == "app":
    from django_app.tasks import queue

    queue.start()  # stopped at the interpreter's exit: running tasks finish
