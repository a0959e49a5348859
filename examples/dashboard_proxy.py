"""The dashboard behind a reverse proxy, under a path prefix and over HTTPS.

    SIMPLEPYQ_DB=tasks.db SIMPLEPYQ_DASHBOARD_PASSWORD=... python dashboard_proxy.py

``application`` is the dashboard wrapped in werkzeug's ``ProxyFix``, which takes
the scheme, host and prefix that the proxy sends (``X-Forwarded-Proto``,
``X-Forwarded-Host``, ``X-Forwarded-Prefix``, see ``nginx/dashboard.conf``), so that
the dashboard builds its links under the prefix and accepts the actions of pages
the browser loaded over HTTPS. Any WSGI server can run it (``gunicorn --bind
127.0.0.1:8181 --threads 8 dashboard_proxy:application``); run as a script, this
file serves it with the standard library's server, on 127.0.0.1 only: trust those
headers from nothing but the proxy. The how-to guide "Serve the dashboard behind a
reverse proxy" explains it.
"""

from __future__ import annotations

import argparse
import os
import socketserver
from wsgiref.simple_server import WSGIServer, make_server

from werkzeug.middleware.proxy_fix import ProxyFix

from simplepyq.dashboard import Dashboard

dashboard = Dashboard(os.environ["SIMPLEPYQ_DB"],
                      password=os.environ.get("SIMPLEPYQ_DASHBOARD_PASSWORD") or None)
application = ProxyFix(dashboard, x_for=1, x_proto=1, x_host=1, x_prefix=1)


class ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True  # the live pages keep requests coming; each gets a thread


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the dashboard for a reverse proxy.")
    parser.add_argument("--port", type=int, default=8181, help="0 picks a free port")
    options = parser.parse_args(argv)
    with make_server("127.0.0.1", options.port, application,
                     server_class=ThreadingServer) as server:
        print(f"serving on http://127.0.0.1:{server.server_port}", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            dashboard.close()


if __name__ == "__main__":
    main()
