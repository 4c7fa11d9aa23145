"""The daemons' control channels: Unix stream sockets, one JSON request per connection,
answered with one JSON reply (each a single line).

Protocol version ``PROTOCOL_VERSION``: a request is ``{"v": 1, "cmd": NAME, ...}``; the
reply is ``{"v": 1, "ok": true, ...}`` or ``{"v": 1, "ok": false, "error": TEXT}``.  A
request without ``"v"`` is taken as version 1 (the clients of the first, datagram
protocol sent none).

The director's verbs (``Director.handle_control``, socket ``lvs.ctl``):

* ``status``: ``{"status": ...}``, the dict its status file holds;
* ``reload``: SIGHUP's reload, now: ``{"ok": swapped, "generation", "serial_no", "error"}``;
* ``server.state`` ``{"virtual": NAME, "server": NAME, "state": "drain"|"maint"|"ready"}``:
  HAProxy's admin states for one real server of lvs.cf: ``drain`` keeps its connections
  but gives it weight 0 for new ones, ``maint`` forces it down through its health check,
  ``ready`` hands it back to its check;
* ``force``: ``pylvs health force RIP[:PORT] up|down|auto``, the control side of nanny's
  SIGUSR1/SIGUSR2/SIGHUP (reference 4.7), which pylvs, with one process for every real
  server, cannot take as signals;
* ``ipvs.apply``, ``ipvs.get``, ``ipvs.conns``, ``ipvs.zero``, ``ipvs.daemon``:
  pylvsadm's (``pylvs.ipvsadm.cli``).

pulse's verbs (``Pulse.handle_control``, socket ``pulse.ctl``): ``status`` and ``reload``
(``{"ok": accepted, "error"}``: whether pulse took the file; its director reloads on the
SIGHUP pulse sends it, and says how in its own status).

The root socket (0600) offers every verb.  With ``--web-group`` each daemon also opens a
web socket (``lvs.web.ctl``, ``pulse.web.ctl``: 0660, that group) offering ``WEB_VERBS``
alone (pulse: ``PULSE_WEB_VERBS``), for ``pylvs web``, which runs unprivileged.

The director answers from its control thread, so a request never touches the dataplane
thread; a stream (not datagrams) because a connection listing of a large table is many
megabytes.
"""

from __future__ import annotations

import contextlib
import grp
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
# The web socket's clients are not root: one of them per pass of the control loop, given
# 0.1 s to send its one short line, so a stalling group member delays the loop 0.1 s a pass.
WEB_IO_TIMEOUT = 0.1
WEB_ACCEPT_PER_POLL = 1
ACCEPT_PER_POLL = 16  # the control loop has other work: answer at most this many per pass
FORCE_STATES = {"up": True, "down": False, "auto": None}
ADMIN_STATES = ("drain", "maint", "ready")  # server.state: HAProxy's admin states of a server
ROOT_MODE = 0o600
WEB_MODE = 0o660  # the web tool's group connects; nobody else
# What the unprivileged web tool may do: look, reload lvs.cf (which root wrote: the web
# tool only asks for it to be read), and take a server out of rotation and back.  Not
# pylvsadm's verbs (they change the table past lvs.cf) nor `force` (forced up overrides
# the health checks).
WEB_VERBS = frozenset({"status", "reload", "server.state"})
PULSE_WEB_VERBS = WEB_VERBS - {"server.state"}  # pulse has no real servers

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


def group_id(group: str) -> int:
    """A group name or number as a gid; ValueError naming it when there is no such group."""
    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ValueError(f"no such group: {group!r}") from None


class ControlSocket:
    """A daemon's end: listening, non-blocking; ``poll(handler)`` answers who waits.

    ``verbs``: the commands offered here (None: every one); others are refused without
    reaching the handler.  ``mode`` and ``group`` (a gid): who may connect.
    ``io_timeout``: how long one client may take to send its request (pulse keeps it
    short: its loop also answers heartbeats)."""

    def __init__(self, path: str, *, verbs: frozenset[str] | None = None, mode: int = ROOT_MODE,
                 group: int | None = None, io_timeout: float = SERVER_IO_TIMEOUT) -> None:  # fmt: skip
        self.path = path
        self.verbs = verbs
        self.io_timeout = io_timeout
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a crashed director's socket: nobody can be bound to it any more
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Its owner and mode before anyone can connect: bound under a temporary name,
        # chowned and chmodded, renamed, and only then listening (a connect before listen()
        # is refused).  No umask change: it is the whole process's, and other threads run.
        tmp = f"{path}.{os.getpid()}.tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        try:
            self.sock.bind(tmp)
            if group is not None:
                os.chown(tmp, -1, group)
            os.chmod(tmp, mode)
            os.rename(tmp, path)
        except BaseException:
            self.sock.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        self.sock.listen(ACCEPT_PER_POLL)
        self.sock.setblocking(False)

    def fileno(self) -> int:  # select() on the listening socket
        return self.sock.fileno()

    def poll(self, handler, limit: int = ACCEPT_PER_POLL) -> int:
        """Answer at most ``limit`` waiting clients with ``handler(request) -> reply``; how many."""
        n = 0
        while n < limit:
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
                    data = _read_line(conn, MAX_REQUEST, time.monotonic() + self.io_timeout)
                except (OSError, ValueError):
                    continue  # the client stalled or went away: it gets no answer
                try:
                    req = json.loads(data)
                    if not isinstance(req, dict):
                        raise TypeError("a request is a JSON object")
                    if req.get("v", PROTOCOL_VERSION) != PROTOCOL_VERSION:
                        reply = {"ok": False, "error": f"protocol version {req.get('v')!r}: this daemon "
                                                      f"speaks {PROTOCOL_VERSION}"}  # fmt: skip
                    elif self.verbs is not None and req.get("cmd") not in self.verbs:
                        reply = {"ok": False, "error": f"verb {req.get('cmd')} is not offered on this socket"}
                    else:
                        reply = handler(req)
                except (ValueError, KeyError, TypeError) as exc:
                    reply = {"ok": False, "error": f"bad request: {exc}"}
                except Exception as exc:  # noqa: BLE001 - one bad verb never stops the director
                    log.exception("control request %r failed", data[:200])
                    reply = {"ok": False, "error": f"the daemon failed to answer: {exc}"}
                reply = {"v": PROTOCOL_VERSION, **reply}
                conn.settimeout(self.io_timeout)
                with contextlib.suppress(OSError):  # the client gave up waiting
                    conn.sendall(json.dumps(reply, default=str).encode() + b"\n")
        return n

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def request(path: str, message: dict[str, Any], timeout: float = REPLY_TIMEOUT) -> dict[str, Any]:
    """Send one request to the daemon at ``path`` and return its reply.  OSError when
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
