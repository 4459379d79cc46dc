"""Task ids: version 4 UUID strings, unique, and never repeated across a fork or threads."""

from __future__ import annotations

import os
import threading
import uuid

from celeriac.protocol.task import new_task_id


def test_ids_are_version_4_uuids_and_unique() -> None:
    ids = [new_task_id() for _ in range(20000)]
    assert len(set(ids)) == len(ids)
    for text in ids[:3000]:
        parsed = uuid.UUID(text)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
        assert str(parsed) == text


def test_a_forked_child_does_not_repeat_the_parents_ids() -> None:
    new_task_id()  # the parent has a chunk of ids in hand
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, "".join(new_task_id() for _ in range(5)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 36 * 5).decode()
    os.close(read)
    parent = "".join(new_task_id() for _ in range(5))
    child_ids = {child[i : i + 36] for i in range(0, len(child), 36)}
    assert len(child_ids) == 5
    assert not child_ids & {parent[i : i + 36] for i in range(0, len(parent), 36)}


def test_threads_do_not_share_ids() -> None:
    seen: list[list[str]] = [[] for _ in range(4)]

    def make(i: int) -> None:
        seen[i] = [new_task_id() for _ in range(2000)]

    threads = [threading.Thread(target=make, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for ids in seen for i in ids]
    assert len(set(every)) == len(every) == 8000
