"""The codec: a value is stored only if it reads back, and a refusal says what and where.

The encoder is msgpack's; what it adds is the promise that ``unpack`` reads back
whatever ``pack`` accepts (so that a task never fails later with "args could not
be decoded"), and that every refusal is a ``TypeError`` that comes fast, even for
a value that contains itself or nests without end.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simplepyq import codec

CPU_LIMIT = 2.0
"""Seconds of CPU a refusal may take: about a hundred times what it takes."""


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


# -- values that contain themselves or nest without end ---------------------------------

@pytest.mark.parametrize(("make", "where"), [
    (_self_containing_list, "at [1]"),
    (_self_containing_dict, "at ['self']"),
    (_deep_inside_a_cycle, "at ['x'][1]['y'][0]"),
], ids=["list", "dict", "through-several-levels"])
def test_a_value_that_contains_itself_is_refused_fast_saying_where(
    make: Callable[[], Any], where: str
) -> None:
    message = _refusal(make())
    assert f"it contains itself {where}" in message


@pytest.mark.parametrize("wrap", [lambda x: [x], lambda x: {"k": x}, lambda x: (x,)],
                         ids=["lists", "dicts", "tuples"])
def test_a_value_nested_far_deeper_than_msgpack_reads_is_refused_fast(
    wrap: Callable[[Any], Any],
) -> None:
    message = _refusal(_nested(100_000, wrap=wrap))
    assert f"more than {codec.MAX_DEPTH} deep" in message
    assert len(message) < 300  # the path is shortened, not 100,000 steps long


def test_values_at_the_deepest_nesting_the_decoder_reads_are_stored_and_read_back() -> None:
    for value in (_nested(codec.MAX_DEPTH), _nested(codec.MAX_DEPTH - 1, innermost=[]),
                  _nested(codec.MAX_DEPTH, wrap=lambda x: {"k": x})):
        blob = codec.pack(value, "args")
        assert msgpack.packb(codec.unpack(blob)) == blob  # (== on the values would recurse)


@pytest.mark.parametrize("wrap", [lambda x: [x], lambda x: {"k": x}], ids=["lists", "dicts"])
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


# -- values that encode but would not read back --------------------------------------------

@pytest.mark.parametrize(("value", "key", "where"), [
    ({(1, 2): "x"}, "(1, 2)", ""),
    ([1, {"a": {(3,): 2}}], "(3,)", " at [1]['a']"),
    ({(): 1}, "()", ""),
], ids=["top", "nested", "empty-tuple"])
def test_a_tuple_as_dict_key_is_refused_as_it_would_read_back_as_a_list(
    value: Any, key: str, where: str
) -> None:
    msgpack.packb(value)  # the encoder takes it; the reader could not rebuild the dict
    message = _refusal(value)
    assert f"the dict key {key}{where} would be read back as a list" in message


# -- values msgpack refuses ---------------------------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    ({1, 2}, "msgpack cannot encode set value {1, 2}"),
    ([{"a": [1, {"x": 1j}]}], "msgpack cannot encode complex value 1j at [0]['a'][1]['x']"),
    ({frozenset(): 1}, "msgpack cannot encode frozenset value frozenset() as a dict key"),
    (2**64, "msgpack cannot encode int value 18446744073709551616"),
    ("\ud800", "msgpack cannot encode str value '\\ud800'"),
    ([0] * 10 + [object()], "msgpack cannot encode object value <object object at"),
], ids=["set", "nested-complex", "frozenset-key", "too-big-int", "lone-surrogate", "object"])
def test_a_part_msgpack_cannot_encode_is_named_with_its_type_and_where_it_is(
    value: Any, expected: str
) -> None:
    assert expected in _refusal(value)


def test_a_huge_unencodable_value_is_named_in_a_short_message() -> None:
    message = _refusal({"big": "x" * 1_000_000, "bad": {n for n in range(100_000)}})
    assert "set value" in message and "['bad']" in message
    assert len(message) < 400


def test_pack_each_names_the_first_value_it_refuses_by_its_index() -> None:
    with pytest.raises(TypeError, match=r"^item 2 cannot be stored: .*contains itself"):
        codec.pack_each([1, {"a": (1, 2)}, _self_containing_list(), {1, 2}],
                        lambda index: f"item {index}")


# -- what is stored -------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "read_back"), [
    ({"to": "a@example.com", "n": 3}, {"to": "a@example.com", "n": 3}),
    ((1, "two", (3.0, None)), [1, "two", [3.0, None]]),
    ((b"\x00\xff", "text"), [b"\x00\xff", "text"]),
    ({1: "int key", b"k": "bytes key", 2.5: True, None: [], False: {}},
     {1: "int key", b"k": "bytes key", 2.5: True, None: [], False: {}}),
    ({msgpack.ExtType(5, b"x"): 1}, {msgpack.ExtType(5, b"x"): 1}),
    (bytearray(b"\x00\x01"), b"\x00\x01"),
    (b"\xff" * 100_000, b"\xff" * 100_000),
], ids=["dict", "tuples", "bytes-in-a-tuple", "scalar-keys", "ext-key", "bytearray", "large-bytes"])
def test_a_stored_value_reads_back_as_msgpack_gives_it(value: Any, read_back: Any) -> None:
    blob = codec.pack(value, "args")
    assert blob == msgpack.packb(value, use_bin_type=True)  # the bytes of 0.1.3, unchanged
    assert codec.unpack(blob) == read_back


_SCALARS = (st.none() | st.booleans() | st.integers(-(2**65), 2**65)
            | st.floats(allow_nan=False) | st.text(max_size=5) | st.binary(max_size=5))
_KEYS = st.recursive(_SCALARS, lambda keys: st.tuples(keys) | st.tuples(keys, keys),
                     max_leaves=4)
_VALUES = st.recursive(
    _SCALARS | st.complex_numbers(max_magnitude=1) | st.frozensets(st.integers(), max_size=2),
    lambda values: (st.lists(values, max_size=4) | st.tuples(values, values)
                    | st.dictionaries(_KEYS, values, max_size=3)),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(_VALUES)
def test_pack_accepts_exactly_what_reads_back_and_stores_msgpacks_own_bytes(value: Any) -> None:
    try:
        expected = msgpack.packb(value, use_bin_type=True)
        codec.unpack(expected)
    except (TypeError, ValueError, OverflowError):
        expected = None
    if expected is None:
        with pytest.raises(TypeError, match="cannot be stored: "):
            codec.pack(value, "args")
    else:
        assert codec.pack(value, "args") == expected
