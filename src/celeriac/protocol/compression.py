"""Body compression under kombu's names.

A compressed message carries the method's MIME type in its ``compression`` header. The methods
and their names, as kombu registers them:

=====================  ==========================  =============================================
MIME type              names                       library
=====================  ==========================  =============================================
``application/x-gzip`` ``gzip``, ``zlib``          :mod:`zlib` (zlib format, not gzip's, as kombu)
``application/x-bz2``  ``bzip2``, ``bzip``         :mod:`bz2`
``application/x-lzma`` ``lzma``, ``xz``            :mod:`lzma`
``application/zstd``   ``zstd``, ``zstandard``     ``compression.zstd`` (3.14+), ``backports.zstd``
                                                   or ``zstandard``, when installed
``application/x-brotli`` ``brotli``                ``brotli`` or ``brotlicffi``, when installed
=====================  ==========================  =============================================

Results stored with ``result_compression`` use a self-describing frame instead of a header
(Celery 5.7): see :func:`compress_payload` and :func:`decompress_payload`.
"""

from __future__ import annotations

import bz2
import importlib
import lzma
import threading
import zlib
from collections.abc import Callable, Iterable
from typing import Any, Final

from celeriac.exceptions import DecodeError, ImproperlyConfigured

__all__ = [
    "COMPRESSED_PAYLOAD_MAGIC",
    "compress",
    "compress_payload",
    "content_type_for",
    "decompress",
    "decompress_payload",
    "methods",
    "register",
]

_Codec = Callable[[bytes], bytes]

_lock = threading.Lock()
_encoders: dict[str, _Codec] = {}
_decoders: dict[str, _Codec] = {}
_aliases: dict[str, str] = {}
# Known methods whose library is missing: MIME type -> what to install.
_missing: dict[str, str] = {}

#: Start of a result payload compressed by Celery 5.7's ``result_compression``; it can start
#: no JSON, msgpack or pickle document, so uncompressed results are never mistaken for it.
COMPRESSED_PAYLOAD_MAGIC: Final = b"\x00celery-compressed\x00"


def register(
    encoder: _Codec, decoder: _Codec, content_type: str, aliases: Iterable[str] = ()
) -> None:
    """Add a compression method under its MIME type and any short names (kombu's ``register``)."""
    with _lock:
        _encoders[content_type] = encoder
        _decoders[content_type] = decoder
        _missing.pop(content_type, None)
        _aliases.update((alias, content_type) for alias in aliases)


def _register_missing(content_type: str, aliases: Iterable[str], install: str) -> None:
    _missing[content_type] = install
    _aliases.update((alias, content_type) for alias in aliases)


def methods() -> list[str]:
    """The MIME types of the methods that can be used here."""
    return list(_encoders)


def content_type_for(method: str) -> str:
    """The MIME type for a method name or MIME type, e.g. ``"zlib"`` -> ``application/x-gzip``."""
    content_type = _aliases.get(method, method)
    if content_type in _encoders:
        return content_type
    raise ImproperlyConfigured(_unknown(method, content_type))


def _unknown(method: str, content_type: str) -> str:
    if content_type in _missing:
        install = _missing[content_type]
        return f"compression {method!r} needs a library that is not installed: {install}"
    names = ", ".join(sorted(_aliases.keys() - {a for a, t in _aliases.items() if t in _missing}))
    return f"unknown compression {method!r}; expected one of: {names} (or their MIME types)"


def compress(data: bytes, method: str) -> tuple[bytes, str]:
    """Compress ``data`` with ``method`` (a name or MIME type).

    Returns the compressed bytes and the MIME type for the message's ``compression`` header.
    """
    content_type = content_type_for(method)
    return _encoders[content_type](bytes(data)), content_type


def decompress(data: bytes, content_type: str) -> bytes:
    """Undo :func:`compress`; ``content_type`` is the ``compression`` header (or a name)."""
    resolved = _aliases.get(content_type, content_type)
    decoder = _decoders.get(resolved)
    if decoder is None:
        raise DecodeError(f"cannot decompress the body: {_unknown(content_type, resolved)}")
    try:
        return decoder(bytes(data))
    except Exception as exc:  # every library has its own error type for corrupt data
        raise DecodeError(
            f"cannot decompress {resolved} data ({len(data)} bytes): {type(exc).__name__}: {exc}"
        ) from exc


def compress_payload(payload: bytes, method: str) -> bytes:
    """Compress a stored result the way Celery 5.7 does: magic, MIME type, NUL, data."""
    body, content_type = compress(payload, method)
    return b"".join((COMPRESSED_PAYLOAD_MAGIC, content_type.encode("utf-8"), b"\x00", body))


def decompress_payload(payload: Any) -> Any:
    """Undo :func:`compress_payload`; anything without the magic prefix is returned as is."""
    if isinstance(payload, memoryview | bytearray):
        payload = bytes(payload)
    if not isinstance(payload, bytes) or not payload.startswith(COMPRESSED_PAYLOAD_MAGIC):
        return payload
    content_type, sep, body = payload[len(COMPRESSED_PAYLOAD_MAGIC) :].partition(b"\x00")
    if not sep:
        raise DecodeError("compressed result payload has no NUL after its MIME type")
    return decompress(body, content_type.decode("utf-8", "replace"))


def _try_import(*names: str) -> Any:
    for name in names:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


def _register_defaults() -> None:
    register(zlib.compress, zlib.decompress, "application/x-gzip", ("gzip", "zlib"))
    register(bz2.compress, bz2.decompress, "application/x-bz2", ("bzip2", "bzip"))
    register(lzma.compress, lzma.decompress, "application/x-lzma", ("lzma", "xz"))

    zstd = _try_import("compression.zstd", "backports.zstd")
    if zstd is not None:
        register(zstd.compress, zstd.decompress, "application/zstd", ("zstd", "zstandard"))
    else:
        zstandard = _try_import("zstandard")
        if zstandard is not None:
            # zstandard's one-shot decompress needs the size in the frame header; a
            # decompressobj reads frames written without it too.
            register(
                zstandard.compress,
                lambda data: zstandard.ZstdDecompressor().decompressobj().decompress(data),
                "application/zstd",
                ("zstd", "zstandard"),
            )
        else:
            _register_missing(
                "application/zstd", ("zstd", "zstandard"), "pip install backports.zstd"
            )

    brotli = _try_import("brotli", "brotlicffi")
    if brotli is not None:
        register(brotli.compress, brotli.decompress, "application/x-brotli", ("brotli",))
    else:
        _register_missing("application/x-brotli", ("brotli",), "pip install brotli")


_register_defaults()
