"""How task args and results become bytes in the store (msgpack, as in simplepyq 0.1.3).

A value is stored only if ``unpack`` will read it back: msgpack encodes some values
that it cannot decode (a tuple used as a dict key comes back as a list, which is no
key; one container more than the decoder's stack), so those are refused when written,
not found unreadable when the task runs.
"""

from __future__ import annotations

import reprlib
from collections.abc import Callable, Iterable
from typing import Any, TypeAlias

import msgpack

MAX_DEPTH = 1024
"""How many containers a stored value may nest in one another: the decoder's limit."""

_REFUSED = (TypeError, ValueError, OverflowError, RecursionError)
"""What msgpack raises for a value it cannot encode (ValueError: nested too deep)."""

_LARGE = 1 << 16
"""Bytes from which an encoded value counts as large (see ``_Encoder``)."""

_MAX_STEPS_SHOWN = 6

_Step: TypeAlias = tuple[str, Any]
"""One step down from a container: ("item", its index or key) or ("key", the key)."""
_Where: TypeAlias = "tuple[_Where, _Step] | None"
"""The path from the whole value to a part: (the parent's path, the last step)."""


class _Unstorable(Exception):
    """A value cannot be stored; the message says what in it and why."""


def pack(value: Any, what: str) -> bytes:
    """Encode ``value`` or raise ``TypeError`` naming ``what`` and the part msgpack refused."""
    return pack_each([value], lambda _: what)[0]


def pack_each(values: Iterable[Any], describe: Callable[[int], str]) -> list[bytes]:
    """Encode every value so that ``unpack`` reads it back, or raise ``TypeError`` for the
    first that cannot be, naming it with ``describe(its index)``, the part at fault and
    where it is. Fast even for a value that contains itself or nests without end."""
    encoder = _Encoder()
    packed: list[bytes] = []
    for value in values:
        try:
            packed.append(encoder.pack(value))
        except _Unstorable as exc:
            raise TypeError(f"{describe(len(packed))} cannot be stored: {exc}") from None
    return packed


def unpack(blob: bytes) -> Any:
    """Decode a stored blob; raise ``ValueError`` saying why when it is not valid msgpack."""
    try:
        return msgpack.unpackb(blob, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        reason = f"{type(exc).__name__}: {exc}"
        raise ValueError(f"stored bytes are not valid msgpack ({reason})") from exc


class _Encoder:
    """Encodes the values of one ``pack_each`` call, checking that each decodes.

    The usual value (plain dicts, lists, str, numbers, bytes) is encoded with exact
    types only: then every dict key is a scalar, so only the depth can stop the
    decoder, and only a blob longer than ``MAX_DEPTH`` bytes can hold that many
    containers. Anything else (tuples, subclasses) is encoded as msgpack encodes
    anything and decoded once to be sure.

    Each msgpack encoder is made when first needed (each holds a buffer of a
    megabyte) and let go after a large value: its buffer grew, and freeing it
    before the value is checked keeps the checks of large values cheap.
    """

    __slots__ = ("_loose", "_strict")

    def __init__(self) -> None:
        self._strict: Any = None
        self._loose: Any = None

    def pack(self, value: Any) -> bytes:
        """``value`` encoded, or ``_Unstorable`` saying what in it cannot be stored."""
        if type(value) is not tuple:  # a tuple is never exact: skip the attempt
            if self._strict is None:
                self._strict = msgpack.Packer(use_bin_type=True, strict_types=True)
            try:
                blob: bytes = self._strict.pack(value)
            except _REFUSED:
                pass
            else:
                if len(blob) > MAX_DEPTH:
                    if len(blob) > _LARGE:
                        self._strict = None
                    if not _within_decoder_stack(blob):
                        raise _Unstorable(_fault(value, "too deep for the decoder"))
                return blob
        return self._pack_any(value)

    def _pack_any(self, value: Any) -> bytes:
        if self._loose is None:
            self._loose = msgpack.Packer(use_bin_type=True)
        try:
            blob: bytes = self._loose.pack(value)
        except _REFUSED as exc:
            raise _Unstorable(_fault(value, f"{type(exc).__name__}: {exc}")) from None
        if len(blob) > _LARGE:
            self._loose = None
        try:
            unpack(blob)
        except ValueError as exc:
            raise _Unstorable(_fault(value, str(exc.__cause__ or exc))) from None
        return blob


def _within_decoder_stack(blob: bytes) -> bool:
    """True if ``blob`` nests no deeper than the decoder can read; parses, builds nothing."""
    reader = msgpack.Unpacker(max_buffer_size=len(blob), read_size=len(blob))
    reader.feed(blob)
    try:
        reader.skip()
    except Exception:  # StackError, or any other reason the decoder gives up
        return False
    return True


def _fault(value: Any, reason: str) -> str:
    """What in ``value`` cannot be stored and where, or else ``reason`` as msgpack gave it."""
    try:
        found = _find_fault(value)
    except Exception:  # a part whose own methods fail: report what msgpack said
        found = None
    return found or f"msgpack cannot store {short_repr(value)} ({reason})"


def _find_fault(value: Any) -> str | None:
    """Search ``value`` depth first, as msgpack encodes it, for the first part that cannot
    be stored: a scalar msgpack refuses, a container inside itself, one nested deeper
    than ``MAX_DEPTH``, or a dict key that would come back as a list or dict.

    Iterative, and each part is searched once (again only if met deeper), so that a
    value that contains itself or nests thousands deep is diagnosed in time linear
    in its size, without Python's recursion limit.
    """
    encoder = msgpack.Packer(use_bin_type=True)
    inside: set[int] = set()  # the containers enclosing the part being searched
    clean: dict[int, tuple[Any, int]] = {}  # searched parts (kept alive) and their depth
    todo: list[tuple[bool, Any, int, _Where]] = [(False, value, 1, None)]
    while todo:
        leaving, part, depth, where = todo.pop()
        if leaving:
            inside.discard(id(part))
            clean[id(part)] = (part, depth)
            continue
        children = _children(part)
        if children is None:
            try:
                encoder.pack(part)
            except _REFUSED as exc:
                return (f"msgpack cannot encode {type(part).__name__} value "
                        f"{short_repr(part)}{_at(where)} ({exc})")
            continue
        if id(part) in inside:
            return (f"it contains itself{_at(where)}; msgpack stores trees, not cycles: "
                    "store a copy without the cycle")
        if depth > MAX_DEPTH:
            return (f"it nests containers more than {MAX_DEPTH} deep{_at(where)}; "
                    "store a flatter value")
        if id(part) in clean and clean[id(part)][1] >= depth:
            continue
        if isinstance(part, dict):
            for key in part:
                if _children(key) is not None:
                    kind = "dict" if isinstance(key, dict) else "list"
                    return (f"the dict key {short_repr(key)}{_at(where)} would be read "
                            f"back as a {kind}, which cannot be a key; use a str, number "
                            f"or bytes key")
        inside.add(id(part))
        todo.append((True, part, depth, where))
        todo.extend((False, child, depth + 1, (where, step))
                    for step, child in reversed(children))
    return None


def _children(part: Any) -> list[tuple[_Step, Any]] | None:
    """The parts inside a container msgpack encodes as a map or an array, each with its
    step from the container; None for anything else (msgpack keeps an ExtType whole)."""
    if isinstance(part, dict):
        pairs: list[tuple[_Step, Any]] = []
        for key, item in part.items():
            pairs.append((("key", key), key))
            pairs.append((("item", key), item))
        return pairs
    if isinstance(part, (list, tuple)) and not isinstance(part, msgpack.ExtType):
        return [(("item", index), item) for index, item in enumerate(part)]
    return None


def _at(where: _Where) -> str:
    """Where a part is: `` at [0]['x']``, `` as a dict key at [0]``; nothing for the whole."""
    steps: list[_Step] = []
    while where is not None:
        where, step = where
        steps.append(step)
    steps.reverse()
    as_key = bool(steps) and steps[-1][0] == "key"
    shown = [f"[{short_repr(label)}]" for _, label in steps[:-1 if as_key else None]]
    if len(shown) > _MAX_STEPS_SHOWN:
        shown = [*shown[:3], f"...({len(shown) - 5} more)...", *shown[-2:]]
    path = f" at {''.join(shown)}" if shown else ""
    return f" as a dict key{path}" if as_key else path


_REPR = reprlib.Repr()
_REPR.maxlevel = 3
_REPR.maxstring = 60
_REPR.maxother = 60


def short_repr(value: Any) -> str:
    """A bounded repr for messages: safe for huge, deep or self-containing values."""
    text = _REPR.repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


NIL: bytes = b"\xc0"
"""None, encoded: what an absent stored value stands for inside a composed one."""


def array_of(blobs: Iterable[bytes | None]) -> bytes:
    """The encoding of a list whose items are already encoded (None: an absent value,
    read back as None): upstream results become a downstream task's args without being
    decoded and encoded again."""
    items = [NIL if blob is None else blob for blob in blobs]
    header: bytes = msgpack.Packer().pack_array_header(len(items))
    return header + b"".join(items)


def map_of(fields: dict[str, Any], encoded: dict[str, bytes | None]) -> bytes:
    """The encoding of a dict of ``fields`` (plain values) and ``encoded`` (values
    already encoded, None standing for None)."""
    packer = msgpack.Packer()
    parts: list[bytes] = [packer.pack_map_header(len(fields) + len(encoded))]
    for name, value in fields.items():
        parts += [packer.pack(name), packer.pack(value)]
    for name, blob in encoded.items():
        parts += [packer.pack(name), NIL if blob is None else blob]
    return b"".join(parts)
