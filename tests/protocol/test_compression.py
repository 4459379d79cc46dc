"""Compression: kombu's names and MIME types, data kombu and Celery 5.7 read and write."""

from __future__ import annotations

import pytest
from celery.backends import base as celery_backend_base
from kombu import compression as kombu_compression

from celeriac.exceptions import DecodeError, ImproperlyConfigured
from celeriac.protocol import compression
from celeriac.protocol.compression import (
    COMPRESSED_PAYLOAD_MAGIC,
    compress,
    compress_payload,
    decompress,
    decompress_payload,
)

DATA = b'[[2, 3], {}, {"callbacks": null, "errbacks": null}]' * 20

NAMES = {
    "zlib": "application/x-gzip",
    "gzip": "application/x-gzip",
    "bzip2": "application/x-bz2",
    "bzip": "application/x-bz2",
    "lzma": "application/x-lzma",
    "xz": "application/x-lzma",
}


@pytest.mark.parametrize(("name", "content_type"), NAMES.items())
def test_names_map_to_kombus_mime_types(name: str, content_type: str) -> None:
    body, header = compress(DATA, name)
    assert header == content_type == kombu_compression.get_encoder(name)[1]
    assert len(body) < len(DATA)
    assert decompress(body, header) == DATA


@pytest.mark.parametrize("method", sorted({*NAMES, *NAMES.values()}))
def test_kombu_reads_ours_and_we_read_kombus(method: str) -> None:
    body, header = compress(DATA, method)
    assert kombu_compression.decompress(body, header) == DATA
    theirs, their_header = kombu_compression.compress(DATA, method)
    assert their_header == header
    assert decompress(theirs, their_header) == DATA


def test_zlib_is_the_zlib_format_as_kombu_writes_it() -> None:
    body, _ = compress(DATA, "gzip")
    assert body[:1] == b"\x78"  # zlib header, not gzip's 1f 8b


def test_decompress_takes_a_name_too() -> None:
    body, _ = compress(DATA, "bzip2")
    assert decompress(body, "bzip2") == DATA


def test_accepts_bytearray_and_memoryview() -> None:
    body, header = compress(bytearray(DATA), "zlib")
    assert decompress(memoryview(body), header) == DATA


def test_unknown_method_names_it_and_the_known_ones() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"'snappy'.*bzip2.*zlib"):
        compress(DATA, "snappy")


def test_unknown_header_on_decompress_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="application/x-snappy"):
        decompress(b"x", "application/x-snappy")


def test_corrupt_data_is_a_decode_error_naming_the_method() -> None:
    with pytest.raises(DecodeError, match="application/x-gzip"):
        decompress(b"definitely not zlib", "application/x-gzip")


@pytest.mark.skipif(
    "application/zstd" in compression.methods(), reason="a zstd library is installed"
)
def test_zstd_without_its_library_says_what_to_install() -> None:
    with pytest.raises(ImproperlyConfigured, match="pip install"):
        compress(DATA, "zstd")
    with pytest.raises(DecodeError, match="pip install"):
        decompress(b"x", "application/zstd")


def test_register_a_custom_method() -> None:
    compression.register(
        lambda b: b[::-1], lambda b: b[::-1], "application/x-test-reverse", ["test-reverse"]
    )
    assert compress(b"abc", "test-reverse") == (b"cba", "application/x-test-reverse")
    assert decompress(b"cba", "application/x-test-reverse") == b"abc"
    assert "application/x-test-reverse" in compression.methods()


# -- result payloads (Celery 5.7 result_compression) -----------------------------------------


@pytest.mark.parametrize("method", ["zlib", "bzip2", "lzma"])
def test_result_payloads_match_celery_both_ways(method: str) -> None:
    ours = compress_payload(DATA, method)
    theirs = celery_backend_base.compress_payload(DATA, method)
    assert ours == theirs
    assert ours.startswith(COMPRESSED_PAYLOAD_MAGIC + NAMES[method].encode() + b"\x00")
    assert celery_backend_base.decompress_payload(ours) == DATA
    assert decompress_payload(theirs) == DATA


@pytest.mark.parametrize("payload", [b'{"status": "SUCCESS"}', "text", None, b""])
def test_uncompressed_result_payloads_pass_through(payload: object) -> None:
    assert decompress_payload(payload) == payload


def test_result_payload_without_separator_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="NUL"):
        decompress_payload(COMPRESSED_PAYLOAD_MAGIC + b"application/x-gzip")
