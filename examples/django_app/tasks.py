"""The project's queue and its channels. Imported by the views to enqueue, and by
``worker`` to run them; it reads the store's location from Django's settings."""

from __future__ import annotations

from django.conf import settings

from simplepyq import SimplePyQ

queue = SimplePyQ(settings.SIMPLEPYQ_DB)


@queue.channel("email", max_workers=2, backoff=30)
def send_welcome(args: dict[str, str]) -> str:
    return f"welcome mail sent to {args['email']}"  # django.core.mail.send_mail goes here
