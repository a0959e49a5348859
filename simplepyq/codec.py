"""How task args and results become bytes in the store: msgpack, with a few extension types.

msgpack's own types (None, bool, int, float, str, bytes, list, dict) are stored as
simplepyq 0.1.3 stored them, byte for byte. The types of ``EXTENSIONS`` are stored
as msgpack extension types, each under a fixed code, and read back as the same
type with the same value: an aware datetime stays aware, a tuple stays a tuple
(and may be a dict key), a set stays a set. A scalar (a datetime, a Decimal, ...)
is one extension value whose payload holds its fields. A tuple, set or frozenset
is a msgpack array whose first item is its type's extension value, empty (its
marker), and whose other items are its items: so it nests like a list, and counts
toward ``MAX_DEPTH`` as a list does. (Were its items the payload of one extension
value, each level would be read by a nested decoder call, in Python recursion, and
msgpack's decoder takes some 40 KB of C stack per call: a few hundred tuples nested
in one another would crash the process.)

A subclass of msgpack's types or of tuple, set or frozenset is stored as its base
type, as 0.1.3 stored it (an IntEnum as an int, a namedtuple as a tuple); one of
the other extension types is refused (see ``_unsupported``). A raw
``msgpack.ExtType`` in a value is msgpack's own business, not a supported type: it
is written as msgpack writes it (looking for it would slow every value down) and
read by this table, so an unknown code is refused when read.

A value is stored only if ``unpack`` will read it back: whatever msgpack encodes
but cannot decode (one container more than the decoder's stack, a key that would
come back unhashable) is refused when written, not found unreadable when the task
runs. A reader meeting an extension code it does not know refuses the value with
a ``ValueError`` saying to upgrade: it never guesses, nor returns a raw ``ExtType``.
"""

from __future__ import annotations

import decimal
import reprlib
from collections.abc import Callable, Iterable
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any, NamedTuple, TypeAlias
from uuid import UUID
from zoneinfo import ZoneInfo

import msgpack

CODEC_VERSION = 1
"""The version of the stored form that this simplepyq writes and reads: 0 is msgpack's
own types only (simplepyq 0.1.3); each later version adds extension codes to
``EXTENSIONS``, and never changes or reuses one already given."""

MAX_DEPTH = 1024
"""How many containers (lists, dicts, tuples, sets, frozensets) a stored value may nest
in one another: the decoder's limit."""

_REFUSED = (TypeError, ValueError, OverflowError, RecursionError)
"""What msgpack raises for a value it cannot encode (ValueError: nested too deep)."""

_LARGE = 1 << 16
"""Bytes from which an encoded value counts as large (see ``_Encoder``)."""

_MAX_STEPS_SHOWN = 6

_Step: TypeAlias = tuple[str, Any]
"""One step down from a container: ("item", its index or key), ("key", the key) or
("member", the set member)."""
_Where: TypeAlias = "tuple[_Where, _Step] | None"
"""The path from the whole value to a part: (the parent's path, the last step)."""


class _Unstorable(Exception):
    """A value cannot be stored; the message says what in it and why."""


class _Unreadable(ValueError):
    """A stored value is valid msgpack that this version cannot read back; says why."""


class _HasCollections(Exception):
    """The first read met a tuple, set or frozenset: the value is read again, with them."""


# -- the extension types ----------------------------------------------------------------

_MICROSECOND = timedelta(microseconds=1)
_DECIMALS = decimal.Context()
"""Traps a malformed Decimal payload (a task's own context might not)."""


def _zone(value: datetime | time) -> int | str | None:
    """How the time zone of ``value`` is stored: None (naive); the key of a ``ZoneInfo``,
    restored as that zone (so arithmetic across its daylight-saving changes still
    holds); or else its UTC offset in microseconds, restored as a fixed-offset
    ``timezone`` (the same offset, so the same instant; the tzinfo's name is not kept)."""
    zone = value.tzinfo
    if zone is None:
        return None
    if type(zone) is ZoneInfo and zone.key is not None:
        return zone.key
    try:
        offset = value.utcoffset()
    except Exception as exc:  # a tzinfo's own method: whatever it raises
        raise TypeError(f"its tzinfo {zone!r} gives no UTC offset ({exc})") from None
    if offset is None:
        raise TypeError(f"its tzinfo {zone!r} gives no UTC offset")
    return offset // _MICROSECOND


def _tzinfo(zone: object) -> ZoneInfo | timezone | None:
    """The tzinfo that ``_zone`` stored as ``zone``."""
    if zone is None:
        return None
    if type(zone) is int:
        return timezone(zone * _MICROSECOND)
    if type(zone) is not str:
        raise ValueError(f"the time zone {zone!r} is neither an offset nor a zone key")
    try:
        return ZoneInfo(zone)
    except Exception as exc:  # ZoneInfoNotFoundError (a KeyError), ValueError, OSError
        raise _Unreadable(f"stored value has a time in the time zone {zone!r}, which this "
                          f"machine's time zone database does not have ({exc!r}); install "
                          f"the tzdata package or the system's time zone data") from None


def _array(fields: list[Any]) -> bytes:
    """A scalar's payload: its fields, as a msgpack array."""
    blob: bytes = msgpack.packb(fields)
    return blob


def _fields(payload: bytes, count: int) -> list[Any]:
    """The ``count`` fields a scalar's payload holds, as a msgpack array."""
    fields = msgpack.unpackb(payload)
    if type(fields) is not list or len(fields) != count:
        raise ValueError(f"expected an array of {count} fields, not {short_repr(fields)}")
    return fields


def _datetime_payload(value: datetime) -> bytes:
    return _array([value.year, value.month, value.day, value.hour, value.minute,
                   value.second, value.microsecond, value.fold, _zone(value)])


def _datetime_from(payload: bytes) -> datetime:
    year, month, day, hour, minute, second, microsecond, fold, zone = _fields(payload, 9)
    return datetime(year, month, day, hour, minute, second, microsecond, _tzinfo(zone),
                    fold=fold)


def _date_payload(value: date) -> bytes:
    return _array([value.year, value.month, value.day])


def _date_from(payload: bytes) -> date:
    return date(*_fields(payload, 3))


def _time_payload(value: time) -> bytes:
    return _array([value.hour, value.minute, value.second, value.microsecond, value.fold,
                   _zone(value)])


def _time_from(payload: bytes) -> time:
    hour, minute, second, microsecond, fold, zone = _fields(payload, 6)
    return time(hour, minute, second, microsecond, _tzinfo(zone), fold=fold)


def _timedelta_payload(value: timedelta) -> bytes:
    return _array([value.days, value.seconds, value.microseconds])


def _timedelta_from(payload: bytes) -> timedelta:
    fields = _fields(payload, 3)
    if any(type(field) is not int for field in fields):
        raise ValueError(f"expected whole days, seconds and microseconds, not {fields}")
    return timedelta(*fields)


def _decimal_payload(value: Decimal) -> bytes:
    return str(value).encode("ascii")  # exact, NaN, sNaN, Infinity and -0 included


def _decimal_from(payload: bytes) -> Decimal:
    return Decimal(payload.decode("ascii"), _DECIMALS)


def _uuid_payload(value: UUID) -> bytes:
    return value.bytes


def _uuid_from(payload: bytes) -> UUID:
    return UUID(bytes=payload)


class Extension(NamedTuple):
    """A type stored as a msgpack extension type: its code, fixed forever; the codec
    version that began to store it; and how its payload is written and read (None for
    a collection: an array led by the code's empty extension value, then its items)."""

    code: int
    type: type
    since: int
    write: Callable[[Any], bytes] | None
    read: Callable[[bytes], Any] | None


EXTENSIONS: tuple[Extension, ...] = (
    # payload: [year, month, day, hour, minute, second, microsecond, fold, zone]
    Extension(1, datetime, 1, _datetime_payload, _datetime_from),
    Extension(2, date, 1, _date_payload, _date_from),  # [year, month, day]
    # payload: [hour, minute, second, microsecond, fold, zone]
    Extension(3, time, 1, _time_payload, _time_from),
    Extension(4, timedelta, 1, _timedelta_payload, _timedelta_from),  # [days, seconds, µs]
    Extension(5, Decimal, 1, _decimal_payload, _decimal_from),  # str(value), ASCII
    Extension(6, UUID, 1, _uuid_payload, _uuid_from),  # its 16 bytes
    Extension(7, tuple, 1, None, None),  # an array: [ext 7 (empty), *items]
    Extension(8, set, 1, None, None),  # an array: [ext 8 (empty), *members]
    Extension(9, frozenset, 1, None, None),  # an array: [ext 9 (empty), *members]
)
"""Every extension type, by code. A zone is None (naive), a ``ZoneInfo`` key, or a UTC
offset in microseconds (see ``_zone``)."""

_BY_CODE: dict[int, Extension] = {kind.code: kind for kind in EXTENSIONS}


def _encoder(kind: Extension) -> Callable[[Any], Any]:
    """What msgpack is given, through its ``default`` hook, in place of a ``kind`` value."""
    write = kind.write
    if write is None:
        marker = msgpack.ExtType(kind.code, b"")
        return lambda items: [marker, *items]
    code = kind.code
    return lambda value: msgpack.ExtType(code, write(value))


_ENCODERS: dict[type, Callable[[Any], Any]] = {kind.type: _encoder(kind) for kind in EXTENSIONS}

_AS_BASE: tuple[tuple[type, Callable[[Any], Any]], ...] = (
    (int, int.__int__), (float, float.__float__), (str, str.__str__),
    (bytes, lambda value: bytes(memoryview(value))),
    (bytearray, lambda value: bytes(memoryview(value))),
    (list, list), (dict, lambda value: dict(value.items())),
    (tuple, _ENCODERS[tuple]), (set, _ENCODERS[set]), (frozenset, _ENCODERS[frozenset]),
)
"""A subclass of one of these types is stored as that type, as msgpack (and 0.1.3)
stored it: an IntEnum as an int, an OrderedDict as a dict, a namedtuple as a tuple."""

_STORED_TYPES = ", ".join(["None", "bool", "int", "float", "str", "bytes", "list", "dict",
                           *(kind.type.__name__ for kind in EXTENSIONS[:-1])]
                          ) + f" and {EXTENSIONS[-1].type.__name__}"


def _exact_form(value: Any) -> Any:
    """The ``default`` hook of the usual encoding: a value of an extension type as msgpack
    stores it; anything else (a subclass, too) is left to ``_any_form``."""
    encode = _ENCODERS.get(type(value))
    if encode is None:
        raise TypeError("not an exact type")
    return encode(value)


def _any_form(value: Any) -> Any:
    """A value of an extension type as msgpack stores it, or a subclass of one of
    ``_AS_BASE`` as its base type; ``TypeError`` saying what is stored, for anything else."""
    encode = _ENCODERS.get(type(value))
    if encode is not None:
        return encode(value)
    for base, as_base in _AS_BASE:
        if isinstance(value, base):
            return as_base(value)
    raise TypeError(_unsupported(value))


def _unsupported(value: Any) -> str:
    """Why ``value`` is not stored, and what is.

    A subclass of datetime, Decimal, UUID and the like is refused, not stored as
    its base type: it would come back as the base type, which may hold less (a
    pandas Timestamp its nanoseconds); converting it is the caller's choice.
    """
    name = type(value).__name__
    for kind in EXTENSIONS:
        if isinstance(value, kind.type):
            base = kind.type.__name__
            return (f"{name} is a subclass of {base}, which is stored only as {base} "
                    f"itself: convert it to a plain {base}")
    return f"simplepyq stores {_STORED_TYPES}; not {name}"


# -- writing ------------------------------------------------------------------------------

def pack(value: Any, what: str) -> bytes:
    """Encode ``value`` or raise ``TypeError`` naming ``what`` and the part msgpack refused."""
    return pack_each([value], lambda _: what)[0]


def pack_each(values: Iterable[Any], describe: Callable[[int], str]) -> list[bytes]:
    """Encode every value so that ``unpack`` reads it back, or raise ``TypeError`` for the
    first that cannot be, naming it with ``describe(its index)``, the part at fault and
    where it is. Fast even for a value that contains itself or nests without end."""
    encoder = _Encoder()
    strict = encoder.strict()
    packed: list[bytes] = []
    for value in values:  # _Encoder.pack inline: a call per item was a tenth of the time
        try:
            try:
                blob: bytes = strict.pack(value)
            except _REFUSED:
                blob = encoder.pack_any(value)
            else:
                if len(blob) > MAX_DEPTH:
                    blob = encoder.checked(value, blob)
                    strict = encoder.strict()  # (a large value lets the last one go)
        except _Unstorable as exc:
            raise TypeError(f"{describe(len(packed))} cannot be stored: {exc}") from None
        packed.append(blob)
    return packed


class _Encoder:
    """Encodes the values of one ``pack_each`` call, checking that each decodes.

    The usual value (dicts, lists, str, numbers, bytes, and the extension types,
    each of its exact type) is encoded with exact types only: then every dict key
    and set member comes back hashable, so only the depth can stop the decoder,
    and only a blob longer than ``MAX_DEPTH`` bytes can hold that many containers.
    A value with a subclass in it is encoded with each subclass as its base type
    and decoded once to be sure.

    Each msgpack encoder is made when first needed (each holds a buffer of a
    megabyte) and let go after a large value: its buffer grew, and freeing it
    before the value is checked keeps the checks of large values cheap.
    """

    __slots__ = ("_loose", "_strict")

    def __init__(self) -> None:
        self._strict: Any = None
        self._loose: Any = None

    def strict(self) -> Any:
        """The encoder of exact types (a ``msgpack.Packer``)."""
        if self._strict is None:
            self._strict = msgpack.Packer(use_bin_type=True, strict_types=True,
                                          default=_exact_form)
        return self._strict

    def pack(self, value: Any) -> bytes:
        """``value`` encoded, or ``_Unstorable`` saying what in it cannot be stored."""
        try:
            blob: bytes = self.strict().pack(value)
        except _REFUSED:  # a subclass, or a part that cannot be stored
            return self.pack_any(value)
        return self.checked(value, blob)

    def checked(self, value: Any, blob: bytes) -> bytes:
        """``blob``, ``value`` as ``strict()`` encoded it, once sure it decodes."""
        if len(blob) > MAX_DEPTH:
            if len(blob) > _LARGE:
                self._strict = None
            if not _within_decoder_stack(blob):
                raise _Unstorable(_fault(value, "too deep for the decoder"))
        return blob

    def pack_any(self, value: Any) -> bytes:
        """``value``, which ``strict()`` refused, encoded with each subclass as its base."""
        if self._loose is None:
            self._loose = msgpack.Packer(use_bin_type=True, strict_types=True,
                                         default=_any_form)
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
    be stored: a scalar refused, a container inside itself, one nested deeper than
    ``MAX_DEPTH``, or a dict key or set member that would come back unhashable.

    Iterative, and each part is searched once (again only if met deeper), so that a
    value that contains itself or nests thousands deep is diagnosed in time linear
    in its size, without Python's recursion limit.
    """
    encoder = msgpack.Packer(use_bin_type=True, strict_types=True, default=_any_form)
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
        unhashable = _unhashable_when_read(part, where)
        if unhashable:
            return unhashable
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
    if isinstance(part, (set, frozenset)):
        return [(("member", member), member) for member in part]
    return None


def _unhashable_when_read(part: Any, where: _Where) -> str | None:
    """Why ``part`` (at ``where``) cannot be stored if one of its dict keys or set members
    is a hashable subclass of list or dict: it would be read back unhashable."""
    if isinstance(part, dict):
        role, place = "dict key", "a key"
    elif isinstance(part, (set, frozenset)):
        role, place = "set member", "in a set"
    else:
        return None
    for member in part:
        if isinstance(member, (list, dict)):
            kind = "dict" if isinstance(member, dict) else "list"
            return (f"the {role} {short_repr(member)}{_at(where)} would be read back as a "
                    f"{kind}, which cannot be {place}; use a str, number, bytes, tuple or "
                    f"frozenset")
    return None


def _at(where: _Where) -> str:
    """Where a part is: `` at [0]['x']``, `` as a dict key at [0]``, `` as a set member``;
    nothing for the whole. A key or member on the way is shown, in brief, in braces:
    `` at [0]{(1, 2)}[1]`` is item 1 of the key (1, 2) of item 0."""
    steps: list[_Step] = []
    while where is not None:
        where, step = where
        steps.append(step)
    steps.reverse()
    role = {"key": " as a dict key", "member": " as a set member"}.get(steps[-1][0]) \
        if steps else None
    shown = [f"[{short_repr(label)}]" if kind == "item" else f"{{{_brief(label)}}}"
             for kind, label in steps[:-1 if role else None]]
    if len(shown) > _MAX_STEPS_SHOWN:
        shown = [*shown[:3], f"...({len(shown) - 5} more)...", *shown[-2:]]
    path = f" at {''.join(shown)}" if shown else ""
    return f"{role}{path}" if role else path


_REPR = reprlib.Repr()
_REPR.maxlevel = 3
_REPR.maxstring = 60
_REPR.maxother = 60


def short_repr(value: Any) -> str:
    """A bounded repr for messages: safe for huge, deep or self-containing values."""
    text = _REPR.repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _brief(value: Any) -> str:
    """A shorter ``short_repr``, for a key or set member on a path (which shows the rest)."""
    text = short_repr(value)
    return text if len(text) <= 24 else text[:21] + "..."


# -- reading ------------------------------------------------------------------------------

def unpack(blob: bytes) -> Any:
    """Decode a stored blob; raise ``ValueError`` saying why when it is not valid msgpack,
    or uses an extension type this version does not know, or one whose payload is
    malformed.

    The first read takes no hook for arrays, so that plain values are read at
    msgpack's own speed; a value with a tuple, set or frozenset is read again by
    ``_CollectionReader``, which builds them.
    """
    try:  # (raw=False, str read as str, is the default since msgpack 1.0, which we need)
        return msgpack.unpackb(blob, strict_map_key=False, ext_hook=_read_ext)
    except _HasCollections:
        pass  # read again below, out of this handler
    except _Unreadable:
        raise
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise _invalid(exc) from exc
    return _CollectionReader().read(blob)


def _invalid(exc: Exception) -> ValueError:
    return ValueError(f"stored bytes are not valid msgpack ({type(exc).__name__}: {exc})")


def _known(code: int) -> Extension:
    """The extension type stored under ``code``, or ``_Unreadable`` if this version has none."""
    kind = _BY_CODE.get(code)
    if kind is None:
        raise _Unreadable(f"stored value uses msgpack extension type {code}, which this "
                          f"version of simplepyq (codec version {CODEC_VERSION}) does not "
                          f"know; upgrade simplepyq to read it")
    return kind


def _read_ext(code: int, payload: bytes) -> Any:
    """The ``ext_hook`` of the first read: a scalar's value, or ``_HasCollections``."""
    kind = _known(code)
    if kind.read is None:
        raise _HasCollections
    return _read_scalar(kind, payload)


def _read_scalar(kind: Extension, payload: bytes) -> Any:
    assert kind.read is not None
    try:
        return kind.read(payload)
    except _Unreadable:
        raise
    except Exception as exc:  # each reader fails its own way on a bad payload
        raise _Unreadable(f"stored value has a malformed {kind.type.__name__} (msgpack "
                          f"extension type {kind.code}, payload {short_repr(payload)}): "
                          f"{type(exc).__name__}: {exc}") from None


class _CollectionReader:
    """Reads a value with tuples, sets or frozensets in it: ``ext`` reads each marker as
    its ``Extension``, and ``array`` turns an array led by one into that collection.
    Markers are counted, so that one out of place (not leading an array) is refused,
    not returned."""

    __slots__ = ("_made", "_used")

    def __init__(self) -> None:
        self._made = 0
        self._used = 0

    def read(self, blob: bytes) -> Any:
        try:
            value = msgpack.unpackb(blob, strict_map_key=False, ext_hook=self.ext,
                                    list_hook=self.array)
        except _Unreadable:
            raise
        except Exception as exc:
            raise _invalid(exc) from exc
        if self._used != self._made:
            raise _Unreadable("stored value has the marker of a tuple, set or frozenset "
                              "(an empty msgpack extension value) where no array begins")
        return value

    def ext(self, code: int, payload: bytes) -> Any:
        kind = _known(code)
        if kind.read is not None:
            return _read_scalar(kind, payload)
        if payload:
            raise _Unreadable(f"stored value has a malformed {kind.type.__name__} marker "
                              f"(msgpack extension type {code} with a payload, "
                              f"{short_repr(payload)})")
        self._made += 1
        return kind

    def array(self, items: list[Any]) -> Any:
        if items and type(items[0]) is Extension:
            self._used += 1
            return items[0].type(items[1:])
        return items


# -- composing encoded values -------------------------------------------------------------

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
