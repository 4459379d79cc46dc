"""Messages as AMQP 0-9-1 content: basic properties, a header table, a raw body.

Celery (through py-amqp) writes floats in header tables as doubles (``d``), strings as long strings
(``S``) and ``None`` as void (``V``). pamqp writes floats as single precision (``f``), which would
corrupt times such as a pidbox request's ``expires``, so header tables are encoded here, the way
py-amqp does, and only the rest of the properties are left to pamqp.
"""

from __future__ import annotations

import datetime
import struct
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from pamqp import commands as spec
from pamqp import encode

from celeriac.exceptions import TransportError
from celeriac.protocol.message import Message

#: Message properties that exist in AMQP; anything else is dropped on the way out, as py-amqp does.
AMQP_PROPERTIES = (
    "delivery_mode",
    "priority",
    "correlation_id",
    "reply_to",
    "expiration",
    "message_id",
    "timestamp",
    "type",
    "user_id",
    "app_id",
)

_DOUBLE = struct.Struct(">d")
_LONG = struct.Struct(">I")


def _int(value: int) -> bytes:
    # py-amqp's choice: a 32-bit int when it fits, else a signed 64-bit one.
    if -2147483648 <= value <= 2147483647:
        return b"I" + struct.pack(">i", value)
    if -9223372036854775808 <= value <= 9223372036854775807:
        return b"l" + struct.pack(">q", value)
    raise TypeError(f"integer {value} does not fit in 64 bits")


def _value(value: Any) -> bytes:
    if value is None:
        return b"V"
    if isinstance(value, bool):
        return b"t" + (b"\x01" if value else b"\x00")
    if isinstance(value, int):
        return _int(value)
    if isinstance(value, float):
        return b"d" + _DOUBLE.pack(value)
    if isinstance(value, str):
        raw = value.encode("utf-8", "surrogatepass")
        return b"S" + _LONG.pack(len(raw)) + raw
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        return b"S" + _LONG.pack(len(raw)) + raw
    if isinstance(value, Mapping):
        return b"F" + encode_table(value)
    if isinstance(value, list | tuple):
        items = b"".join(_value(v) for v in value)
        return b"A" + _LONG.pack(len(items)) + items
    if isinstance(value, Decimal):
        return b"D" + encode.decimal(value)
    if isinstance(value, datetime.datetime):
        return b"T" + encode.timestamp(value)
    raise TypeError(f"{type(value).__name__} value {value!r} cannot go in an AMQP header table")


def encode_table(table: Mapping[str, Any]) -> bytes:
    """An AMQP field table, py-amqp style (floats as doubles)."""
    parts = []
    for key, value in table.items():
        name = str(key).encode("utf-8")
        if len(name) > 255:
            raise TypeError(f"header name {key!r} is longer than 255 bytes")
        try:
            parts.append(bytes((len(name),)) + name + _value(value))
        except TypeError as exc:
            raise TypeError(f"header {key!r}: {exc}") from exc
    body = b"".join(parts)
    return _LONG.pack(len(body)) + body


class WireProperties(spec.Basic.Properties):
    """Basic properties whose header table is encoded by :func:`encode_table`.

    aiormq fills in a random ``message_id`` when none is set; Celery sends none, so unless the
    message had its own, that id is left off the wire.
    """

    def __init__(self, *, keep_message_id: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.__dict__["_keep_message_id"] = keep_message_id

    def encode_property(self, name: str, value: Any) -> bytes:
        if name == "headers":
            return encode_table(value)
        return super().encode_property(name, value)

    def marshal(self) -> bytes:
        if not self.__dict__.get("_keep_message_id", True):
            saved, self.message_id = self.message_id, None
            try:
                return super().marshal()
            finally:
                self.message_id = saved
        return super().marshal()


def to_properties(message: Message, default_delivery_mode: int = 2) -> WireProperties:
    """The AMQP properties for *message* (``expiration`` always as a string of milliseconds)."""
    props = message.properties
    kwargs: dict[str, Any] = {
        "content_type": message.content_type or None,
        "content_encoding": message.content_encoding or None,
        "headers": message.headers,
        "delivery_mode": int(props.get("delivery_mode") or default_delivery_mode),
    }
    priority = props.get("priority")
    if priority is not None:
        kwargs["priority"] = max(0, min(int(priority), 255))
    for key in ("correlation_id", "reply_to", "message_id", "user_id", "app_id"):
        value = props.get(key)
        if value is not None and value != "":
            kwargs[key] = str(value)
    if props.get("type"):
        kwargs["message_type"] = str(props["type"])
    expiration = props.get("expiration")
    if expiration is not None and expiration != "":
        kwargs["expiration"] = (
            expiration if isinstance(expiration, str) else str(int(float(expiration)))
        )
    timestamp = props.get("timestamp")
    if isinstance(timestamp, int | float):
        kwargs["timestamp"] = datetime.datetime.fromtimestamp(timestamp, datetime.UTC)
    elif isinstance(timestamp, datetime.datetime):
        kwargs["timestamp"] = timestamp
    try:
        wire = WireProperties(keep_message_id="message_id" in kwargs, **kwargs)
        wire.marshal()  # fail here, naming the header, not deep inside the client
    except (TypeError, ValueError) as exc:
        raise TransportError(f"message cannot be sent over AMQP: {exc}") from exc
    return wire


def _plain(value: Any) -> Any:
    """Header values as JSON-friendly Python (bytearray → bytes, Decimal → float)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, bytearray):
        return bytes(value)
    if isinstance(value, Decimal):
        return float(value)
    return value


def from_properties(body: bytes, props: spec.Basic.Properties) -> Message:
    """The Message carried by an AMQP delivery."""
    properties: dict[str, Any] = {}
    for key in (
        "delivery_mode",
        "priority",
        "correlation_id",
        "reply_to",
        "expiration",
        "message_id",
        "user_id",
        "app_id",
    ):
        value = getattr(props, key, None)
        if value is not None:
            properties[key] = value
    if props.message_type is not None:
        properties["type"] = props.message_type
    if props.timestamp is not None:
        properties["timestamp"] = props.timestamp.timestamp()
    headers = props.headers
    return Message(
        body=bytes(body),
        headers=_plain(headers) if headers else {},
        properties=properties,
        content_type=props.content_type or "application/data",
        content_encoding=props.content_encoding or "binary",
    )


# -- decoding deliveries (the consume hot path) ---------------------------------------------------
# The same values pamqp's decoder gives (long strings as str, byte arrays as bytes after
# ``_plain``, timestamps as aware UTC datetimes), without its per-value slicing and dispatch.

_U8 = struct.Struct(">B")
_I8 = struct.Struct(">b")
_I16 = struct.Struct(">h")
_U16 = struct.Struct(">H")
_I32 = struct.Struct(">i")
_U32 = struct.Struct(">I")
_I64 = struct.Struct(">q")
_U64 = struct.Struct(">Q")
_F32 = struct.Struct(">f")
_F64 = struct.Struct(">d")
_DELIVER = struct.Struct(">QB")
_CONTENT_HEADER = struct.Struct(">HHQH")


def _timestamp(raw: int) -> datetime.datetime:
    seconds = raw / 1000.0 if raw > 0xFFFFFFFF else raw  # pamqp: beyond 2106 means milliseconds
    return datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)


#: Fixed-size field types: struct and size (``l`` and ``L`` both signed, as pamqp reads them).
_FIXED: dict[int, tuple[struct.Struct, int]] = {
    ord("I"): (_I32, 4),
    ord("i"): (_U32, 4),
    ord("l"): (_I64, 8),
    ord("L"): (_I64, 8),
    ord("d"): (_F64, 8),
    ord("f"): (_F32, 4),
    ord("b"): (_I8, 1),
    ord("B"): (_U8, 1),
    ord("s"): (_I16, 2),
    ord("u"): (_U16, 2),
}


def _long_str(buf: bytes, pos: int) -> tuple[Any, int]:
    n = _U32.unpack_from(buf, pos)[0]
    pos += 4
    raw = buf[pos : pos + n]
    try:
        return raw.decode("utf-8"), pos + n
    except UnicodeDecodeError:
        return raw, pos + n


def _array(buf: bytes, pos: int) -> tuple[Any, int]:
    end = pos + 4 + _U32.unpack_from(buf, pos)[0]
    pos += 4
    items = []
    while pos < end:
        value, pos = _field(buf, pos)
        items.append(value)
    if pos != end:
        raise ValueError("AMQP field array overruns its length")
    return items, end


def _table(buf: bytes, pos: int) -> tuple[Any, int]:
    end = pos + 4 + _U32.unpack_from(buf, pos)[0]
    return decode_table(buf, pos + 4, end), end


def _decimal(buf: bytes, pos: int) -> tuple[Any, int]:
    places, raw = buf[pos], _I32.unpack_from(buf, pos + 1)[0]
    return float(Decimal(raw) * (Decimal(10) ** -places)), pos + 5  # as _plain gives it


def _byte_array(buf: bytes, pos: int) -> tuple[Any, int]:
    n = _U32.unpack_from(buf, pos)[0]
    return bytes(buf[pos + 4 : pos + 4 + n]), pos + 4 + n


_VARIABLE: dict[int, Callable[[bytes, int], tuple[Any, int]]] = {
    ord("S"): _long_str,
    ord("A"): _array,
    ord("F"): _table,
    ord("D"): _decimal,
    ord("x"): _byte_array,
    ord("T"): lambda buf, pos: (_timestamp(_U64.unpack_from(buf, pos)[0]), pos + 8),
    ord("t"): lambda buf, pos: (buf[pos] != 0, pos + 1),
    ord("V"): lambda buf, pos: (None, pos),
    0: lambda buf, pos: (None, pos),  # seen in the wild (pamqp reads it as void)
}


def _field(buf: bytes, pos: int) -> tuple[Any, int]:
    """One typed field value at *pos*: (value, position after it)."""
    kind = buf[pos]
    if kind == 0x53:  # S, by far the most common
        return _long_str(buf, pos + 1)
    fixed = _FIXED.get(kind)
    if fixed is not None:
        return fixed[0].unpack_from(buf, pos + 1)[0], pos + 1 + fixed[1]
    decode = _VARIABLE.get(kind)
    if decode is None:
        raise ValueError(f"unknown AMQP field type {chr(kind)!r}")
    return decode(buf, pos + 1)


def decode_table(buf: bytes, pos: int, end: int) -> dict[str, Any]:
    """The field table in ``buf[pos:end]`` (values as :func:`from_properties` gives them)."""
    table: dict[str, Any] = {}
    u32 = _U32.unpack_from
    while pos < end:
        n = buf[pos]
        key = buf[pos + 1 : pos + 1 + n].decode("utf-8")
        pos += 1 + n
        kind = buf[pos]
        if kind == 0x53:  # S (most Celery headers), inline
            start = pos + 5
            pos = start + u32(buf, pos + 1)[0]
            raw = buf[start:pos]
            try:
                table[key] = raw.decode("utf-8")
            except UnicodeDecodeError:
                table[key] = raw
        elif kind == 0x56:  # V
            table[key] = None
            pos += 1
        else:
            table[key], pos = _field(buf, pos)
    if pos != end:
        raise ValueError("AMQP field table overruns its length")
    return table


def _short_str(buf: bytes, pos: int) -> tuple[str, int]:
    n = buf[pos]
    return buf[pos + 1 : pos + 1 + n].decode("utf-8"), pos + 1 + n


#: Basic property flags in wire order, with the key ``from_properties`` stores them under.
_PROPERTY_BITS = (
    (1 << 15, "content_type"),
    (1 << 14, "content_encoding"),
    (1 << 13, "headers"),
    (1 << 12, "delivery_mode"),
    (1 << 11, "priority"),
    (1 << 10, "correlation_id"),
    (1 << 9, "reply_to"),
    (1 << 8, "expiration"),
    (1 << 7, "message_id"),
    (1 << 6, "timestamp"),
    (1 << 5, "type"),
    (1 << 4, "user_id"),
    (1 << 3, "app_id"),
    (1 << 2, "cluster_id"),
)


def decode_deliver(payload: bytes) -> tuple[str, int, bool, str, str]:
    """A ``basic.deliver`` method payload (after the class/method ids): consumer tag, delivery
    tag, redelivered, exchange, routing key."""
    consumer_tag, pos = _short_str(payload, 4)
    tag, bits = _DELIVER.unpack_from(payload, pos)
    exchange, pos = _short_str(payload, pos + 9)
    routing_key, _ = _short_str(payload, pos)
    return consumer_tag, tag, bool(bits & 1), exchange, routing_key


def decode_content_header(payload: bytes) -> tuple[int, Message]:
    """A content header frame payload: (body size, the Message without its body).

    The result equals :func:`from_properties` for the same properties.
    """
    _, _, size, flags = _CONTENT_HEADER.unpack_from(payload, 0)
    pos = 14
    while flags & 1:  # more flag words follow (none are defined for basic; skip them)
        flags &= ~1
        pos += 2
    content_type, content_encoding = "application/data", "binary"
    headers: dict[str, Any] = {}
    properties: dict[str, Any] = {}
    for bit, key in _PROPERTY_BITS:
        if not flags & bit:
            continue
        if key == "headers":
            n = _U32.unpack_from(payload, pos)[0]
            headers = decode_table(payload, pos + 4, pos + 4 + n)
            pos += 4 + n
        elif key in ("delivery_mode", "priority"):
            properties[key] = payload[pos]
            pos += 1
        elif key == "timestamp":
            properties[key] = _timestamp(_U64.unpack_from(payload, pos)[0]).timestamp()
            pos += 8
        else:
            value, pos = _short_str(payload, pos)
            if key == "content_type":
                content_type = value or content_type
            elif key == "content_encoding":
                content_encoding = value or content_encoding
            elif key != "cluster_id":
                properties[key] = value
    return size, Message(b"", headers, properties, content_type, content_encoding)


def ack_frame(channel: int, tag: int, multiple: bool = False) -> bytes:
    """A ``basic.ack`` method frame."""
    return _ACK.pack(1, channel, 13, 60, 80, tag, 1 if multiple else 0, 0xCE)


def reject_frame(channel: int, tag: int, requeue: bool) -> bytes:
    """A ``basic.reject`` method frame."""
    return _ACK.pack(1, channel, 13, 60, 90, tag, 1 if requeue else 0, 0xCE)


_ACK = struct.Struct(">BHIHHQBB")
