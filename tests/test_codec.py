"""The codec: a value is stored only if it reads back, exactly, and a refusal says what and where.

The encoder is msgpack's, with extension types for datetimes, dates, times,
timedeltas, Decimals, UUIDs, tuples, sets and frozensets. What the codec adds is
the promise that ``unpack`` reads back whatever ``pack`` accepts, as the same
types with the same values (so that a task never fails later with "args could
not be decoded"); that every refusal is a ``TypeError`` that comes fast, even for
a value that contains itself or nests without end; and that a stored value this
version cannot read is a ``ValueError`` saying why, never a guess.
"""

from __future__ import annotations

import time
from collections import OrderedDict, namedtuple
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone, tzinfo
from datetime import time as time_of_day
from decimal import Decimal
from enum import IntEnum
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simplepyq import SimplePyQ, codec
from tests.backends import raw_sql

CPU_LIMIT = 2.0
"""Seconds of CPU a refusal may take: about a hundred times what it takes."""

PARIS = ZoneInfo("Europe/Paris")
INDIA = timezone(timedelta(hours=5, minutes=30))


def _nested(depth: int, innermost: Any = None, wrap: Callable[[Any], Any] = lambda x: [x]
            ) -> Any:
    """``depth`` containers one inside the other, around ``innermost``."""
    value = innermost
    for _ in range(depth):
        value = wrap(value)
    return value


def _refusal(value: Any) -> str:
    """The message of the TypeError that storing ``value`` raises, checking that it is fast."""
    began = time.process_time()
    with pytest.raises(TypeError) as refused:
        codec.pack(value, "args #0 for channel 'c'")
    assert time.process_time() - began < CPU_LIMIT
    message = str(refused.value)
    assert message.startswith("args #0 for channel 'c' cannot be stored: ")
    return message


def _same(read: Any, given: Any) -> bool:
    """Whether ``read`` is ``given`` as stored: the same types all the way down, equal
    containers, and scalars with the same repr (which shows a datetime's tzinfo and
    fold, a Decimal's exponent and sign, a float's -0.0)."""
    if type(read) is not type(given):
        return False
    if isinstance(given, (list, tuple)):
        return len(read) == len(given) and all(map(_same, read, given))
    if isinstance(given, dict):
        return len(read) == len(given) and all(
            _same(read_key, key) and _same(read_item, item)
            for (read_key, read_item), (key, item) in zip(read.items(), given.items(), strict=True))
    if isinstance(given, (set, frozenset)):
        return len(read) == len(given) and all(
            any(_same(member, one) for member in read) for one in given)
    return repr(read) == repr(given)


def _self_containing_list() -> list[Any]:
    value: list[Any] = [1]
    value.append(value)
    return value


def _self_containing_dict() -> dict[str, Any]:
    value: dict[str, Any] = {"a": 1}
    value["self"] = value
    return value


def _deep_inside_a_cycle() -> dict[str, Any]:
    inner: list[Any] = []
    outer = {"x": [1, {"y": inner}]}
    inner.append(outer)
    return outer


def _list_inside_a_tuple_inside_itself() -> tuple[Any, ...]:
    inner: list[Any] = []
    outer = (0, inner)
    inner.append(outer)
    return outer


# -- values that contain themselves or nest without end ---------------------------------

@pytest.mark.parametrize(("make", "where"), [
    (_self_containing_list, "at [1]"),
    (_self_containing_dict, "at ['self']"),
    (_deep_inside_a_cycle, "at ['x'][1]['y'][0]"),
    (_list_inside_a_tuple_inside_itself, "at [1][0]"),
], ids=["list", "dict", "through-several-levels", "through-a-tuple"])
def test_a_value_that_contains_itself_is_refused_fast_saying_where(
    make: Callable[[], Any], where: str
) -> None:
    message = _refusal(make())
    assert f"it contains itself {where}" in message


@pytest.mark.parametrize("wrap", [lambda x: [x], lambda x: {"k": x}, lambda x: (x,),
                                  lambda x: frozenset([x]), lambda x: [(1, x)]],
                         ids=["lists", "dicts", "tuples", "frozensets", "lists-of-tuples"])
def test_a_value_nested_far_deeper_than_msgpack_reads_is_refused_fast(
    wrap: Callable[[Any], Any],
) -> None:
    message = _refusal(_nested(100_000, wrap=wrap))
    assert f"more than {codec.MAX_DEPTH} deep" in message
    assert len(message) < 300  # the path is shortened, not 100,000 steps long


@pytest.mark.parametrize("value", [
    _nested(codec.MAX_DEPTH), _nested(codec.MAX_DEPTH - 1, innermost=[]),
    _nested(codec.MAX_DEPTH, wrap=lambda x: {"k": x}),
    _nested(codec.MAX_DEPTH, innermost=datetime(2024, 1, 1), wrap=lambda x: (x,)),
    _nested(codec.MAX_DEPTH, wrap=lambda x: frozenset([x])),
    _nested(codec.MAX_DEPTH // 2, wrap=lambda x: [(x,)]),
], ids=["lists", "lists-around-an-empty-one", "dicts", "tuples", "frozensets",
        "lists-and-tuples"])
def test_values_at_the_deepest_nesting_the_decoder_reads_are_stored_and_read_back(
    value: Any,
) -> None:
    blob = codec.pack(value, "args")
    assert codec.pack(codec.unpack(blob), "args") == blob  # (== on the values would recurse)


@pytest.mark.parametrize("wrap", [lambda x: [x], lambda x: {"k": x}, lambda x: (x,)],
                         ids=["lists", "dicts", "tuples"])
def test_one_container_more_than_the_decoder_reads_is_refused_though_msgpack_encodes_it(
    wrap: Callable[[Any], Any],
) -> None:
    value = _nested(codec.MAX_DEPTH, innermost=[], wrap=wrap)
    msgpack.packb(value)  # the encoder takes it; the decoder would not
    with pytest.raises(msgpack.StackError):
        msgpack.unpackb(msgpack.packb(value))
    assert f"more than {codec.MAX_DEPTH} deep" in _refusal(value)


def test_an_encoding_that_exhausts_pythons_recursion_is_a_type_error() -> None:
    class Bottomless(dict):  # type: ignore[type-arg]
        def items(self) -> Any:
            raise RecursionError("maximum recursion depth exceeded")

    assert "RecursionError" in _refusal(Bottomless(a=1))


# -- keys and set members -----------------------------------------------------------------

@pytest.mark.parametrize("key", [
    (1, 2), (), ("a", (b"b", None)), frozenset({1, 2}), frozenset(),
    datetime(2024, 5, 1, tzinfo=PARIS), date(2024, 5, 1), time_of_day(9, 30),
    timedelta(hours=1), Decimal("1.50"), UUID(int=7), (datetime(2024, 5, 1), Decimal("1")),
], ids=["tuple", "empty-tuple", "nested-tuple", "frozenset", "empty-frozenset", "datetime",
        "date", "time", "timedelta", "decimal", "uuid", "tuple-of-datetime-and-decimal"])
def test_a_dict_key_of_any_stored_hashable_type_reads_back_as_that_key(key: Any) -> None:
    value = [{"deep": {key: "found", "other": 1}}]
    read = codec.unpack(codec.pack(value, "args"))
    assert read[0]["deep"][key] == "found"
    assert _same(read, value)


class _HashableList(list):  # type: ignore[type-arg]
    def __hash__(self) -> int:  # type: ignore[override]
        return 0


@pytest.mark.parametrize(("value", "said"), [
    ({_HashableList([1]): "x"}, "the dict key [1] would be read back as a list, which "
                                "cannot be a key"),
    ([1, {"a": {_HashableList(): 2}}], "the dict key [] at [1]['a'] would be read back as a "
                                       "list"),
    ({"tags": {_HashableList([2])}}, "the set member [2] at ['tags'] would be read back as a "
                                     "list, which cannot be in a set"),
], ids=["key", "nested-key", "set-member"])
def test_a_key_or_set_member_that_would_read_back_unhashable_is_refused(
    value: Any, said: str
) -> None:
    assert said in _refusal(value)


# -- values that cannot be stored ----------------------------------------------------------

class _NoOffset(tzinfo):
    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        return None

    def dst(self, dt: datetime | None) -> timedelta | None:
        return None

    def tzname(self, dt: datetime | None) -> str | None:
        return None


class _Timestamp(datetime):
    """A datetime subclass that could hold more than a datetime (as pandas' does)."""


@pytest.mark.parametrize(("value", "expected"), [
    ([{"a": [1, {"x": 1j}]}], "msgpack cannot encode complex value 1j at [0]['a'][1]['x']"),
    ({"tags": {"a", 1j}}, "msgpack cannot encode complex value 1j as a set member at ['tags']"),
    ({(1, 1j): 0}, "msgpack cannot encode complex value 1j at {(1, 1j)}[1]"),
    (2**64, "msgpack cannot encode int value 18446744073709551616"),
    ("\ud800", "msgpack cannot encode str value '\\ud800'"),
    ([0] * 10 + [object()], "msgpack cannot encode object value <object object at"),
    ({"when": _Timestamp(2024, 1, 1)}, "msgpack cannot encode _Timestamp value "
                                       "_Timestamp(2024, 1, 1, 0, 0) at ['when'] (_Timestamp "
                                       "is a subclass of datetime, which is stored only as "
                                       "datetime itself: convert it to a plain datetime)"),
    ([datetime(2024, 1, 1, tzinfo=_NoOffset())], ") at [0] (its tzinfo "
                                                 "<tests.test_codec._NoOffset object at "),
    (time_of_day(9, tzinfo=_NoOffset()), "gives no UTC offset"),
], ids=["nested-complex", "complex-in-a-set", "complex-in-a-tuple-key", "too-big-int",
        "lone-surrogate", "object", "datetime-subclass", "tzinfo-without-offset",
        "time-tzinfo-without-offset"])
def test_a_part_that_cannot_be_stored_is_named_with_its_type_and_where_it_is(
    value: Any, expected: str
) -> None:
    assert expected in _refusal(value)


def test_an_unsupported_type_is_refused_saying_which_types_are_stored() -> None:
    message = _refusal({"x": object()})
    assert message.endswith("(simplepyq stores None, bool, int, float, str, bytes, list, dict, "
                            "datetime, date, time, timedelta, Decimal, UUID, tuple, set and "
                            "frozenset; not object)")


def test_a_huge_unencodable_value_is_named_in_a_short_message() -> None:
    message = _refusal({"big": "x" * 1_000_000, "bad": [*range(100_000), {1j}]})
    assert "complex value" in message and "['bad'][100000]" in message
    assert len(message) < 400


def test_pack_each_names_the_first_value_it_refuses_by_its_index() -> None:
    with pytest.raises(TypeError, match=r"^item 2 cannot be stored: .*contains itself"):
        codec.pack_each([1, {"a": (1, 2)}, _self_containing_list(), {1j}],
                        lambda index: f"item {index}")


# -- what is stored -------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "read_back"), [
    ({"to": "a@example.com", "n": 3}, {"to": "a@example.com", "n": 3}),
    ({1: "int key", b"k": "bytes key", 2.5: True, None: [], False: {}},
     {1: "int key", b"k": "bytes key", 2.5: True, None: [], False: {}}),
    (bytearray(b"\x00\x01"), b"\x00\x01"),
    (b"\xff" * 100_000, b"\xff" * 100_000),
], ids=["dict", "scalar-keys", "bytearray", "large-bytes"])
def test_msgpacks_own_types_are_stored_as_0_1_3_stored_them(value: Any, read_back: Any) -> None:
    blob = codec.pack(value, "args")
    assert blob == msgpack.packb(value, use_bin_type=True)  # the bytes of 0.1.3, unchanged
    assert codec.unpack(blob) == read_back


EXAMPLES = {
    "naive-datetime": datetime(2024, 5, 1, 12, 30, 15, 123456),
    "utc-datetime": datetime(2024, 5, 1, 12, 30, tzinfo=timezone.utc),
    "offset-datetime": datetime(2024, 5, 1, 12, 30, tzinfo=INDIA),
    "microsecond-offset": datetime(2024, 5, 1,
                                   tzinfo=timezone(-timedelta(seconds=3, microseconds=5))),
    "zoneinfo-datetime": datetime(2024, 5, 1, 12, 30, tzinfo=PARIS),
    "folded-datetime": datetime(2024, 10, 27, 2, 30, fold=1, tzinfo=PARIS),
    "folded-naive": datetime(2024, 10, 27, 2, 30, fold=1),
    "extreme-datetimes": (datetime.min, datetime.max),
    "date": date(2024, 2, 29),
    "extreme-dates": (date.min, date.max),
    "naive-time": time_of_day(23, 59, 59, 999999),
    "aware-time": time_of_day(9, 30, tzinfo=INDIA),
    "zoneinfo-time": time_of_day(9, 30, fold=1, tzinfo=PARIS),
    "timedelta": timedelta(days=3, seconds=7, microseconds=11),
    "negative-timedelta": timedelta(microseconds=-1),
    "extreme-timedeltas": (timedelta.min, timedelta.max),
    "decimal": Decimal("-1.50"),
    "decimal-specials": (Decimal("NaN"), Decimal("-sNaN12"), Decimal("Infinity"),
                         Decimal("-Infinity"), Decimal("-0"), Decimal("0E-7"),
                         Decimal("1.2345678901234567890123456789012345E+999999")),
    "uuid": UUID("12345678-1234-5678-1234-567812345678"),
    "tuple": (1, "two", (3.0, None), b"\x00"),
    "empty-tuple": (),
    "set": {1, "a", (2, 3), frozenset({4})},
    "empty-set": set(),
    "frozenset": frozenset({"x", (1, datetime(2024, 1, 1))}),
    "tuple-of-datetimes-in-a-dict-in-a-list": [{"when": (datetime(2024, 1, 1),
                                                          datetime(2024, 1, 2, tzinfo=PARIS))}],
    "list-in-a-tuple-in-a-set-in-a-dict": {"s": {(1, (2,))}, "t": ([1, [date(2024, 1, 1)]],)},
}


@pytest.mark.parametrize("value", EXAMPLES.values(), ids=EXAMPLES.keys())
def test_each_stored_type_reads_back_as_the_same_type_with_the_same_value(value: Any) -> None:
    assert _same(codec.unpack(codec.pack(value, "args")), value)


def test_a_naive_datetime_reads_back_naive_and_an_aware_one_aware_with_its_offset() -> None:
    naive, fixed, zoned = codec.unpack(codec.pack(
        [EXAMPLES["naive-datetime"], EXAMPLES["offset-datetime"], EXAMPLES["folded-datetime"]],
        "args"))
    assert naive.tzinfo is None
    assert fixed.tzinfo == INDIA and fixed.utcoffset() == timedelta(hours=5, minutes=30)
    assert zoned.tzinfo is PARIS and zoned.fold == 1
    assert zoned.utcoffset() == timedelta(hours=1)  # the second 02:30 of that night: winter


def test_a_decimal_keeps_its_digits_exponent_and_sign() -> None:
    for text in ["1.50", "-0", "-0.00", "1E+3", "NaN", "-sNaN7", "-Infinity"]:
        read = codec.unpack(codec.pack(Decimal(text), "args"))
        assert str(read) == text and read.is_signed() == text.startswith("-")


class _Color(IntEnum):
    RED = 1


_Point = namedtuple("_Point", "x y")


def test_a_subclass_of_msgpacks_types_or_of_a_collection_is_stored_as_its_base_type() -> None:
    value = [_Color.RED, _Point(1, 2), OrderedDict(a=1), {_Point(3, 4)}]
    read = codec.unpack(codec.pack(value, "args"))
    assert _same(read, [1, (1, 2), {"a": 1}, {(3, 4)}])


@pytest.mark.parametrize(("value", "payload"), [
    (datetime(2024, 5, 1, 12, 30, 15, 123456), [2024, 5, 1, 12, 30, 15, 123456, 0, None]),
    (datetime(2024, 5, 1, 12, 30, tzinfo=INDIA), [2024, 5, 1, 12, 30, 0, 0, 0, 19_800_000_000]),
    (datetime(2024, 10, 27, 2, 30, fold=1, tzinfo=PARIS),
     [2024, 10, 27, 2, 30, 0, 0, 1, "Europe/Paris"]),
    (date(2024, 5, 1), [2024, 5, 1]),
    (time_of_day(12, 30, 15, 5), [12, 30, 15, 5, 0, None]),
    (timedelta(days=-1, seconds=5, microseconds=7), [-1, 5, 7]),
], ids=["datetime", "offset-datetime", "zoneinfo-datetime", "date", "time", "timedelta"])
def test_a_scalar_is_stored_as_its_fixed_extension_code_and_fields(
    value: Any, payload: list[Any]
) -> None:
    code = next(kind.code for kind in codec.EXTENSIONS if kind.type is type(value))
    assert codec.pack(value, "args") == msgpack.packb(msgpack.ExtType(code, msgpack.packb(payload)))


def test_the_extension_codes_never_change() -> None:
    assert [(kind.code, kind.type, kind.since) for kind in codec.EXTENSIONS] == [
        (1, datetime, 1), (2, date, 1), (3, time_of_day, 1), (4, timedelta, 1), (5, Decimal, 1),
        (6, UUID, 1), (7, tuple, 1), (8, set, 1), (9, frozenset, 1)]
    assert codec.CODEC_VERSION == 1
    assert codec.pack(Decimal("-1.50"), "args") == msgpack.packb(msgpack.ExtType(5, b"-1.50"))
    assert codec.pack(UUID(int=1), "args") == msgpack.packb(msgpack.ExtType(6, UUID(int=1).bytes))
    marker = msgpack.ExtType(7, b"")
    assert codec.pack((1, "a"), "args") == msgpack.packb([marker, 1, "a"])
    assert codec.pack({(): frozenset({3})}, "args") == msgpack.packb(
        {(marker,): [msgpack.ExtType(9, b""), 3]})


def test_encoded_values_compose_into_arrays_and_maps_that_read_back_exactly() -> None:
    results = [codec.pack((1, datetime(2024, 1, 1, tzinfo=PARIS)), "result"), None,
               codec.pack({"ids": {UUID(int=2)}}, "result")]
    assert _same(codec.unpack(codec.array_of(results)),
                 [(1, datetime(2024, 1, 1, tzinfo=PARIS)), None, {"ids": {UUID(int=2)}}])
    assert _same(codec.unpack(codec.map_of({"id": 3}, {"result": results[0]})),
                 {"id": 3, "result": (1, datetime(2024, 1, 1, tzinfo=PARIS))})


# -- stored values this version cannot read ----------------------------------------------

@pytest.mark.parametrize("blob", [
    msgpack.packb(msgpack.ExtType(42, b"")),
    msgpack.packb([1, {"a": msgpack.ExtType(42, b"\x00")}]),
    msgpack.packb({msgpack.ExtType(42, b""): 1}),
    msgpack.packb([msgpack.ExtType(7, b""), msgpack.ExtType(42, b"")]),
], ids=["alone", "nested", "as-a-key", "in-a-tuple"])
def test_an_extension_code_this_version_does_not_know_is_refused_naming_it(blob: bytes) -> None:
    with pytest.raises(ValueError, match=r"^stored value uses msgpack extension type 42, which "
                                         r"this version of simplepyq \(codec version 1\) does "
                                         r"not know; upgrade simplepyq to read it$"):
        codec.unpack(blob)


@pytest.mark.parametrize("code", [0, 10, 127])
def test_every_code_outside_the_table_is_unknown(code: int) -> None:
    with pytest.raises(ValueError, match=f"extension type {code}, which"):
        codec.unpack(msgpack.packb(msgpack.ExtType(code, b"")))


def test_an_extension_code_msgpack_reserves_is_unknown_too() -> None:
    with pytest.raises(ValueError, match="extension type -5, which"):
        codec.unpack(b"\xd4\xfb\x00")  # fixext 1, type -5


def _ext(code: int, fields: Any) -> bytes:
    payload = fields if isinstance(fields, bytes) else msgpack.packb(fields)
    blob: bytes = msgpack.packb(msgpack.ExtType(code, payload))
    return blob


@pytest.mark.parametrize(("blob", "said"), [
    (_ext(1, b"\xc1"), "malformed datetime (msgpack extension type 1"),
    (_ext(1, [2024, 5, 1]), "malformed datetime"),
    (_ext(1, [2024, 13, 1, 0, 0, 0, 0, 0, None]), "month must be in 1..12"),
    (_ext(1, [2024, 5, 1, 0, 0, 0, 0, 0, 86_400_000_000]), "malformed datetime"),
    (_ext(1, [2024, 5, 1, 0, 0, 0, 0, 0, 1.5]), "malformed datetime"),
    (_ext(2, "2024-05-01"), "malformed date (msgpack extension type 2"),
    (_ext(3, [25, 0, 0, 0, 0, None]), "malformed time"),
    (_ext(4, [1.5, 0, 0]), "malformed timedelta"),
    (_ext(5, b"one"), "malformed Decimal (msgpack extension type 5, payload b'one')"),
    (_ext(5, "é".encode()), "malformed Decimal"),
    (_ext(6, b"\x00" * 15), "malformed UUID (msgpack extension type 6"),
    (msgpack.packb([msgpack.ExtType(7, b"x"), 1]), "malformed tuple marker"),
    (msgpack.packb([1, msgpack.ExtType(8, b"")]), "where no array begins"),
    (msgpack.packb({"a": msgpack.ExtType(9, b"")}), "where no array begins"),
    (msgpack.packb(msgpack.ExtType(7, b"")), "where no array begins"),
    (msgpack.packb([msgpack.ExtType(8, b""), [1]]), "not valid msgpack (TypeError: unhashable"),
], ids=["datetime-not-msgpack", "datetime-too-few-fields", "datetime-bad-month",
        "datetime-offset-of-a-day", "datetime-zone-not-a-zone", "date-not-an-array",
        "time-bad-hour", "timedelta-fractional-days", "decimal-not-a-number",
        "decimal-not-ascii", "uuid-too-short", "marker-with-payload", "marker-not-first",
        "marker-as-a-map-value", "marker-alone", "set-of-a-list"])
def test_a_malformed_extension_value_is_refused_saying_what_it_was(blob: bytes, said: str
                                                                   ) -> None:
    with pytest.raises(ValueError, match=r"^stored ") as refused:
        codec.unpack(blob)
    assert said in str(refused.value)


def test_a_time_zone_this_machine_does_not_have_is_refused_naming_it() -> None:
    blob = _ext(1, [2024, 5, 1, 0, 0, 0, 0, 0, "Mars/Olympus_Mons"])
    with pytest.raises(ValueError, match="time zone 'Mars/Olympus_Mons', which this machine's "
                                         "time zone database does not have"):
        codec.unpack(blob)


def test_bytes_that_are_not_msgpack_are_still_said_to_be_so() -> None:
    with pytest.raises(ValueError, match=r"^stored bytes are not valid msgpack \("):
        codec.unpack(b"\xc1")
    with pytest.raises(ValueError, match=r"^stored bytes are not valid msgpack \("):
        codec.unpack(msgpack.packb([msgpack.ExtType(7, b""), 1]) + b"\x00")


# -- properties ---------------------------------------------------------------------------

_ZONES = st.none() | st.timezones() | st.builds(
    timezone, st.timedeltas(-timedelta(hours=23, minutes=59), timedelta(hours=23, minutes=59)))
_EXTENDED_KEYS = (st.datetimes(timezones=_ZONES) | st.dates() | st.times(timezones=_ZONES)
                  | st.timedeltas() | st.decimals(allow_nan=False) | st.uuids())
_EXTENDED_SCALARS = _EXTENDED_KEYS | st.decimals()  # NaNs too: a signaling one is no key
_SCALARS = (st.none() | st.booleans() | st.integers(-(2**65), 2**65)
            | st.floats(allow_nan=False) | st.text(max_size=5) | st.binary(max_size=5))
_KEYS = st.recursive(_SCALARS | _EXTENDED_KEYS,
                     lambda keys: st.tuples(keys) | st.tuples(keys, keys)
                     | st.frozensets(keys, max_size=2), max_leaves=4)
_VALUES = st.recursive(
    _SCALARS | _EXTENDED_SCALARS | st.complex_numbers(max_magnitude=1)
    | st.frozensets(st.integers(), max_size=2),
    lambda values: (st.lists(values, max_size=4) | st.tuples(values, values)
                    | st.dictionaries(_KEYS, values, max_size=3) | st.sets(_KEYS, max_size=3)),
    max_leaves=12,
)
_PLAIN_VALUES = st.recursive(
    _SCALARS, lambda values: st.lists(values, max_size=4)
    | st.dictionaries(_SCALARS, values, max_size=3), max_leaves=12)


def _parts(value: Any) -> list[Any]:
    """``value`` and every part inside it (dict keys too)."""
    parts = [value]
    if isinstance(value, dict):
        for key, item in value.items():
            parts += _parts(key) + _parts(item)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            parts += _parts(item)
    return parts


def _storable(part: Any) -> bool:
    return not isinstance(part, complex) and not (
        isinstance(part, int) and not -(2**63) <= part < 2**64)


@settings(max_examples=400, deadline=None)
@given(_VALUES)
def test_pack_refuses_only_what_it_cannot_store_and_the_rest_reads_back_the_same(
    value: Any,
) -> None:
    if all(map(_storable, _parts(value))):
        assert _same(codec.unpack(codec.pack(value, "args")), value)
    else:
        with pytest.raises(TypeError, match="cannot be stored: "):
            codec.pack(value, "args")


@settings(max_examples=200, deadline=None)
@given(_PLAIN_VALUES)
def test_values_of_msgpacks_own_types_are_stored_as_msgpacks_own_bytes(value: Any) -> None:
    if all(map(_storable, _parts(value))):
        assert codec.pack(value, "args") == msgpack.packb(value, use_bin_type=True)


# -- through a real queue ---------------------------------------------------------------

ARGS = {
    "naive": datetime(2024, 5, 1, 12, 30, 15, 123456),
    "aware": datetime(2024, 5, 1, 12, 30, tzinfo=INDIA),
    "zoned": datetime(2024, 10, 27, 2, 30, fold=1, tzinfo=PARIS),
    "day": date(2024, 2, 29), "at": time_of_day(9, 30, tzinfo=timezone.utc),
    "wait": timedelta(days=1, microseconds=1), "price": Decimal("19.90"),
    "nan": Decimal("-NaN"), "id": UUID(int=12345),
    "pair": (1, [2, (3,)]), "tags": {"a", "b"}, "frozen": frozenset({(1, 2)}),
    (2024, "key"): {datetime(2024, 1, 1): [date(2024, 1, 1)]},
}


def test_a_task_gets_its_args_exactly_and_its_result_reads_back_exactly(
    queue: SimplePyQ,
) -> None:
    received: list[Any] = []

    def echo(args: Any) -> Any:
        received.append(args)
        return (args, {"again": args, UUID(int=1): frozenset({args["day"]})})

    queue.add_channel("c", echo)
    first = queue.enqueue("c", ARGS)
    second, = queue.enqueue_many("c", [{"day": ARGS["day"], "pair": ARGS["pair"]}])
    queue.run_until_complete(timeout=30)
    assert _same(received, [ARGS, {"day": ARGS["day"], "pair": ARGS["pair"]}])
    for task_id, args in [(first, ARGS), (second, received[1])]:
        task = queue.get_task(task_id)
        assert task is not None and task.status == "done", task
        assert _same(task.args, args)
        assert _same(task.result, (args, {"again": args, UUID(int=1): frozenset({args["day"]})}))


def test_a_task_whose_args_use_an_unknown_extension_type_fails_saying_to_upgrade(
    queue: SimplePyQ, store_path: str,
) -> None:
    queue.add_channel("c", lambda args: args)
    task_id = queue.enqueue("c", None)
    unknown = msgpack.packb([1, msgpack.ExtType(42, b"")])
    raw_sql(store_path, "UPDATE tasks SET args = ? WHERE id = ?", (unknown, task_id))
    queue.run_until_complete(timeout=30)
    task = queue.get_task(task_id)
    assert task is not None and task.status == "failed"
    assert task.args == unknown  # kept as the stored bytes
    assert "extension type 42" in (task.error or "") and "upgrade simplepyq" in (task.error or "")
