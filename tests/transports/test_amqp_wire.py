"""Basic properties as they go on the wire: our encoder gives pamqp's bytes (header tables aside,
which follow py-amqp, as the module says)."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from pamqp import base

from celeriac.utils.amqp_wire import WireProperties

CASES: list[dict[str, Any]] = [
    {},
    {"content_type": "application/json", "content_encoding": "utf-8", "delivery_mode": 2},
    {
        "content_type": "application/json",
        "content_encoding": "utf-8",
        "headers": {"task": "proj.add", "id": "abc", "retries": 0, "eta": None, "n": 2**40},
        "delivery_mode": 2,
        "priority": 9,
        "correlation_id": "abc",
        "reply_to": "d2c3-reply",
        "expiration": "60000",
        "message_id": "m-1",
        "timestamp": datetime.datetime(2026, 12, 2, 10, 0, tzinfo=datetime.UTC),
        "message_type": "task",
        "user_id": "guest",
        "app_id": "celeriac",
    },
    {"headers": {}, "priority": 0, "reply_to": ""},  # an empty string is left off, as pamqp does
]


@pytest.mark.parametrize("props", CASES)
def test_properties_marshal_as_pamqp_lays_them_out(props: dict[str, Any]) -> None:
    wire = WireProperties(keep_message_id=True, **props)
    # pamqp's generic encoder, with our header-table encoding (WireProperties.encode_property)
    assert wire.marshal() == base.BasicProperties.marshal(wire)


def test_message_id_is_left_off_unless_kept() -> None:
    dropped = WireProperties(message_id="aiormq-random", correlation_id="c")
    assert dropped.marshal() == WireProperties(keep_message_id=True, correlation_id="c").marshal()


def test_too_long_short_string_is_refused_by_name() -> None:
    with pytest.raises(TypeError, match="reply_to"):
        WireProperties(reply_to="x" * 256).marshal()


def test_frozen_properties_keep_their_bytes() -> None:
    wire = WireProperties(correlation_id="c", headers={"id": "c"})
    before = wire.marshal()
    wire.freeze()
    wire.message_id = "filled-in-by-the-client"  # left off the wire unless kept, frozen or not
    assert wire.marshal() == before


def test_header_tables_decode_to_what_was_encoded() -> None:
    """Every kind of header value a task message carries survives pamqp's decoder (floats as
    doubles, as py-amqp writes them)."""
    from pamqp import decode

    from celeriac.utils.amqp_wire import encode_table

    table = {
        "lang": "py",
        "unicode": "naïve ✓",
        "shadow": None,
        "retries": 0,
        "small": -2147483648,
        "big": 2**40,
        "yes": True,
        "no": False,
        "expires": 1765000000.123456,
        "timelimit": [None, 30],
        "stamps": {"a": ["x"], "nested": {"b": 1.5}},
        "raw": b"\x00\xff",
    }
    size, decoded = decode.field_table(encode_table(table))
    assert size == len(encode_table(table))
    assert decoded == table  # bytes that are not UTF-8 come back as bytes
    assert type(decoded["yes"]) is bool and type(decoded["retries"]) is int


def test_a_header_value_amqp_cannot_carry_is_named() -> None:
    from celeriac.utils.amqp_wire import encode_table

    with pytest.raises(TypeError, match=r"header 'when'.*object"):
        encode_table({"lang": "py", "when": object()})
    with pytest.raises(TypeError, match=r"header 'stamps': header 'deep'"):
        encode_table({"stamps": {"deep": {1, 2}}})
