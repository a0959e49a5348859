"""Named SQL statements, read once from a backend's ``.sql`` file (internal).

Each backend keeps its SQL as SQL: a file of statements, each introduced by a
``-- name: NAME`` line; other ``--`` lines are comments.
"""

from __future__ import annotations

from importlib import resources


def load(filename: str) -> dict[str, str]:
    """The statements of ``filename`` in this package, by name."""
    text = resources.files("simplepyq.storage").joinpath(filename).read_text("utf-8")
    queries: dict[str, str] = {}
    name = ""
    for line in text.splitlines():
        if line.startswith("-- name:"):
            name = line.split(":", 1)[1].strip()
            queries[name] = ""
        elif name and not line.startswith("--"):
            queries[name] += line + "\n"
    return {key: value.strip() for key, value in queries.items()}
