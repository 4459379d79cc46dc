"""Serializers by name and MIME type, compatible on the wire with kombu's.

A message body is turned into bytes with :func:`dumps`, which also returns the content type and
content encoding that go into the message properties; :func:`loads` reverses it, refusing any
content type outside ``accept`` before a single byte is decoded.

The JSON codec writes and reads kombu's type markers, so values a Celery process sends decode
here to the same Python objects, and the other way round::

    {"__type__": "datetime", "__value__": "2024-01-02T03:04:05+00:00"}

Markers exist for ``datetime``, ``date``, ``time``, ``decimal``, ``uuid`` (value
``{"hex": ...}``), ``bytes`` (UTF-8 text) and ``base64`` (bytes that are not UTF-8). More can be
added with :func:`register_json_type`.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as _dt
import decimal
import enum
import json
import math
import pickle
import sys
import threading
import uuid
from collections.abc import Callable, Collection, Iterable
from typing import Any, Final

import orjson

from celeriac.exceptions import CeleryError, ContentDisallowed, DecodeError, ImproperlyConfigured

__all__ = [
    "EncodeError",
    "SerializationError",
    "Serializer",
    "SerializerNotInstalled",
    "dumps",
    "json_dumps",
    "json_loads",
    "loads",
    "register",
    "register_json_type",
    "resolve_accept",
    "serializer_for",
    "unregister",
]


class SerializationError(CeleryError):
    """Base class for errors turning values into message bodies."""


class EncodeError(SerializationError):
    """A value could not be serialized; the message names its type."""


class SerializerNotInstalled(SerializationError, ImproperlyConfigured):
    """No serializer is registered under that name, or its library is not installed."""


# Content types kombu hands back undecoded whatever ``accept`` says.
_TRUSTED_CONTENT: Final = frozenset({"application/data", "application/text"})
# Encodings that mean "bytes as they are" (kombu's names).
_BINARY_ENCODINGS: Final = frozenset({"binary", "ascii-8bit"})
# kombu pins pickle protocol 4 so that old interpreters can read what it writes.
_PICKLE_PROTOCOL: Final = 4

# ---------------------------------------------------------------------------------------------
# JSON with kombu's type markers
# ---------------------------------------------------------------------------------------------

_Encoder = Callable[[Any], Any]
_Decoder = Callable[[Any], Any]

_json_lock = threading.Lock()
# type -> (marker or None, encoder). Checked in insertion order with isinstance, so datetime
# must come before date (a datetime is a date).
_json_encoders: dict[type, tuple[str | None, _Encoder]] = {}
_json_decoders: dict[str, _Decoder] = {}


def _marker(kind: str, value: Any) -> dict[str, Any]:
    return {"__type__": kind, "__value__": value}


def register_json_type(
    typ: type,
    marker: str | None,
    encoder: _Encoder,
    decoder: _Decoder | None = None,
) -> None:
    """Teach the JSON codec a Python type, like kombu's ``register_type``.

    ``encoder`` turns an instance into JSON-able data, written as
    ``{"__type__": marker, "__value__": <data>}``; ``decoder`` turns that data back. With
    ``marker=None`` the encoded data is written bare and nothing decodes it.
    """
    with _json_lock:
        _json_encoders[typ] = (marker, encoder)
        if marker is not None:
            _json_decoders[marker] = decoder if decoder is not None else (lambda v: v)


def _decode_uuid(value: Any) -> uuid.UUID:
    # kombu writes {"hex": ...}; a bare string is accepted too, as other writers use it.
    if isinstance(value, dict):
        return uuid.UUID(**value)
    return uuid.UUID(value)


register_json_type(_dt.datetime, "datetime", _dt.datetime.isoformat, _dt.datetime.fromisoformat)
register_json_type(
    _dt.date, "date", _dt.date.isoformat, lambda v: _dt.datetime.fromisoformat(v).date()
)
register_json_type(_dt.time, "time", _dt.time.isoformat, _dt.time.fromisoformat)
register_json_type(decimal.Decimal, "decimal", str, decimal.Decimal)
register_json_type(uuid.UUID, "uuid", lambda u: {"hex": u.hex}, _decode_uuid)
_json_decoders["bytes"] = lambda v: v.encode("utf-8")
_json_decoders["base64"] = lambda v: base64.b64decode(v.encode("utf-8"))


def _encode_bytes(value: bytes | bytearray | memoryview) -> dict[str, Any]:
    raw = bytes(value)
    try:
        return _marker("bytes", raw.decode("utf-8"))
    except UnicodeDecodeError:
        return _marker("base64", base64.b64encode(raw).decode("ascii"))


def _is_lazy_text(value: object) -> bool:
    # Django's lazy translation strings are written as text (kombu does the same); only look
    # if Django is already loaded, so importing this module never imports Django.
    functional = sys.modules.get("django.utils.functional")
    promise = getattr(functional, "Promise", None)
    return promise is not None and isinstance(value, promise)


def _encode_special(value: Any) -> Any:
    """Encode what the JSON and msgpack libraries do not know natively, the way kombu does."""
    reducer = getattr(value, "__json__", None)
    if reducer is not None and not isinstance(value, type):
        return reducer()
    if _is_lazy_text(value):
        return str(value)
    for typ, (marker, encoder) in tuple(_json_encoders.items()):
        if isinstance(value, typ):
            encoded = encoder(value)
            return encoded if marker is None else _marker(marker, encoded)
    if isinstance(value, bytes | bytearray | memoryview):
        return _encode_bytes(value)
    if isinstance(value, tuple):  # namedtuples and other tuple subclasses
        return list(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, set | frozenset):
        raise EncodeError(
            f"cannot serialize a {type(value).__name__} ({_short_repr(value)}): "
            "JSON and msgpack have no set type; pass a list (e.g. sorted(values)) instead"
        )
    hint = " (a dataclass: give it a __json__() method)" if dataclasses.is_dataclass(value) else ""
    kind = type(value)
    raise EncodeError(
        f"cannot serialize a value of type {kind.__module__}.{kind.__qualname__}{hint}: "
        f"{_short_repr(value)}; expected str, int, float, bool, None, list, tuple, dict, bytes, "
        "datetime, date, time, Decimal, UUID or an object with a __json__() method"
    )


def _orjson_default(value: Any) -> Any:
    return _prepare(_encode_special(value))


def _stdlib_default(value: Any) -> Any:
    # The stdlib encoder does not know UUIDs either, so they reach this hook at any depth.
    if isinstance(value, uuid.UUID):
        return _marker("uuid", {"hex": value.hex})
    return _encode_special(value)


class _NeedsStdlib(Exception):
    """orjson cannot write this value the way kombu does; use the stdlib encoder."""


# Values orjson writes exactly as kombu does; containers holding only these need no walk.
_PLAIN: Final = frozenset({str, int, bool, type(None)})
_PLAIN_OR_FLOAT: Final = _PLAIN | {float}


def _prepare(value: Any) -> Any:
    """Replace UUIDs by markers before orjson sees them (orjson writes UUIDs natively).

    Returns ``value`` itself when nothing needed replacing, so plain data is never copied.
    Raises ``_NeedsStdlib`` for NaN and infinities, which orjson would write as ``null``.
    """
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is list or kind is tuple:
        return _prepare_items(value, value)
    if kind is dict or isinstance(value, dict):
        return _prepare_items(value, value.values())
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _NeedsStdlib
        return value
    if isinstance(value, uuid.UUID):
        return _marker("uuid", {"hex": value.hex})
    return value


def _prepare_items(container: Any, items: Collection[Any]) -> Any:
    # Collecting the item types runs in C; only mixed containers are walked item by item.
    kinds = set(map(type, items))
    if kinds <= _PLAIN:
        return container
    if kinds <= _PLAIN_OR_FLOAT:
        if not all(map(math.isfinite, (item for item in items if type(item) is float))):
            raise _NeedsStdlib
        return container
    if isinstance(container, dict):
        changed: dict[Any, Any] | None = None
        for key, item in container.items():
            new = _prepare(item)
            if new is not item:
                if changed is None:
                    changed = dict(container)
                changed[key] = new
        return container if changed is None else changed
    replaced: list[Any] | None = None
    for index, item in enumerate(container):
        new = _prepare(item)
        if new is not item:
            if replaced is None:
                replaced = list(container)
            replaced[index] = new
    return container if replaced is None else replaced


_ORJSON_OPTIONS: Final = (
    orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_NON_STR_KEYS
)


def _stdlib_dumps(obj: Any) -> bytes:
    try:
        text = json.dumps(obj, default=_stdlib_default, separators=(",", ":"))
    except EncodeError:
        raise
    except (TypeError, ValueError, RecursionError) as exc:
        raise EncodeError(f"cannot JSON-encode {_short_repr(obj)}: {exc}") from exc
    return text.encode("ascii")


def json_dumps(obj: Any) -> bytes:
    """Encode ``obj`` as compact UTF-8 JSON with kombu's type markers.

    Uses orjson, falling back to the stdlib encoder for what orjson cannot write as kombu
    does (integers beyond 64 bits, NaN and infinities, lone surrogates, very deep nesting).
    Raises :class:`EncodeError` naming the value it cannot encode.
    """
    try:
        return orjson.dumps(_prepare(obj), default=_orjson_default, option=_ORJSON_OPTIONS)
    except _NeedsStdlib:
        pass
    except orjson.JSONEncodeError as exc:
        if isinstance(exc.__cause__, EncodeError):
            raise exc.__cause__ from None
    except RecursionError:
        pass
    return _stdlib_dumps(obj)


# 20+ digits in a row may be an integer beyond 64 bits, which orjson would turn into a float.
# Found by mapping every digit to "0" and everything else to "x" (far faster than a regex).
_DIGITS_AS_ZERO: Final = bytes(0x30 if 0x30 <= i <= 0x39 else 0x78 for i in range(256))
_TWENTY_DIGITS: Final = b"0" * 20


def _has_long_digit_run(data: bytes) -> bool:
    return _TWENTY_DIGITS in data.translate(_DIGITS_AS_ZERO)


def _object_hook(obj: dict[str, Any]) -> Any:
    if len(obj) == 2 and "__type__" in obj and "__value__" in obj:
        kind = obj["__type__"]
        decoder = _json_decoders.get(kind) if isinstance(kind, str) else None
        if decoder is None:
            raise ValueError(
                f"unknown type marker {kind!r} (known: {', '.join(sorted(_json_decoders))}); "
                "register it with register_json_type()"
            )
        return decoder(obj["__value__"])
    return obj


_CONTAINERS: Final = frozenset({dict, list})


def _revive(value: Any) -> Any:
    """Decode markers bottom-up in a freshly parsed document (orjson has no object hook)."""
    kind = type(value)
    if kind is dict:
        if not _CONTAINERS.isdisjoint(map(type, value.values())):
            for key, item in value.items():
                if type(item) in _CONTAINERS:
                    value[key] = _revive(item)
        return _object_hook(value)
    if kind is list and not _CONTAINERS.isdisjoint(map(type, value)):
        for index, item in enumerate(value):
            if type(item) in _CONTAINERS:
                value[index] = _revive(item)
    return value


def json_loads(data: bytes | bytearray | memoryview | str) -> Any:
    """Decode JSON written by :func:`json_dumps` or by kombu, turning markers back into values.

    Raises :class:`~celeriac.exceptions.DecodeError` saying why the data is not valid.
    """
    try:
        return _json_loads(data)
    except (ValueError, TypeError, KeyError, binascii.Error, RecursionError) as exc:
        raise DecodeError(
            f"cannot decode application/json content {_short_repr(data)}: {exc}"
        ) from exc


def _json_loads(data: bytes | bytearray | memoryview | str) -> Any:
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if not _has_long_digit_run(raw):
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # NaN/Infinity, escaped lone surrogates...: the stdlib parser judges
        else:
            # A marker needs the literal text "__type__", unless it was \u-escaped.
            if b"__type__" in raw or b"\\u" in raw:
                parsed = _revive(parsed)
            return parsed
    text = data if isinstance(data, str) else raw.decode("utf-8")
    return json.loads(text, object_hook=_object_hook)


# ---------------------------------------------------------------------------------------------
# msgpack, pickle, yaml
# ---------------------------------------------------------------------------------------------


def _msgpack_default(value: Any) -> Any:
    if isinstance(value, int):  # msgpack hands over only integers beyond 64 bits
        raise EncodeError(
            f"msgpack cannot encode the integer {_short_repr(value)}: it needs more than 64 bits; "
            "use the json serializer or send it as a string"
        )
    return _encode_special(value)


def _msgpack_dumps(obj: Any) -> bytes:
    try:
        import msgpack
    except ImportError as exc:
        raise SerializerNotInstalled(
            "the msgpack serializer needs the msgpack package: pip install msgpack"
        ) from exc
    try:
        packed: bytes = msgpack.packb(obj, use_bin_type=True, default=_msgpack_default)
    except EncodeError:
        raise
    except (TypeError, ValueError, OverflowError) as exc:
        raise EncodeError(f"cannot msgpack-encode {_short_repr(obj)}: {exc}") from exc
    return packed


def _msgpack_loads(data: bytes) -> Any:
    try:
        import msgpack
    except ImportError as exc:
        raise SerializerNotInstalled(
            "the msgpack serializer needs the msgpack package: pip install msgpack"
        ) from exc
    # Markers are read too, so datetimes written by this codec come back as datetimes; kombu
    # itself writes none, so nothing it writes is changed by this.
    return msgpack.unpackb(data, raw=False, strict_map_key=False, object_hook=_object_hook)


def _pickle_dumps(obj: Any) -> bytes:
    try:
        return pickle.dumps(obj, protocol=_PICKLE_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError, RecursionError) as exc:
        raise EncodeError(f"cannot pickle {_short_repr(obj)}: {exc}") from exc


def _pickle_loads(data: bytes) -> Any:
    return pickle.loads(data)


def _yaml_module() -> Any:
    try:
        import yaml
    except ImportError as exc:
        raise SerializerNotInstalled(
            "the yaml serializer needs PyYAML: pip install pyyaml"
        ) from exc
    return yaml


def _yaml_dumps(obj: Any) -> bytes:
    yaml = _yaml_module()
    try:
        text: str = yaml.safe_dump(obj)
    except yaml.YAMLError as exc:
        raise EncodeError(f"cannot YAML-encode {_short_repr(obj)}: {exc}") from exc
    return text.encode("utf-8")


def _yaml_loads(data: bytes) -> Any:
    # safe_load only: full YAML can build arbitrary Python objects.
    return _yaml_module().safe_load(data)


# ---------------------------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Serializer:
    """One codec: its name, the MIME type and encoding it writes, and its two functions.

    ``dumps`` returns bytes; ``loads`` takes bytes (or ``str`` for text encodings). Either may
    be ``None`` for a codec that can only decode or only encode (as with kombu).
    """

    name: str
    content_type: str
    content_encoding: str
    dumps: Callable[[Any], bytes | str] | None
    loads: Callable[[Any], Any] | None


_registry_lock = threading.Lock()
_by_name: dict[str, Serializer] = {}
_by_type: dict[str, Serializer] = {}


def register(
    name: str,
    encoder: Callable[[Any], bytes | str] | None,
    decoder: Callable[[Any], Any] | None,
    content_type: str,
    content_encoding: str = "utf-8",
) -> Serializer:
    """Add (or replace) a serializer, like ``kombu.serialization.register``.

    ``encoder`` turns a value into ``bytes`` (or ``str``, encoded with ``content_encoding``);
    ``decoder`` turns the body back into the value.
    """
    if not name or "/" in name:
        raise ValueError(f"serializer name must be a non-empty word without '/', got {name!r}")
    if "/" not in content_type:
        raise ValueError(
            f"content_type must be a MIME type like 'application/x-foo', got {content_type!r}"
        )
    serializer = Serializer(name, content_type, content_encoding.lower(), encoder, decoder)
    with _registry_lock:
        old = _by_name.pop(name, None)
        if old is not None:
            _by_type.pop(old.content_type, None)
        _by_name[name] = serializer
        _by_type[content_type] = serializer
    return serializer


def unregister(name: str) -> None:
    """Remove the serializer registered as ``name``."""
    with _registry_lock:
        try:
            serializer = _by_name.pop(name)
        except KeyError:
            raise SerializerNotInstalled(_unknown_message(name)) from None
        _by_type.pop(serializer.content_type, None)


def _unknown_message(name: str) -> str:
    known = ", ".join(f"{s.name} ({s.content_type})" for s in _by_name.values())
    return f"no serializer named {name!r}; known serializers: {known}"


def serializer_for(name_or_mime: str) -> Serializer:
    """Return the serializer with this name (``"json"``) or MIME type (``"application/json"``)."""
    serializer = _by_type.get(name_or_mime) if "/" in name_or_mime else _by_name.get(name_or_mime)
    if serializer is None:
        raise SerializerNotInstalled(_unknown_message(name_or_mime))
    return serializer


def resolve_accept(names: Iterable[str]) -> frozenset[str]:
    """Turn serializer names or MIME types (Celery's ``accept_content``) into MIME types.

    MIME types pass through as given; an unknown name raises :class:`SerializerNotInstalled`
    (an :class:`~celeriac.exceptions.ImproperlyConfigured`) naming it.
    """
    if isinstance(names, str):
        names = [names]
    return frozenset(name if "/" in name else serializer_for(name).content_type for name in names)


def dumps(obj: Any, serializer: str = "json") -> tuple[str, str, bytes]:
    """Serialize ``obj``; return ``(content_type, content_encoding, data)``."""
    codec = serializer_for(serializer)
    if codec.dumps is None:
        raise SerializerNotInstalled(f"serializer {codec.name!r} can decode but not encode")
    try:
        data = codec.dumps(obj)
    except (EncodeError, SerializerNotInstalled):
        raise
    except Exception as exc:
        raise EncodeError(
            f"{codec.name} serializer cannot encode {_short_repr(obj)}: {exc}"
        ) from exc
    if isinstance(data, str):
        data = data.encode(
            "utf-8" if codec.content_encoding in _BINARY_ENCODINGS else codec.content_encoding
        )
    return codec.content_type, codec.content_encoding, data


def _is_accepted(content_type: str, accept: Collection[str]) -> bool:
    if content_type in _TRUSTED_CONTENT or content_type in accept:
        return True
    codec = _by_type.get(content_type)
    return codec is not None and codec.name in accept


def check_accepted(content_type: str, accept: Collection[str]) -> None:
    """Raise :class:`~celeriac.exceptions.ContentDisallowed` unless *content_type* is accepted."""
    if not _is_accepted(content_type, accept):
        allowed = ", ".join(sorted(accept)) or "nothing"
        raise ContentDisallowed(
            f"refusing to decode content of type {content_type!r}: it is not in the accepted "
            f"content types ({allowed}); add it to accept_content to allow it"
        )


def loads(
    data: bytes | str,
    content_type: str,
    content_encoding: str = "utf-8",
    accept: Collection[str] | None = None,
) -> Any:
    """Deserialize a message body.

    ``accept`` is a collection of serializer names or MIME types (Celery's ``accept_content``);
    a content type outside it raises :class:`~celeriac.exceptions.ContentDisallowed` before any
    decoding. ``None`` accepts everything. As with kombu, an empty body is returned as is, and a
    body of a type with no serializer is returned as text (or bytes for binary encodings).
    """
    content_type = content_type or "application/data"
    if accept is not None:
        check_accepted(content_type, accept)
    if not data:
        return data
    encoding = (content_encoding or "utf-8").lower()
    codec = _by_type.get(content_type)
    if codec is None or codec.loads is None:
        if encoding in _BINARY_ENCODINGS or isinstance(data, str):
            return data
        return _decode_text(data, content_type, encoding)
    if isinstance(data, str) and encoding in _BINARY_ENCODINGS:
        data = data.encode("utf-8")  # kombu's str_to_bytes
    try:
        return codec.loads(data)
    except DecodeError as exc:
        if content_type in str(exc):
            raise
        raise DecodeError(f"cannot decode {content_type} content: {exc}") from exc
    except SerializerNotInstalled:
        raise
    except Exception as exc:
        raise DecodeError(
            f"cannot decode {content_type} content {_short_repr(data)}: {type(exc).__name__}: {exc}"
        ) from exc


def _decode_text(data: bytes, content_type: str, encoding: str) -> str:
    try:
        return data.decode(encoding)
    except (UnicodeDecodeError, LookupError) as exc:
        raise DecodeError(
            f"cannot decode {content_type} content as {encoding} text: {exc}"
        ) from exc


def _short_repr(value: object, limit: int = 80) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<unreprable {type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


register("json", json_dumps, json_loads, "application/json", "utf-8")
register("msgpack", _msgpack_dumps, _msgpack_loads, "application/x-msgpack", "binary")
register("pickle", _pickle_dumps, _pickle_loads, "application/x-python-serialize", "binary")
register("yaml", _yaml_dumps, _yaml_loads, "application/x-yaml", "utf-8")
