"""Messages as AMQP 0-9-1 content: basic properties, a header table, a raw body.

Celery (through py-amqp) writes floats in header tables as doubles (``d``), strings as long strings
(``S``) and ``None`` as void (``V``). pamqp writes floats as single precision (``f``), which would
corrupt times such as a pidbox request's ``expires``, so header tables are encoded here, the way
py-amqp does. The other basic properties are encoded here too, in pamqp's layout (flag bits and
field order, read from pamqp), once per message: pamqp's generic encoder was a third of the cost of
a publish. ``WireProperties.encode_property`` keeps pamqp's own path consistent with this one.
"""

from __future__ import annotations

import datetime
import struct
from collections.abc import Mapping
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


_INT32 = struct.Struct(">i")
_INT64 = struct.Struct(">q")


def _int(value: int) -> bytes:
    # py-amqp's choice: a 32-bit int when it fits, else a signed 64-bit one.
    if -2147483648 <= value <= 2147483647:
        return b"I" + _INT32.pack(value)
    if -9223372036854775808 <= value <= 9223372036854775807:
        return b"l" + _INT64.pack(value)
    raise TypeError(f"integer {value} does not fit in 64 bits")


def _value(value: Any) -> bytes:
    kind = type(value)
    # The common cases first, by exact type (a header table is encoded per message sent).
    if kind is str:
        raw: bytes = value.encode("utf-8", "surrogatepass")
        return b"S" + _LONG.pack(len(raw)) + raw
    if value is None:
        return b"V"
    if kind is int:
        return _int(value)
    return _other_value(value)


def _other_value(value: Any) -> bytes:
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


#: Encoded header names seen so far (a task message's ~20 names repeat in every message).
_NAMES: dict[str, bytes] = {}


def _field_name(key: str) -> bytes:
    name = str(key).encode("utf-8")
    if len(name) > 255:
        raise TypeError(f"header name {key!r} is longer than 255 bytes")
    out = bytes((len(name),)) + name
    if type(key) is str and len(_NAMES) < 512:
        _NAMES[key] = out
    return out


def encode_table(table: Mapping[str, Any]) -> bytes:
    """An AMQP field table, py-amqp style (floats as doubles)."""
    # Strings, None and small ints inline: a task message's headers are ~20 of them, encoded
    # for every message sent, and a call per value was most of a publish's cost.
    parts: list[bytes] = []
    append = parts.append
    pack = _LONG.pack
    key = ""
    try:
        for key, value in table.items():
            append(_NAMES.get(key) or _field_name(key))
            kind = type(value)
            if kind is str:
                raw = value.encode("utf-8", "surrogatepass")
                append(b"S")
                append(pack(len(raw)))
                append(raw)
            elif value is None:
                append(b"V")
            elif kind is bool:
                append(b"t\x01" if value else b"t\x00")
            elif kind is int and -2147483648 <= value <= 2147483647:
                append(b"I")
                append(_INT32.pack(value))
            else:
                append(_other_value(value))
    except TypeError as exc:
        raise TypeError(f"header {key!r}: {exc}") from exc
    body = b"".join(parts)
    return pack(len(body)) + body


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

    def freeze(self) -> None:
        """Encode now, raising on a value AMQP cannot carry, and keep the bytes for
        :meth:`marshal`: the properties must not change afterwards (but for the ``message_id``
        the client fills in, which is left off the wire unless the message had its own)."""
        self.__dict__["_frozen"] = self._encode()

    def marshal(self) -> bytes:
        frozen: bytes | None = self.__dict__.get("_frozen")
        return frozen if frozen is not None else self._encode()

    def _encode(self) -> bytes:
        # pamqp's layout (flag bits and field order), encoded here: pamqp's generic per-field
        # dispatch was a third of the cost of publishing a task message.
        keep_id = self.__dict__.get("_keep_message_id", True)
        flags = 0
        parts = []
        for name, flag, kind in _LAYOUT:
            value = getattr(self, name)
            if value is None or value == "" or (name == "message_id" and not keep_id):
                continue
            flags |= flag
            if kind == "shortstr":
                parts.append(_short_string(name, value))
            elif kind == "table":
                parts.append(encode_table(value))
            elif kind == "octet":
                parts.append(_OCTET.pack(value))
            else:
                parts.append(encode.by_type(value, kind))
        return _FLAGS.pack(flags) + b"".join(parts)


_FLAGS = struct.Struct(">H")
_OCTET = struct.Struct(">B")
#: (attribute, flag bit, AMQP type) of each basic property, in wire order.
_LAYOUT = tuple(
    (name, spec.Basic.Properties.flags[name], spec.Basic.Properties.amqp_type(name))
    for name in spec.Basic.Properties.__slots__
)


def _short_string(name: str, value: Any) -> bytes:
    raw = str(value).encode("utf-8")
    if len(raw) > 255:
        raise TypeError(f"message property {name} is longer than 255 bytes")
    return bytes((len(raw),)) + raw


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
        wire.freeze()  # fail here, naming the header, not deep inside the client
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
