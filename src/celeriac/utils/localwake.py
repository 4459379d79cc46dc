"""Cross-process wake-ups on one machine, for the embedded SQLite broker and result store.

A process that waits for something to appear in a database file binds a UNIX datagram socket in a
directory next to that file (``<db>.wake/<channel>-<pid>-<n>-<random>.sock``). A process that made
something appear sends one byte to every socket of that channel. The waiter drains its socket
*before* it checks the database and blocks on it *after*, so a wake-up sent between the check and
the wait is never lost; if a datagram is lost anyway (full buffer, a directory listing cached a
moment too long), the waiter's fallback timeout bounds the cost to latency.

Senders never block: full receive buffers mean the waiter has a wake-up pending already, and a
socket nobody listens on (its process died) is removed. The directory listing is cached while
the directory's mtime stays the same (at most ``LISTING_TTL`` seconds), so a tight publish loop
costs one ``stat`` plus one ``sendto`` per waiter, and a waiter that just arrived is woken at once.

Where UNIX sockets do not exist (Windows), ``Listener.wait`` degrades to a short sleep, which keeps
every caller correct at the price of polling.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import os
import secrets
import select
import socket
import tempfile
import threading
import time
import weakref

__all__ = ["LISTING_TTL", "Listener", "WakeDir", "wake_dir_for"]

#: Seconds a sender trusts its cached listing of a wake directory.
LISTING_TTL = 0.5
#: Longest socket path we bind; the OS limit is 104 (macOS) to 108 (Linux) bytes.
_MAX_SOCKET_PATH = 100
#: A directory mtime at least this old (ns) cannot hide a later change within the same clock tick.
_MTIME_TRUST_NS = 50_000_000
#: Sleep between checks where UNIX datagram sockets are unavailable.
_NO_SOCKET_POLL = 0.1

_HAVE_UNIX = hasattr(socket, "AF_UNIX")
_counter = itertools.count(1)
# Bumped whenever this process binds a listener, so this process's senders re-list at once.
_local_generation = itertools.count(1)
_generation = 0


def wake_dir_for(db_path: str) -> str:
    """The wake-up directory of database file *db_path*.

    ``<db>.wake`` beside the file when socket paths inside it stay under the OS limit, otherwise a
    directory in the system temp dir named by a hash of the file's absolute path. Every process
    derives the same answer from the same file.
    """
    absolute = os.path.abspath(db_path)
    beside = absolute + ".wake"
    # Room for "<channel>-<pid>-<n>-<random>.sock" (about 40 characters).
    if len(beside) + 42 <= _MAX_SOCKET_PATH:
        return beside
    digest = hashlib.sha256(os.path.realpath(absolute).encode()).hexdigest()[:20]
    return os.path.join(tempfile.gettempdir(), f"celeriac-wake-{digest}")


class Listener:
    """One waiter's socket in a wake directory. Use from one thread at a time."""

    def __init__(self, directory: str, channel: str) -> None:
        global _generation
        self.directory = directory
        self.channel = channel
        self.pid = os.getpid()
        self.path = ""
        self._sock: socket.socket | None = None
        self._poll: select.poll | None = None
        if not _HAVE_UNIX:
            return
        os.makedirs(directory, exist_ok=True)
        name = f"{channel}-{self.pid}-{next(_counter)}-{secrets.token_hex(3)}.sock"
        self.path = os.path.join(directory, name)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind(self.path)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._poll = select.poll()
        self._poll.register(sock.fileno(), select.POLLIN)
        # A listener dropped without close() (or alive at exit) still removes its file.
        self._finalizer = weakref.finalize(self, _unlink_if_owner, self.path, self.pid)
        _generation = next(_local_generation)

    def drain(self) -> bool:
        """Discard pending wake-ups; True if there were any. Call before checking for work."""
        sock = self._sock
        if sock is None:
            return False
        woke = False
        while True:
            try:
                sock.recv(64)
            except (BlockingIOError, InterruptedError):
                return woke
            except OSError:
                return woke
            woke = True

    def wait(self, timeout: float) -> bool:
        """Block until a wake-up arrives or *timeout* seconds pass; True when woken."""
        timeout = max(timeout, 0.0)
        if self._poll is None:
            time.sleep(min(timeout, _NO_SOCKET_POLL))
            return False
        try:
            return bool(self._poll.poll(timeout * 1000.0))
        except InterruptedError:
            return False

    def close(self) -> None:
        """Stop listening and remove the socket file (only from the process that bound it)."""
        sock, self._sock, self._poll = self._sock, None, None
        if sock is None:
            return
        sock.close()
        self._finalizer()


def _unlink_if_owner(path: str, pid: int) -> None:
    if os.getpid() == pid:  # a forked child must not remove its parent's socket
        try:
            os.unlink(path)
        except OSError:
            pass


class WakeDir:
    """The sending side: wake every listener of a channel in one directory. Thread-safe."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._listing: list[str] = []
        self._listed_at = -LISTING_TTL
        self._listed_generation = -1
        self._listed_mtime = -1
        self._trusted = False
        self._sock: socket.socket | None = None
        self._pid = -1

    def listen(self, channel: str) -> Listener:
        """Bind a new listener for *channel* (callers close it)."""
        return Listener(self.directory, channel)

    def notify(self, channel: str) -> None:
        """Send one byte to every listener of *channel*; never blocks, never raises."""
        if not _HAVE_UNIX:
            return
        prefix = channel + "-"
        with self._lock:
            sock = self._sender()
            dead: list[str] = []
            for name in self._names():
                if not name.startswith(prefix):
                    continue
                path = os.path.join(self.directory, name)
                try:
                    sock.sendto(b"\x01", path)
                except (BlockingIOError, InterruptedError):
                    pass  # the receiver's buffer is full: it has a wake-up pending already
                except OSError as exc:
                    if exc.errno in (errno.ECONNREFUSED, errno.ENOENT, errno.ENOTSOCK):
                        dead.append(name)
            for name in dead:
                self._forget(name)

    def close(self) -> None:
        """Close the sending socket."""
        with self._lock:
            if self._sock is not None and self._pid == os.getpid():
                self._sock.close()
            self._sock = None

    def _sender(self) -> socket.socket:
        # A socket inherited over fork is shared with the parent; make our own.
        if self._sock is None or self._pid != os.getpid():
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.setblocking(False)
            self._pid = os.getpid()
        return self._sock

    def _names(self) -> list[str]:
        now = time.monotonic()
        try:
            mtime = os.stat(self.directory).st_mtime_ns
        except OSError:
            return []
        if (
            mtime != self._listed_mtime
            or not self._trusted
            or now - self._listed_at >= LISTING_TTL
            or self._listed_generation != _generation
        ):
            try:
                self._listing = [n for n in os.listdir(self.directory) if n.endswith(".sock")]
            except OSError:
                self._listing = []
            self._listed_at = now
            self._listed_mtime = mtime
            self._listed_generation = _generation
            # File system clocks tick coarsely: a socket bound within the same tick as this
            # listing may leave the directory's mtime unchanged, so only trust an older mtime.
            self._trusted = time.time_ns() - mtime > _MTIME_TRUST_NS
        return self._listing

    def _forget(self, name: str) -> None:
        """Remove a socket nobody listens on (its process died without cleaning up)."""
        try:
            os.unlink(os.path.join(self.directory, name))
        except OSError:
            pass
        try:
            self._listing.remove(name)
        except ValueError:
            pass
