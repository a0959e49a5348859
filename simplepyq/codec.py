"""How task args and results become bytes in the store (msgpack, as in simplepyq 0.1.3)."""

from __future__ import annotations

from typing import Any

import msgpack


def pack(value: Any, what: str) -> bytes:
    """Encode ``value`` or raise ``TypeError`` naming ``what`` and the type msgpack refused."""
    try:
        return bytes(msgpack.packb(value, use_bin_type=True))
    except (TypeError, ValueError, OverflowError) as exc:
        culprit = _unencodable_part(value)
        raise TypeError(
            f"{what} cannot be stored: msgpack cannot encode "
            f"{type(culprit).__name__} value {_short_repr(culprit)} ({exc})"
        ) from None


def unpack(blob: bytes) -> Any:
    """Decode a stored blob; raise ``ValueError`` saying why when it is not valid msgpack."""
    try:
        return msgpack.unpackb(blob, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        reason = f"{type(exc).__name__}: {exc}"
        raise ValueError(f"stored bytes are not valid msgpack ({reason})") from exc


def _unencodable_part(value: Any) -> Any:
    """Find the innermost part of ``value`` that msgpack refuses, for the error message."""
    children: list[Any] = []
    if isinstance(value, dict):
        children = [*value.keys(), *value.values()]
    elif isinstance(value, (list, tuple)):
        children = list(value)
    for child in children:
        try:
            msgpack.packb(child, use_bin_type=True)
        except (TypeError, ValueError, OverflowError):
            return _unencodable_part(child)
    return value


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
