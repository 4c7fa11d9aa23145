"""One instance per role per network namespace: an abstract Unix socket as the lock.

An abstract socket name (``@pylvs/lvs``) lives in the network namespace of the process
that binds it and disappears with the process, so the lock is scoped exactly as the
rules and addresses a director installs, and a killed daemon never leaves it held (no
stale lock file to guess about).  The holder answers each connection with one JSON line
saying who it is, so a second start can name it: "pylvs lvs is already running here (pid
1234, -c /etc/sysconfig/ha/lvs.cf)".

Taken before anything touches the kernel: whatever a start-up finds left over (rules,
addresses, XDP programs) then belongs to a dead owner and may be removed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import struct
import threading
import time
from typing import Any

ABSTRACT_PREFIX = "\0pylvs/"  # Linux abstract namespace: a leading NUL, no file
ASK_TIMEOUT = 1.0  # seconds a second start waits for the holder's answer
ANSWER_MAX = 4096


class AlreadyRunning(Exception):
    """Another process holds the role's lock in this network namespace."""

    def __init__(self, role: str, holder: dict[str, Any]) -> None:
        self.role, self.holder = role, holder
        who = f"pid {holder['pid']}" if holder.get("pid") else "another process"
        extra = f", -c {holder['config']}" if holder.get("config") else ""
        super().__init__(f"pylvs {role} is already running in this network namespace ({who}{extra}); "
                         "nothing was changed")  # fmt: skip


class InstanceLock:
    """``acquire()`` binds ``@pylvs/<role>`` or raises AlreadyRunning; ``release()``."""

    def __init__(self, role: str, info: dict[str, Any] | None = None) -> None:
        self.role = role
        self.name = ABSTRACT_PREFIX + role
        self.info = dict(info or {})
        self.sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    @property
    def held(self) -> bool:
        return self.sock is not None

    def acquire(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # close-on-exec: children do not inherit it
        try:
            s.bind(self.name)
        except OSError as exc:
            s.close()
            if exc.errno != errno.EADDRINUSE:
                raise
            raise AlreadyRunning(self.role, holder(self.role)) from None
        s.listen(8)
        self.sock = s
        self.info.update(pid=os.getpid(), role=self.role, started=time.time())
        self._thread = threading.Thread(target=self._answer, args=(s,), name=f"lock-{self.role}", daemon=True)
        self._thread.start()

    def _answer(self, s: socket.socket) -> None:
        """Tell whoever asks who holds the lock (a second start, `pylvs status`)."""
        while True:
            try:
                conn, _ = s.accept()
            except OSError:  # closed by release()
                return
            with conn, contextlib.suppress(OSError):
                conn.settimeout(ASK_TIMEOUT)
                conn.sendall(json.dumps(self.info, default=str).encode() + b"\n")

    def release(self) -> None:
        if self.sock is None:
            return
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept()
        self.sock.close()
        self.sock = None
        if self._thread is not None:
            self._thread.join(ASK_TIMEOUT)
            self._thread = None

    def __enter__(self) -> InstanceLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def holder(role: str) -> dict[str, Any] | None:
    """Who holds ``role``'s lock in this network namespace: its JSON line (pid, config,
    started), ``{"pid": N}`` from the socket's credentials if it does not answer, or None
    when nobody holds it."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(ASK_TIMEOUT)
        try:
            s.connect(ABSTRACT_PREFIX + role)
        except (ConnectionRefusedError, FileNotFoundError):
            return None
        except OSError:
            return {}
        pid = _peer_pid(s)
        data = b""
        with contextlib.suppress(OSError):
            while not data.endswith(b"\n") and len(data) < ANSWER_MAX:
                chunk = s.recv(ANSWER_MAX)
                if not chunk:
                    break
                data += chunk
    try:
        return json.loads(data)
    except ValueError:
        return {"pid": pid} if pid else {}


def _peer_pid(s: socket.socket) -> int:
    with contextlib.suppress(OSError):
        pid, _uid, _gid = struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        return pid
    return 0
