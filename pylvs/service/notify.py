"""Telling whoever started us how the start went: systemd (sd_notify) and, when
daemonized, the waiting parent (a pipe).

sd_notify is a datagram of ``KEY=VALUE`` lines to ``$NOTIFY_SOCKET`` (sd_notify(3); a
leading ``@`` names an abstract socket).  pylvs sends ``READY=1`` only once it forwards
(or, under pulse, stands by ready to), ``RELOADING=1`` with ``MONOTONIC_USEC`` when a
SIGHUP reload begins and ``READY=1`` when it ends (systemd 253's ``Type=notify-reload``
waits for that pair; Debian 12's systemd 252 does not: there ``systemctl reload`` returns
when ``ExecReload``'s kill does, and the unit's check before it is what stops a bad file),
``STOPPING=1``, a one-line ``STATUS=``, and ``WATCHDOG=1`` while the loops live when the
unit sets ``WatchdogSec=``.  keepalived's lib/systemd.c is the C reference.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections import deque
from collections.abc import Mapping

NOTIFY_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
SENT_KEPT = 64  # the last messages kept for tests and views (pings would grow a list forever)
READY_LINE = b"READY\n"  # to the daemonizing parent: it exits 0
EXIT_LINE = "EXIT {code}\n"  # to the daemonizing parent: it exits with this code


def child_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for processes we start (the director under pulse, active_cmd):
    systemd listens to the main process only, and a child's READY=1 would lie."""
    return {k: v for k, v in (os.environ if env is None else env).items() if k not in NOTIFY_ENV}


class Notifier:
    """sd_notify when ``NOTIFY_SOCKET`` is set, the parent's pipe when ``ready_fd`` is
    given, both or neither.  Every method is a no-op where nobody listens."""

    def __init__(self, ready_fd: int | None = None, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        addr = env.get("NOTIFY_SOCKET") or None
        if addr and addr.startswith("@"):
            addr = "\0" + addr[1:]
        self.addr = addr
        self.ready_fd = ready_fd
        self.watchdog_usec = 0
        pid = env.get("WATCHDOG_PID")
        if env.get("WATCHDOG_USEC") and (not pid or pid == str(os.getpid())):
            with contextlib.suppress(ValueError):
                self.watchdog_usec = int(env["WATCHDOG_USEC"])
        self.last_status = ""
        self.sent: deque[str] = deque(maxlen=SENT_KEPT)  # what went out, for tests

    @property
    def watchdog_interval(self) -> float:
        """How often to ping (half of WatchdogSec, as sd_watchdog_enabled(3) advises); 0 = off."""
        return self.watchdog_usec / 2e6

    def notify(self, *fields: str) -> None:
        if not self.addr:
            return
        message = "\n".join(fields)
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.sendto(message.encode(), self.addr)
        except OSError:
            return  # systemd gone or not listening: nothing to tell
        self.sent.append(message)

    def ready(self, status: str = "") -> None:
        self.notify("READY=1", *([f"STATUS={status}"] if status else []))
        self.last_status = status or self.last_status
        if self.ready_fd is not None:
            with contextlib.suppress(OSError):
                os.write(self.ready_fd, READY_LINE)
            self._close_pipe()

    def reloading(self) -> None:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading")

    def stopping(self) -> None:
        self.notify("STOPPING=1", "STATUS=stopping")

    def status(self, line: str) -> None:
        """A one-line summary; sent only when it changed."""
        if line != self.last_status:
            self.last_status = line
            self.notify(f"STATUS={line}")

    def watchdog(self) -> None:
        self.notify("WATCHDOG=1")

    def failed(self, code: int, reason: str = "") -> None:
        """The start failed: the daemonizing parent exits ``code``; systemd hears why."""
        if reason:
            self.notify(f"STATUS=failed: {reason}", f"EXIT_STATUS={code}")
        if self.ready_fd is not None:
            with contextlib.suppress(OSError):
                os.write(self.ready_fd, EXIT_LINE.format(code=code).encode())
            self._close_pipe()

    def _close_pipe(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.ready_fd)
        self.ready_fd = None
