"""Task messages: building protocol v2 and reading v1 and v2 into one parsed form.

See ``PROTOCOL.md`` §1. A v2 message carries the task's identity in headers and ``[args, kwargs,
embed]`` in the body; a v1 message has empty headers and a dict body.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from celeriac.exceptions import InvalidTaskError
from celeriac.protocol import compression, serialization
from celeriac.protocol.message import Message
from celeriac.utils import forks

EMBED_KEYS = ("callbacks", "errbacks", "chain", "chord")
REPR_LIMIT = 1024


#: Random bytes read from the OS at a time for task ids (one system call per 256 ids).
_RANDOM_CHUNK = 16 * 256
_random = threading.local()


def new_task_id() -> str:
    """A random (version 4) UUID string, formatted without the cost of a ``uuid.UUID`` object.

    The bytes come from ``os.urandom`` in chunks kept per thread, and a forked child never
    reuses its parent's chunk.
    """
    local = _random
    ids: list[str] | None = getattr(local, "ids", None)
    if not ids or local.gen != forks.generation():
        ids = local.ids = _make_ids()
        local.gen = forks.generation()
    return ids.pop()


def _make_ids() -> list[str]:
    h = os.urandom(_RANDOM_CHUNK).hex()
    v = _VARIANT
    return [
        f"{h[i : i + 8]}-{h[i + 8 : i + 12]}-4{h[i + 13 : i + 16]}-"
        f"{v[h[i + 16]]}{h[i + 17 : i + 20]}-{h[i + 20 : i + 32]}"
        for i in range(0, len(h), 32)
    ]


# The variant nibble of an RFC 4122 UUID is 10xx: map each hex digit onto 8, 9, a or b.
_VARIANT = {d: "89ab"[int(d, 16) & 3] for d in "0123456789abcdef"}


def anon_nodename(pid: int | None = None) -> str:
    """The sender node name Celery gives clients: ``gen<pid>@<host>``."""
    return f"gen{pid or os.getpid()}@{socket.gethostname()}"


def safe_repr(value: Any, limit: int = REPR_LIMIT) -> str:
    """``repr`` bounded to *limit* characters, never raising (for ``argsrepr``/``kwargsrepr``)."""
    try:
        text = repr(value)
    except Exception as exc:  # a user's __repr__ may fail; the message must still go out
        text = f"<unrepresentable {type(value).__name__}: {exc!r}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def isoformat(when: datetime | None) -> str | None:
    """ISO-8601 with an explicit offset, as Celery writes ``eta``/``expires`` (naive = UTC)."""
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.isoformat()


def parse_datetime(value: Any, what: str) -> datetime | None:
    """Read an ``eta``/``expires`` header (ISO string, or a datetime from a non-JSON codec)."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        when = value
    elif isinstance(value, str):
        try:
            when = datetime.fromisoformat(value)
        except ValueError as exc:
            raise InvalidTaskError(f"{what} {value!r} is not an ISO-8601 date") from exc
    else:
        raise InvalidTaskError(f"{what} {value!r} is not an ISO-8601 date")
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


@dataclass(slots=True, kw_only=True)
class TaskRequest:
    """Everything needed to build a task message (the client side of protocol v2)."""

    name: str
    id: str
    args: Sequence[Any] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    eta: datetime | None = None
    expires: datetime | None = None
    expires_in: float | None = None
    group_id: str | None = None
    group_index: int | None = None
    retries: int = 0
    time_limit: float | None = None
    soft_time_limit: float | None = None
    root_id: str | None = None
    parent_id: str | None = None
    shadow: str | None = None
    origin: str | None = None
    ignore_result: bool = False
    reply_to: str | None = None
    priority: int | None = None
    delivery_mode: int = 2
    callbacks: list[dict[str, Any]] | None = None
    errbacks: list[dict[str, Any]] | None = None
    chain: list[dict[str, Any]] | None = None
    chord: dict[str, Any] | None = None
    replaced_task_nesting: int = 0
    stamped_headers: list[str] | None = None
    stamps: dict[str, Any] = field(default_factory=dict)
    extra_headers: Mapping[str, Any] | None = None
    argsrepr: str | None = None
    kwargsrepr: str | None = None
    serializer: str = "json"
    compression: str | None = None
    extra_properties: Mapping[str, Any] | None = None


def build_v2(req: TaskRequest) -> Message:
    """Encode *req* as a protocol v2 message. Raises ``EncodeError`` for bad arguments."""
    args = list(req.args)
    kwargs = dict(req.kwargs)
    headers: dict[str, Any] = {
        "lang": "py",
        "task": req.name,
        "id": req.id,
        "shadow": req.shadow,
        "eta": isoformat(req.eta),
        "expires": isoformat(req.expires),
        "group": req.group_id,
        "group_index": req.group_index,
        "retries": req.retries,
        "timelimit": [req.time_limit, req.soft_time_limit],
        "root_id": req.root_id or req.id,
        "parent_id": req.parent_id,
        "argsrepr": req.argsrepr if req.argsrepr is not None else safe_repr(tuple(args)),
        "kwargsrepr": req.kwargsrepr if req.kwargsrepr is not None else safe_repr(kwargs),
        "origin": req.origin or anon_nodename(),
        "ignore_result": req.ignore_result,
        "replaced_task_nesting": req.replaced_task_nesting,
        "stamped_headers": req.stamped_headers,
        "stamps": req.stamps,
    }
    if req.extra_headers:
        for key, value in req.extra_headers.items():
            headers.setdefault(key, value)
    embed = {
        "callbacks": req.callbacks,
        "errbacks": req.errbacks,
        "chain": req.chain,
        "chord": req.chord,
    }
    body = _plain_json_body(args, kwargs, embed) if req.serializer == "json" else None
    if body is not None:
        content_type, content_encoding = "application/json", "utf-8"
    else:
        content_type, content_encoding, body = serialization.dumps(
            [args, kwargs, embed], req.serializer
        )
    if req.compression:
        body, headers["compression"] = compression.compress(body, req.compression)
    properties: dict[str, Any] = {
        "correlation_id": req.id,
        "reply_to": req.reply_to or "",
        "delivery_mode": req.delivery_mode,
        "priority": req.priority if req.priority is not None else 0,
    }
    if req.expires_in is not None:
        properties["expiration"] = str(int(max(req.expires_in, 0) * 1000))
    if req.extra_properties:
        properties.update(req.extra_properties)
    return Message(body, headers, properties, content_type, content_encoding)


def sibling_v2(
    message: Message,
    embed: dict[str, Any],
    task_id: str,
    args: list[Any],
    kwargs: dict[str, Any],
    group_index: int | None,
) -> Message | None:
    """A message for another call of the task *message* calls, differing only in id, arguments
    and group index (the members of a group): what :func:`build_v2` would build for it, without
    rebuilding what they share. *embed* is *message*'s (from :func:`json_embed`). None when the
    arguments need the full encoder (values other than strings, small ints, bools and None):
    use :func:`build_v2`."""
    if not _plain_values(args, kwargs):
        return None
    body = orjson.dumps([args, kwargs, embed])
    headers = message.headers
    new_headers = dict(headers)
    new_headers["id"] = task_id
    if headers.get("root_id") == headers.get("id"):
        new_headers["root_id"] = task_id
    new_headers["group_index"] = group_index
    new_headers["argsrepr"] = safe_repr(tuple(args))
    new_headers["kwargsrepr"] = safe_repr(kwargs)
    properties = dict(message.properties)
    properties["correlation_id"] = task_id
    return Message(body, new_headers, properties, message.content_type, message.content_encoding)


def json_embed(message: Message) -> dict[str, Any] | None:
    """The embedded part of a JSON body without compression, which :func:`sibling_v2` can
    reuse; None for any other message."""
    if message.content_type != "application/json" or "compression" in message.headers:
        return None
    try:
        body = orjson.loads(message.body)
    except orjson.JSONDecodeError:
        return None
    embed = body[2] if isinstance(body, list) and len(body) == 3 else None
    return embed if isinstance(embed, dict) else None


_PLAIN_TYPES = frozenset({str, int, bool, type(None)})
_INT64 = 2**63


def _plain_json_body(
    args: list[Any], kwargs: dict[str, Any], embed: dict[str, Any]
) -> bytes | None:
    """The JSON body straight from orjson when every value is a plain string, small int, bool or
    None and nothing is embedded (the common ``delay(...)``); None means use the full encoder."""
    if embed["callbacks"] or embed["errbacks"] or embed["chain"] or embed["chord"]:
        return None
    return orjson.dumps([args, kwargs, embed]) if _plain_values(args, kwargs) else None


def _plain_values(args: list[Any], kwargs: dict[str, Any]) -> bool:
    for value in (*args, *kwargs.values()):
        kind = type(value)
        if kind not in _PLAIN_TYPES or (kind is int and not -_INT64 <= value < _INT64):
            return False
    return True


@dataclass(slots=True)
class TaskMessage:
    """A task message read from the wire, whatever protocol version sent it."""

    id: str
    name: str
    args: list[Any]
    kwargs: dict[str, Any]
    embed: dict[str, Any]
    headers: dict[str, Any]
    properties: dict[str, Any]
    eta: datetime | None = None
    expires: datetime | None = None
    content_type: str = "application/json"
    content_encoding: str = "utf-8"

    @property
    def retries(self) -> int:
        return int(self.headers.get("retries") or 0)

    @property
    def group_id(self) -> str | None:
        return self.headers.get("group")

    @property
    def group_index(self) -> int | None:
        return self.headers.get("group_index")

    @property
    def root_id(self) -> str | None:
        return self.headers.get("root_id")

    @property
    def parent_id(self) -> str | None:
        return self.headers.get("parent_id")

    @property
    def timelimit(self) -> tuple[float | None, float | None]:
        value = self.headers.get("timelimit") or (None, None)
        hard, soft = [*list(value), None, None][:2]
        return hard, soft

    @property
    def shadow(self) -> str | None:
        return self.headers.get("shadow")

    @property
    def ignore_result(self) -> bool:
        return bool(self.headers.get("ignore_result"))

    @property
    def reply_to(self) -> str | None:
        return self.properties.get("reply_to")

    @property
    def correlation_id(self) -> str:
        return str(self.properties.get("correlation_id") or self.id)


def peek_name(message: Message) -> str | None:
    """The task name without decoding the body (v2 header), or None for v1 messages."""
    name = message.headers.get("task")
    return name if isinstance(name, str) else None


def parse(message: Message, accept: Collection[str] | None = None) -> TaskMessage:
    """Decode a task message of protocol v1 or v2.

    Raises :class:`~celeriac.exceptions.ContentDisallowed` before decoding anything when the content
    type is not accepted, ``DecodeError`` for undecodable bytes, and :class:`InvalidTaskError`
    when the structure is not a task message.
    """
    body: bytes | str = message.body
    compressed = message.headers.get("compression")
    if compressed:
        if accept is not None:
            serialization.check_accepted(message.content_type, accept)
        body = compression.decompress(message.body, compressed)
    payload = serialization.loads(body, message.content_type, message.content_encoding, accept)
    headers = dict(message.headers)
    if isinstance(payload, list | tuple) and "task" in headers:
        return _from_v2(message, headers, payload)
    if isinstance(payload, dict) and "task" in payload:
        return _from_v1(message, headers, payload)
    raise InvalidTaskError(
        "not a task message: expected a v2 body [args, kwargs, embed] with a 'task' header, "
        f"or a v1 dict body with 'task' and 'args'; got {type(payload).__name__} body and headers "
        f"{sorted(headers)}"
    )


def _from_v2(message: Message, headers: dict[str, Any], payload: Sequence[Any]) -> TaskMessage:
    if len(payload) != 3:
        raise InvalidTaskError(
            f"task body must have 3 items [args, kwargs, embed], got {len(payload)}"
        )
    args, kwargs, embed = payload
    if not isinstance(args, list | tuple) or not isinstance(kwargs, dict):
        raise InvalidTaskError(
            f"task body args must be a list and kwargs an object, got {type(args).__name__} and "
            f"{type(kwargs).__name__}"
        )
    task_id = headers.get("id")
    if not isinstance(task_id, str) or not task_id:
        raise InvalidTaskError("task message has no 'id' header")
    return TaskMessage(
        id=task_id,
        name=str(headers["task"]),
        args=list(args),
        kwargs=kwargs,
        embed={key: (embed or {}).get(key) for key in EMBED_KEYS},
        headers=headers,
        properties=dict(message.properties),
        eta=parse_datetime(headers.get("eta"), "eta"),
        expires=parse_datetime(headers.get("expires"), "expires"),
        content_type=message.content_type,
        content_encoding=message.content_encoding,
    )


def _from_v1(message: Message, headers: dict[str, Any], body: dict[str, Any]) -> TaskMessage:
    task_id = body.get("id")
    if not isinstance(task_id, str) or not task_id:
        raise InvalidTaskError("v1 task message has no 'id'")
    args, kwargs = body.get("args") or [], body.get("kwargs") or {}
    if not isinstance(args, list | tuple) or not isinstance(kwargs, dict):
        raise InvalidTaskError("v1 task message: args must be a list and kwargs an object")
    v2_headers: dict[str, Any] = {
        **headers,
        "lang": "py",
        "task": body["task"],
        "id": task_id,
        "shadow": None,
        "eta": body.get("eta"),
        "expires": body.get("expires"),
        "group": body.get("group") or body.get("taskset"),
        "group_index": body.get("group_index"),
        "retries": body.get("retries") or 0,
        "timelimit": body.get("timelimit") or [None, None],
        "root_id": task_id,
        "parent_id": None,
        "argsrepr": safe_repr(tuple(args)),
        "kwargsrepr": safe_repr(kwargs),
        "origin": None,
        "ignore_result": False,
    }
    embed = {
        "callbacks": body.get("callbacks"),
        "errbacks": body.get("errbacks"),
        "chain": None,
        "chord": body.get("chord"),
    }
    return TaskMessage(
        id=task_id,
        name=str(body["task"]),
        args=list(args),
        kwargs=kwargs,
        embed=embed,
        headers=v2_headers,
        properties=dict(message.properties),
        eta=parse_datetime(body.get("eta"), "eta"),
        expires=parse_datetime(body.get("expires"), "expires"),
        content_type=message.content_type,
        content_encoding=message.content_encoding,
    )
