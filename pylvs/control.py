"""The director's control channel: a root-only Unix stream socket, one JSON request per
connection, answered with one JSON reply (each a single line).

Protocol version ``PROTOCOL_VERSION``: a request is ``{"v": 1, "cmd": NAME, ...}``; the
reply is ``{"v": 1, "ok": true, ...}`` or ``{"v": 1, "ok": false, "error": TEXT}``.  A
request without ``"v"`` is taken as version 1 (the clients of the first, datagram
protocol sent none).  Verbs (``Director.handle_control``):

* ``force``: ``pylvs health force RIP[:PORT] up|down|auto``, the control side of nanny's
  SIGUSR1/SIGUSR2/SIGHUP (reference 4.7), which pylvs, with one process for every real
  server, cannot take as signals;
* ``ipvs.apply``, ``ipvs.get``, ``ipvs.conns``, ``ipvs.zero``, ``ipvs.daemon``:
  pylvsadm's (``pylvs.ipvsadm.cli``).

The director answers from its control thread, so a request never touches the dataplane
thread; a stream (not datagrams) because a connection listing of a large table is many
megabytes.  The socket is 0600: every verb is root's.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

PROTOCOL_VERSION = 1
MAX_REQUEST = 16 << 20  # a -R of a whole saved table goes in one request
REPLY_TIMEOUT = 30.0  # a connection listing of 2^20 entries takes seconds to build
SERVER_IO_TIMEOUT = 2.0  # a client that connects and stalls holds the control loop no longer
ACCEPT_PER_POLL = 16  # the control loop has other work: answer at most this many per pass
FORCE_STATES = {"up": True, "down": False, "auto": None}

log = logging.getLogger("pylvs.control")


class ControlError(OSError):
    """No director answered, or its answer was not a reply."""


def _read_line(sock: socket.socket, limit: int, deadline: float | None = None) -> bytes:
    """One line; with ``deadline`` (monotonic) the whole line must arrive by then."""
    buf = bytearray()
    while not buf.endswith(b"\n"):
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the request did not arrive in time")
            sock.settimeout(left)
        chunk = sock.recv(1 << 16)
        if not chunk:
            break
        buf += chunk
        if len(buf) > limit:
            raise ValueError(f"request larger than {limit} bytes")
    return bytes(buf)


class ControlSocket:
    """The director's end: listening, non-blocking; ``poll(handler)`` answers who waits."""

    def __init__(self, path: str) -> None:
        self.path = path
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a crashed director's socket: nobody can be bound to it any more
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # 0600 before anyone can connect: bound under a temporary name, made 0600, renamed,
        # and only then listening (a connect before listen() is refused).  No umask change:
        # it is the whole process's, and other threads run.
        tmp = f"{path}.{os.getpid()}.tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        self.sock.bind(tmp)
        os.chmod(tmp, 0o600)
        os.rename(tmp, path)
        self.sock.listen(ACCEPT_PER_POLL)
        self.sock.setblocking(False)

    def poll(self, handler) -> int:
        """Answer waiting clients with ``handler(request) -> reply``; how many."""
        n = 0
        while n < ACCEPT_PER_POLL:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return n
            except OSError as exc:  # out of descriptors, say: the director goes on, the client waits
                log.warning("control socket: accept failed: %s", exc)
                return n
            n += 1
            with conn:
                try:  # one deadline for the whole request: a client that trickles gets no more
                    data = _read_line(conn, MAX_REQUEST, time.monotonic() + SERVER_IO_TIMEOUT)
                except (OSError, ValueError):
                    continue  # the client stalled or went away: it gets no answer
                try:
                    req = json.loads(data)
                    if not isinstance(req, dict):
                        raise TypeError("a request is a JSON object")
                    if req.get("v", PROTOCOL_VERSION) != PROTOCOL_VERSION:
                        reply = {"ok": False, "error": f"protocol version {req.get('v')!r}: this director "
                                                      f"speaks {PROTOCOL_VERSION}"}  # fmt: skip
                    else:
                        reply = handler(req)
                except (ValueError, KeyError, TypeError) as exc:
                    reply = {"ok": False, "error": f"bad request: {exc}"}
                except Exception as exc:  # noqa: BLE001 - one bad verb never stops the director
                    log.exception("control request %r failed", data[:200])
                    reply = {"ok": False, "error": f"the director failed to answer: {exc}"}
                reply = {"v": PROTOCOL_VERSION, **reply}
                conn.settimeout(SERVER_IO_TIMEOUT)
                with contextlib.suppress(OSError):  # the client gave up waiting
                    conn.sendall(json.dumps(reply, default=str).encode() + b"\n")
        return n

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def request(path: str, message: dict[str, Any], timeout: float = REPLY_TIMEOUT) -> dict[str, Any]:
    """Send one request to the director at ``path`` and return its reply.  OSError when
    nobody listens there (ControlError when the answer is not a reply)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(json.dumps({"v": PROTOCOL_VERSION, **message}).encode() + b"\n")
        data = _read_line(s, 1 << 40)
    try:
        reply = json.loads(data)
    except ValueError:
        raise ControlError(f"{path}: the director closed the connection without a reply") from None
    if not isinstance(reply, dict):
        raise ControlError(f"{path}: not a reply: {data[:80]!r}")
    reply.pop("v", None)
    return reply
