"""HTML built so that escaping is the default: text is escaped unless it is ``Html``.

Every value a page shows comes from the store, and a task's args are whatever its
producer sent (``<script>`` included), so the pages never paste text into markup:
they build it with ``tag``, which escapes each child and attribute value that is
not ``Html`` already. ``Html`` is only made here, from escaped parts.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping

Attributes = Mapping[str, object]


class Html(str):
    """Markup whose text parts are escaped already: a page may include it as it is."""

    __slots__ = ()


def esc(value: object) -> Html:
    """``value`` as text in a page: ``Html`` as it is, anything else escaped (quotes too)."""
    if isinstance(value, Html):
        return value
    return Html(html.escape("" if value is None else str(value), quote=True))


def join(parts: Iterable[object], separator: str = "") -> Html:
    """The parts one after another, each escaped unless it is ``Html``; a part that is a
    list or tuple is joined first (without the separator)."""
    return Html(esc(separator).join(
        join(part) if isinstance(part, (list, tuple)) else esc(part) for part in parts))


def tag(name: str, attributes: Attributes | None = None, *children: object) -> Html:
    """``<name attr="value">children</name>``, every attribute value and child escaped.

    An attribute whose value is None or False is left out; True writes it bare
    (``disabled``). A child that is a list or tuple is joined, at any depth. Void elements
    (``input``, ``br``, ``meta``, ``link``) take no children and no end tag.
    """
    shown = [f" {key}" if value is True else f' {key}="{esc(value)}"'
             for key, value in (attributes or {}).items()
             if value is not None and value is not False]
    start = f"<{name}{''.join(shown)}>"
    if name in _VOID:
        return Html(start)
    return Html(f"{start}{join(children)}</{name}>")


_VOID = frozenset({"input", "br", "meta", "link", "hr", "img"})
