"""The web tool's side of the control sockets: the director's and pulse's web sockets
(``pylvs lvs --web-group``, ``pylvs pulse --web-group``), which offer this process only
``status``, ``reload`` and ``server.state`` (pylvs.control.WEB_VERBS).  Every view of the
running router comes from here: one control API, not a second copy of the state."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from pylvs import control

REQUEST_TIMEOUT = 10.0  # a status is small; a reload compiles the tables
RELOAD_WAIT = 20.0  # under pulse: how long the director's own reload may take to show
POLL = 0.2


class Unavailable(Exception):
    """No daemon answered on a socket (not running, or no permission)."""


@dataclass
class ReloadResult:
    ok: bool
    message: str
    generation: int | None = None


class Control:
    def __init__(self, director: str, pulse: str | None = None) -> None:
        self.director_path = director
        self.pulse_path = pulse

    def _ask(self, path: str | None, msg: dict[str, Any], timeout: float = REQUEST_TIMEOUT) -> dict[str, Any]:
        if not path:
            raise Unavailable("no socket configured")
        try:
            return control.request(path, msg, timeout=timeout)
        except FileNotFoundError:
            raise Unavailable(f"{path}: not running (no socket)") from None
        except PermissionError:
            raise Unavailable(f"{path}: permission denied (is this user in the socket's group, "
                              "pylvs lvs/pulse --web-group?)") from None  # fmt: skip
        except (OSError, control.ControlError) as exc:
            raise Unavailable(f"{path}: {exc}") from None

    def director_status(self) -> dict[str, Any]:
        reply = self._ask(self.director_path, {"cmd": "status"})
        if not reply.get("ok"):
            raise Unavailable(f"{self.director_path}: {reply.get('error')}")
        return reply["status"]

    def pulse_status(self) -> dict[str, Any] | None:
        """Pulse's status, or None when no pulse runs here (a director alone)."""
        if not self.pulse_path or not os.path.exists(self.pulse_path):
            return None
        reply = self._ask(self.pulse_path, {"cmd": "status"})
        return reply.get("status") if reply.get("ok") else None

    def server_state(self, virtual: str, server: str, state: str) -> dict[str, Any]:
        return self._ask(self.director_path, {"cmd": "server.state", "virtual": virtual, "server": server,
                                              "state": state})  # fmt: skip

    def reload(self) -> ReloadResult:
        """Make the running router read lvs.cf again.  Under pulse, pulse reloads (it reads
        the heartbeat settings too) and signals its director; the director's own result is
        then read from its status.  A director alone reloads at once and says how it went."""
        if self.pulse_path and os.path.exists(self.pulse_path):
            return self._reload_under_pulse()
        reply = self._ask(self.director_path, {"cmd": "reload"}, timeout=RELOAD_WAIT)
        if reply.get("ok"):
            return ReloadResult(True, f"the director reloaded: generation {reply.get('generation')}",
                                reply.get("generation"))  # fmt: skip
        return ReloadResult(False, f"the director refused the file: {reply.get('error')}")

    def _reload_under_pulse(self) -> ReloadResult:
        try:
            before = self.director_status()
        except Unavailable:
            before = None
        reply = self._ask(self.pulse_path, {"cmd": "reload"})
        if not reply.get("ok"):
            return ReloadResult(False, f"pulse refused the file: {reply.get('error')}")
        if before is None:
            return ReloadResult(True, "pulse reloaded; its director is not running (pulse starts it when active)")
        seen = (before.get("reloads"), before.get("failed_reloads"))
        deadline = time.monotonic() + RELOAD_WAIT
        while time.monotonic() < deadline:
            time.sleep(POLL)
            try:
                now = self.director_status()
            except Unavailable:
                continue
            if (now.get("reloads"), now.get("failed_reloads")) != seen:
                last = now.get("last_reload") or {}
                if last.get("ok"):
                    return ReloadResult(True, f"pulse and its director reloaded: generation {now.get('generation')}",
                                        now.get("generation"))  # fmt: skip
                return ReloadResult(False, f"pulse reloaded, the director refused the file: {last.get('error')}")
        return ReloadResult(False, f"pulse reloaded; the director did not report its reload within {RELOAD_WAIT:.0f} s")
