"""The director's control channel: a Unix datagram socket, one JSON request per datagram.

``pylvs health force RIP[:PORT] up|down|auto`` sends ``{"cmd": "force", ...}`` and prints
the reply; the director answers from its control thread (``Director.handle_control``),
so a request never touches the dataplane thread.  Root only (the socket is 0600): it is
the control side of nanny's SIGUSR1/SIGUSR2/SIGHUP (reference 4.7), which pylvs, with one
process for every real server, cannot take as signals.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
from pathlib import Path
from typing import Any

MAX_REQUEST = 4096
REPLY_TIMEOUT = 5.0
FORCE_STATES = {"up": True, "down": False, "auto": None}


class ControlSocket:
    """The director's end: bound, non-blocking; ``poll(handler)`` answers what is queued."""

    def __init__(self, path: str) -> None:
        self.path = path
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a crashed director's socket: nobody can be bound to it any more
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        os.chmod(path, 0o600)
        self.sock.setblocking(False)

    def poll(self, handler) -> int:
        """Answer every queued request with ``handler(request) -> reply``; how many."""
        n = 0
        while True:
            try:
                data, peer = self.sock.recvfrom(MAX_REQUEST)
            except BlockingIOError:
                return n
            n += 1
            try:
                reply = handler(json.loads(data))
            except (ValueError, KeyError, TypeError) as exc:
                reply = {"ok": False, "error": f"bad request: {exc}"}
            if peer:
                with contextlib.suppress(OSError):  # the client gave up waiting
                    self.sock.sendto(json.dumps(reply, default=str).encode(), peer)

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def request(path: str, message: dict[str, Any], timeout: float = REPLY_TIMEOUT) -> dict[str, Any]:
    """Send one request to the director at ``path`` and return its reply."""
    with tempfile.TemporaryDirectory(prefix="pylvs-ctl-") as tmp, \
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:  # fmt: skip
        s.bind(os.path.join(tmp, "reply"))
        s.settimeout(timeout)
        s.sendto(json.dumps(message).encode(), path)
        return json.loads(s.recv(MAX_REQUEST))
