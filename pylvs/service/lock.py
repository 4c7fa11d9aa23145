"""One instance per role per network namespace.

The lock is ``flock`` on ``/run/pylvs/lock/<role>.net<inode>`` (root only), keyed by the
inode of this process's network namespace: scoped exactly as the rules and addresses a
director installs, released by the kernel when the holder dies (a killed daemon never
leaves it held; its file stays, unlocked, and is reused), and out of reach of other users;
a clean release removes the file.  Beside it the holder binds the
abstract Unix socket ``@pylvs/<role>`` (per namespace too) and answers each connection
with one JSON line saying who it is, so a second start can name it: "pylvs lvs is already
running here (pid 1234, -c /etc/sysconfig/ha/lvs.cf)".  The socket only informs: any
user may bind an abstract name, so it never decides who holds the lock.

Taken before anything touches the kernel: whatever a start-up finds left over (rules,
addresses, XDP programs) then belongs to a dead owner and may be removed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

ABSTRACT_PREFIX = "\0pylvs/"  # Linux abstract namespace: a leading NUL, no file
LOCK_DIR = Path("/run/pylvs/lock")  # fixed: --runtime-dir must not lead around the lock
OWN_NETNS = "/proc/self/ns/net"
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

    def __init__(self, role: str, info: dict[str, Any] | None = None, lock_dir: Path = LOCK_DIR) -> None:
        self.role = role
        self.name = ABSTRACT_PREFIX + role
        self.info = dict(info or {})
        self.path = lock_dir / f"{role}.net{os.stat(OWN_NETNS).st_ino}"
        self.fd: int | None = None
        self.sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    @property
    def held(self) -> bool:
        return self.fd is not None

    def acquire(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise AlreadyRunning(self.role, holder(self.role) or {}) from None
            if _same_file(fd, self.path):
                break
            os.close(fd)  # the holder before us removed it as we opened it: take the new one
        self.fd = fd
        self.info.update(pid=os.getpid(), role=self.role, started=time.time())
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # close-on-exec: children do not inherit it
        try:
            s.bind(self.name)
        except OSError as exc:  # a stray binder: we hold the lock all the same, only nobody can ask us
            s.close()
            if exc.errno != errno.EADDRINUSE:
                raise
            return
        s.listen(8)
        self.sock = s
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
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept()
            self.sock.close()
            self.sock = None
        if self._thread is not None:
            self._thread.join(ASK_TIMEOUT)
            self._thread = None
        if self.fd is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()  # still locked: whoever opened it meanwhile sees it gone and retries
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> InstanceLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def remove_unheld_locks(netns: str | os.PathLike[str], lock_dir: Path = LOCK_DIR) -> list[Path]:
    """Remove the lock files of the namespace at ``netns`` (``/run/netns/NAME``) that
    nobody holds: a killed daemon's, before the namespace goes (its inode number will be
    reused).  A held one is left alone."""
    ino = os.stat(netns).st_ino
    removed = []
    for path in lock_dir.glob(f"*.net{ino}"):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if _same_file(fd, path):
                path.unlink()
                removed.append(path)
        except BlockingIOError:
            pass  # a live holder
        finally:
            os.close(fd)
    return removed


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
