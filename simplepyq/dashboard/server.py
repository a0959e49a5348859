"""Serving the dashboard alone (``simplepyq dashboard``): wsgiref, one thread a request.

The standard library's WSGI server is enough for a page a few people look at;
a larger site mounts ``Dashboard`` in its own server instead.
"""

from __future__ import annotations

import ipaddress
import logging
import signal
import socket
import socketserver
from types import FrameType
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from simplepyq.dashboard.app import Dashboard

log = logging.getLogger("simplepyq.dashboard")
LOOPBACK_NAMES = {"localhost"}


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a request still open does not keep the command from exiting

    def server_bind(self) -> None:
        # HTTPServer looks up the host's fully qualified name here, which can hang on a
        # machine without DNS; the name given is what the environ needs.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), \
            int(self.server_address[1])
        self.setup_environ()


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Requests go to the debug log (``--debug``), not to stderr: the live pages ask
        every two seconds."""
        log.debug("dashboard: %s " + format, self.address_string(), *args)


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach ``host``: localhost, 127.0.0.0/8, ::1."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind(dashboard: Dashboard, host: str, port: int) -> WSGIServer:
    """A server listening on ``host:port`` (port 0: a free one); ``OSError`` if it cannot."""
    plain = host.strip("[]")
    server_class = _Server6 if ":" in plain else _Server
    server = server_class((plain, port), _Handler)
    server.set_app(dashboard)
    return server


def url(server: WSGIServer) -> str:
    host, port = server.server_address[:2]
    name = host.decode() if isinstance(host, bytes) else host
    shown = f"[{name}]" if ":" in name else name
    return f"http://{shown}:{port}/"


def serve(server: WSGIServer) -> None:
    """Serve until SIGINT or SIGTERM, then stop listening."""
    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.server_close()
