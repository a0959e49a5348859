"""The web dashboard: a WSGI application over a task store, with Prometheus metrics.

``Dashboard(queue_or_location)`` is the application (mount it in any WSGI server,
see its docstring); ``simplepyq dashboard`` serves it alone. It needs nothing
beyond the standard library and loads nothing from elsewhere: its script and
style sheet are served by itself.
"""

from simplepyq.dashboard.app import Dashboard

__all__ = ["Dashboard"]
