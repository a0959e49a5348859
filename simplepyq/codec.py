"""How task args and results become bytes in the store (msgpack, as in simplepyq 0.1.3)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import msgpack


def pack(value: Any, what: str) -> bytes:
    """Encode ``value`` or raise ``TypeError`` naming ``what`` and the type msgpack refused."""
    return pack_each([value], lambda _: what)[0]


def pack_each(values: Iterable[Any], describe: Callable[[int], str]) -> list[bytes]:
    """Encode every value, or raise ``TypeError`` for the first that cannot be, naming it
    with ``describe(its index)`` and the type msgpack refused."""
    packer = msgpack.Packer(use_bin_type=True)
    packed: list[bytes] = []
    try:
        for value in values:
            packed.append(packer.pack(value))
    except (TypeError, ValueError, OverflowError) as exc:
        culprit = _unencodable_part(value)
        raise TypeError(
            f"{describe(len(packed))} cannot be stored: msgpack cannot encode "
            f"{type(culprit).__name__} value {_short_repr(culprit)} ({exc})"
        ) from None
    return packed


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
