"""Serializers: round trips, kombu's JSON type markers both ways, accept checks, clear errors."""

from __future__ import annotations

import base64
import collections
import dataclasses
import datetime as dt
import decimal
import enum
import json
import math
import pickle
import sys
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kombu import serialization as kombu_serialization
from kombu.utils import json as kombu_json

from celeriac.exceptions import ContentDisallowed, DecodeError, ImproperlyConfigured
from celeriac.protocol import serialization as ser
from celeriac.protocol.serialization import (
    EncodeError,
    SerializerNotInstalled,
    dumps,
    json_dumps,
    json_loads,
    loads,
    resolve_accept,
    serializer_for,
)

UTC = dt.UTC
AWARE = dt.datetime(2024, 2, 29, 13, 45, 1, 123456, tzinfo=UTC)
NAIVE = dt.datetime(2024, 2, 29, 13, 45, 1)
OFFSET = dt.datetime(2024, 2, 29, 13, 45, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30)))
UID = uuid.UUID("6f1c9f4e-2b1a-4c51-9f0e-8f7f3b2c1d0a")

# Everything kombu's JSON codec gives a marker, nested the way task arguments are.
RICH: dict[str, Any] = {
    "aware": AWARE,
    "naive": NAIVE,
    "offset": OFFSET,
    "date": dt.date(2023, 12, 31),
    "time": dt.time(23, 59, 58, 5),
    "tztime": dt.time(1, 2, 3, tzinfo=UTC),
    "decimal": decimal.Decimal("12345.678900"),
    "uuid": UID,
    "text_bytes": b"hello \xc3\xa9",
    "binary_bytes": b"\xff\x00\xfe",
    "nested": [{"when": [AWARE, {"id": UID}]}, [decimal.Decimal("-0.1")]],
    "plain": {"s": "é ☃", "i": -7, "f": 1.5, "b": True, "n": None, "l": [1, [2, [3]]]},
}


class WithJson:
    def __init__(self, value: Any) -> None:
        self.value = value

    def __json__(self) -> Any:
        return {"wrapped": self.value}


# -- JSON wire form --------------------------------------------------------------------------


def test_json_dumps_returns_kombus_content_type_and_encoding() -> None:
    content_type, encoding, data = dumps({"a": 1})
    assert (content_type, encoding) == ("application/json", "utf-8")
    assert isinstance(data, bytes)
    assert json.loads(data) == {"a": 1}


@pytest.mark.parametrize(
    ("value", "marker"),
    [
        (AWARE, {"__type__": "datetime", "__value__": "2024-02-29T13:45:01.123456+00:00"}),
        (NAIVE, {"__type__": "datetime", "__value__": "2024-02-29T13:45:01"}),
        (dt.date(2023, 1, 2), {"__type__": "date", "__value__": "2023-01-02"}),
        (dt.time(4, 5, 6), {"__type__": "time", "__value__": "04:05:06"}),
        (decimal.Decimal("1.10"), {"__type__": "decimal", "__value__": "1.10"}),
        (UID, {"__type__": "uuid", "__value__": {"hex": UID.hex}}),
        (b"abc", {"__type__": "bytes", "__value__": "abc"}),
        (b"\xff\xfe", {"__type__": "base64", "__value__": "//4="}),
    ],
)
def test_json_writes_the_same_markers_as_kombu(value: Any, marker: dict[str, Any]) -> None:
    ours = json.loads(json_dumps([value]))
    theirs = json.loads(kombu_json.dumps([value]))
    assert ours == theirs == [marker]


def test_json_tuples_become_lists() -> None:
    assert json.loads(json_dumps({"t": (1, (2, 3))})) == {"t": [1, [2, 3]]}
    point = collections.namedtuple("point", "x y")
    assert json.loads(json_dumps([point(1, UID)])) == [
        [1, {"__type__": "uuid", "__value__": {"hex": UID.hex}}]
    ]


def test_json_round_trip_of_every_marker() -> None:
    assert json_loads(json_dumps(RICH)) == RICH


def test_json_non_string_keys_are_written_as_kombu_writes_them() -> None:
    value = {1: "a", 2.5: "b", None: "c", False: "d"}
    assert json.loads(json_dumps(value)) == json.loads(kombu_json.dumps(value))


def test_json_objects_with_dunder_json_are_encoded_through_it() -> None:
    value = [WithJson(AWARE), WithJson([UID])]
    assert json.loads(json_dumps(value)) == json.loads(kombu_json.dumps(value))
    assert json_loads(json_dumps(value)) == [{"wrapped": AWARE}, {"wrapped": [UID]}]


def test_json_enums_are_written_as_their_values() -> None:
    class Colour(enum.Enum):
        RED = "red"

    class Level(enum.IntEnum):
        HIGH = 3

    assert json_loads(json_dumps([Colour.RED, Level.HIGH])) == ["red", 3]


@pytest.mark.parametrize("big", [2**64, 2**80, -(2**70), 10**40, 18446744073709551615])
def test_json_integers_beyond_64_bits_survive(big: int) -> None:
    data = json_dumps({"n": big, "when": AWARE})
    assert json_loads(data) == {"n": big, "when": AWARE}
    assert kombu_json.loads(data) == {"n": big, "when": AWARE}
    assert json_loads(kombu_json.dumps([big, UID])) == [big, UID]


def test_json_long_digit_strings_and_floats_still_decode() -> None:
    value = {"s": "12345678901234567890123", "f": 0.1234567890123456789}
    assert json_loads(json_dumps(value)) == value


@pytest.mark.parametrize("special", [math.inf, -math.inf])
def test_json_infinities_are_written_as_kombu_does(special: float) -> None:
    data = json_dumps([special, UID])
    assert data == kombu_json.dumps([special, UID]).replace(" ", "").encode()
    assert json_loads(data) == [special, UID]


def test_json_nan_survives_both_ways() -> None:
    (value,) = json_loads(json_dumps([math.nan]))
    assert math.isnan(value)
    (value,) = json_loads(kombu_json.dumps([math.nan]))
    assert math.isnan(value)


def test_json_lone_surrogates_and_deep_nesting_fall_back_cleanly() -> None:
    assert json_loads(json_dumps(["\ud800"])) == ["\ud800"]
    deep: list[Any] = [AWARE]
    for _ in range(300):
        deep = [deep]
    assert json_loads(json_dumps(deep)) == deep


def test_json_decodes_markers_even_when_escaped() -> None:
    data = b'{"\\u005f_type__": "decimal", "__value__": "1.5"}'
    assert json_loads(data) == decimal.Decimal("1.5")


def test_json_uuid_marker_with_plain_string_value_is_read() -> None:
    data = json.dumps({"__type__": "uuid", "__value__": str(UID)})
    assert json_loads(data) == UID


def test_json_dicts_that_only_look_like_markers_are_left_alone() -> None:
    value = {"__type__": "datetime", "__value__": "x", "extra": 1}
    assert json_loads(json_dumps(value)) == value


def test_json_loads_accepts_str_bytearray_and_memoryview() -> None:
    data = json_dumps(RICH)
    assert json_loads(data.decode()) == RICH
    assert json_loads(bytearray(data)) == RICH
    assert json_loads(memoryview(data)) == RICH


def test_json_custom_type_registration() -> None:
    class Money:
        def __init__(self, cents: int) -> None:
            self.cents = cents

        def __eq__(self, other: object) -> bool:
            return isinstance(other, Money) and other.cents == self.cents

        __hash__ = None  # type: ignore[assignment]

    ser.register_json_type(Money, "test-money", lambda m: m.cents, Money)
    data = json_dumps({"price": Money(250)})
    assert json.loads(data) == {"price": {"__type__": "test-money", "__value__": 250}}
    assert json_loads(data) == {"price": Money(250)}


# -- interoperability with kombu -------------------------------------------------------------


def test_kombu_json_to_ours_and_back() -> None:
    from_kombu = kombu_json.dumps(RICH)
    assert json_loads(from_kombu) == RICH
    assert kombu_json.loads(json_dumps(RICH)) == RICH


def test_kombu_registry_reads_our_bodies_and_we_read_its_bodies() -> None:
    body = [[AWARE, UID], {"d": decimal.Decimal("3.14"), "b": b"\x00\xff"}, {"chain": None}]
    expected = [[AWARE, UID], {"d": decimal.Decimal("3.14"), "b": b"\x00\xff"}, {"chain": None}]
    ct, enc, data = dumps(body)
    assert kombu_serialization.loads(data, ct, enc, accept={ct}) == expected
    ct, enc, data = kombu_serialization.dumps(body, serializer="json")
    assert loads(data, ct, enc, accept=["json"]) == expected


@pytest.mark.parametrize("name", ["msgpack", "pickle", "yaml"])
def test_other_serializers_match_kombus_names_and_read_its_data(name: str) -> None:
    body = [[1, "two", 3.5], {"k": [None, True]}, {"callbacks": None}]
    theirs = kombu_serialization.dumps(body, serializer=name)
    ours = dumps(body, name)
    assert (ours[0], ours[1]) == (theirs[0], theirs[1])
    assert loads(theirs[2], theirs[0], theirs[1]) == body
    assert kombu_serialization.loads(ours[2], ours[0], ours[1], accept={ours[0]}) == body


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.datetimes(timezones=st.none() | st.just(UTC))
    | st.dates()
    | st.uuids()
    | st.decimals(allow_nan=False, allow_infinity=False)
    | st.binary(max_size=16)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=80, deadline=None)
@given(json_values)
def test_json_round_trips_agree_with_kombu(value: Any) -> None:
    assert json_loads(json_dumps(value)) == value
    assert kombu_json.loads(json_dumps(value)) == value
    assert json_loads(kombu_json.dumps(value)) == value


# -- other serializers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content_type", "encoding"),
    [
        ("json", "application/json", "utf-8"),
        ("msgpack", "application/x-msgpack", "binary"),
        ("pickle", "application/x-python-serialize", "binary"),
        ("yaml", "application/x-yaml", "utf-8"),
    ],
)
def test_builtin_serializers_round_trip(name: str, content_type: str, encoding: str) -> None:
    body = [[1, 2.5, "x", None, True], {"k": {"nested": ["é"]}}, {"chain": None}]
    ct, enc, data = dumps(body, name)
    assert (ct, enc) == (content_type, encoding)
    assert loads(data, ct, enc) == body
    assert serializer_for(name) is serializer_for(content_type)


def test_msgpack_keeps_bytes_native_and_marks_dates() -> None:
    import msgpack

    value = {"b": b"\xff", "when": AWARE, "id": UID, "n": decimal.Decimal("2.5"), "t": (1, 2)}
    _, _, data = dumps(value, "msgpack")
    raw = msgpack.unpackb(data, raw=False)
    assert raw["b"] == b"\xff"
    assert raw["when"] == {"__type__": "datetime", "__value__": AWARE.isoformat()}
    assert loads(data, "application/x-msgpack", "binary") == dict(value, t=[1, 2])


def test_msgpack_integer_keys_are_read() -> None:
    _, _, data = dumps({1: "a"}, "msgpack")
    assert loads(data, "application/x-msgpack", "binary") == {1: "a"}


def test_pickle_round_trips_python_objects() -> None:
    value = {"set": {1, 2}, "when": AWARE, "exc": ValueError("x")}
    ct, enc, data = dumps(value, "pickle")
    out = loads(data, ct, enc)
    assert out["set"] == {1, 2} and out["when"] == AWARE
    assert isinstance(out["exc"], ValueError)


def test_yaml_missing_gives_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "yaml", None)
    with pytest.raises(SerializerNotInstalled, match="PyYAML"):
        dumps([1], "yaml")
    with pytest.raises(SerializerNotInstalled, match="PyYAML"):
        loads(b"- 1\n", "application/x-yaml")


def test_yaml_refuses_python_object_tags() -> None:
    data = b"!!python/object/apply:os.system ['echo unsafe']\n"
    with pytest.raises(DecodeError, match="application/x-yaml"):
        loads(data, "application/x-yaml")


# -- encode errors ---------------------------------------------------------------------------


def test_sets_are_refused_with_a_hint() -> None:
    with pytest.raises(EncodeError, match=r"set .*\{1, 2\}.*list"):
        dumps({"s": {1, 2}})


def test_unserializable_values_name_their_type() -> None:
    class Opaque:
        pass

    with pytest.raises(EncodeError, match=r"Opaque.*expected str, int"):
        json_dumps([Opaque()])
    with pytest.raises(EncodeError, match="Opaque"):
        dumps([Opaque()], "msgpack")


def test_dataclasses_without_dunder_json_are_refused_with_a_hint() -> None:
    @dataclasses.dataclass
    class Point:
        x: int

    with pytest.raises(EncodeError, match="dataclass"):
        json_dumps(Point(1))


def test_encode_error_is_a_celery_error() -> None:
    from celeriac.exceptions import CeleryError

    assert issubclass(EncodeError, ser.SerializationError)
    assert issubclass(ser.SerializationError, CeleryError)


def test_unknown_serializer_names_it_and_the_known_ones() -> None:
    with pytest.raises(SerializerNotInstalled, match=r"'nope'.*json \(application/json\)"):
        dumps([1], "nope")
    assert issubclass(SerializerNotInstalled, ImproperlyConfigured)


def test_integers_too_big_for_msgpack_are_an_encode_error() -> None:
    with pytest.raises(EncodeError, match="msgpack"):
        dumps([2**80], "msgpack")


# -- decode errors ---------------------------------------------------------------------------


def test_bad_json_raises_decode_error_naming_type_and_reason() -> None:
    with pytest.raises(DecodeError, match=r"application/json.*\{not json"):
        loads(b"{not json", "application/json")


def test_json_invalid_utf8_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="application/json"):
        loads(b'["\xff"]', "application/json")


def test_unknown_json_marker_is_a_decode_error_naming_it() -> None:
    with pytest.raises(DecodeError, match="'frobnicator'"):
        json_loads(b'{"__type__": "frobnicator", "__value__": 1}')


def test_bad_marker_value_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="application/json"):
        loads(b'{"__type__": "datetime", "__value__": "yesterday"}', "application/json")


def test_bad_pickle_and_msgpack_raise_decode_error() -> None:
    with pytest.raises(DecodeError, match="application/x-python-serialize"):
        loads(b"not a pickle", "application/x-python-serialize", "binary")
    with pytest.raises(DecodeError, match="application/x-msgpack"):
        loads(b"\xc1", "application/x-msgpack", "binary")


# -- accept ----------------------------------------------------------------------------------


class _Detonator:
    """Unpickling this calls a function that records it ran: proof that nothing was decoded."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_record_unpickle, ())


_unpickled: list[bool] = []


def _record_unpickle() -> None:
    _unpickled.append(True)


def test_disallowed_content_is_refused_before_decoding() -> None:
    payload = pickle.dumps(_Detonator())
    _unpickled.clear()
    with pytest.raises(ContentDisallowed) as info:
        loads(payload, "application/x-python-serialize", "binary", accept=["json"])
    assert _unpickled == []
    assert "application/x-python-serialize" in str(info.value)
    assert "json" in str(info.value)
    # the control: with pickle accepted it is decoded, and the side effect happens
    loads(payload, "application/x-python-serialize", "binary", accept=["pickle"])
    assert _unpickled == [True]


@pytest.mark.parametrize(
    "accept",
    [["json"], ["application/json"], {"json", "msgpack"}, frozenset({"application/json"})],
)
def test_accept_takes_names_or_mime_types(accept: Any) -> None:
    ct, enc, data = dumps([1])
    assert loads(data, ct, enc, accept=accept) == [1]


def test_empty_accept_refuses_everything_but_trusted_raw_content() -> None:
    ct, enc, data = dumps([1])
    with pytest.raises(ContentDisallowed, match="nothing"):
        loads(data, ct, enc, accept=[])
    assert loads(b"raw", "application/data", "binary", accept=[]) == b"raw"


def test_none_accepts_everything() -> None:
    ct, enc, data = dumps({1, 2}, "pickle")
    assert loads(data, ct, enc, accept=None) == {1, 2}


def test_unregistered_content_type_is_returned_as_text_or_bytes() -> None:
    assert loads(b"caf\xc3\xa9", "text/plain", "utf-8") == "café"
    assert loads(b"\xff", "application/octet-stream", "binary") == b"\xff"
    assert loads(b"x", "", "binary") == b"x"


def test_empty_body_is_returned_as_is() -> None:
    assert loads(b"", "application/json") == b""


def test_resolve_accept_maps_names_and_keeps_mime_types() -> None:
    assert resolve_accept(["json", "pickle", "application/x-custom"]) == frozenset(
        {"application/json", "application/x-python-serialize", "application/x-custom"}
    )
    assert resolve_accept("json") == frozenset({"application/json"})


def test_resolve_accept_names_an_unknown_serializer() -> None:
    with pytest.raises(ImproperlyConfigured, match="'jsn'"):
        resolve_accept(["json", "jsn"])


# -- custom serializers ----------------------------------------------------------------------


def test_register_a_custom_serializer() -> None:
    def encode(value: Any) -> str:
        return base64.b64encode(repr(value).encode()).decode()

    def decode(data: bytes) -> Any:
        return base64.b64decode(data).decode()

    codec = ser.register("b64repr", encode, decode, "application/x-b64repr", "utf-8")
    try:
        assert codec.name == "b64repr"
        ct, enc, data = dumps([1], "b64repr")
        assert (ct, enc, data) == ("application/x-b64repr", "utf-8", b"WzFd")
        assert loads(data, ct, enc, accept=["b64repr"]) == "[1]"
        assert resolve_accept(["b64repr"]) == frozenset({"application/x-b64repr"})
    finally:
        ser.unregister("b64repr")
    with pytest.raises(SerializerNotInstalled):
        serializer_for("b64repr")


def test_register_rejects_bad_names() -> None:
    with pytest.raises(ValueError, match="MIME type"):
        ser.register("x", None, None, "not-a-mime")
    with pytest.raises(ValueError, match="serializer name"):
        ser.register("a/b", None, None, "application/x-a")


def test_serializer_is_a_frozen_record() -> None:
    codec = serializer_for("json")
    assert (codec.name, codec.content_type, codec.content_encoding) == (
        "json",
        "application/json",
        "utf-8",
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        codec.name = "other"  # type: ignore[misc]


def test_json_loads_of_text_with_lone_surrogates_and_big_ints() -> None:
    assert json_loads('["\ud800", 123456789012345678901234]') == [
        "\ud800",
        123456789012345678901234,
    ]
    assert json_loads(b"[123456789012345678901234]") == [123456789012345678901234]
