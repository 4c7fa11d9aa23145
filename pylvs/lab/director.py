"""``pylvs lvs`` and ``pylvs pulse`` running in a lab director's namespace, started and
stopped by PID.

Shared by the end-to-end tests, ``make demo`` and the benchmarks: start them as an
operator would (``python -m pylvs lvs|pulse -c FILE --nodaemon``), wait for the status
file, send real SIGHUPs, SIGTERMs and (a box that fails) SIGKILLs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pylvs.control import request
from pylvs.director import read_status

# `--io auto` of the labs' directors: PYLVS_LAB_IO=afxdp runs every lab that does not
# name its adapter on AF_XDP instead (`make test-afxdp`).
LAB_IO = os.environ.get("PYLVS_LAB_IO", "auto")
START_TIMEOUT = 180.0  # a cold numba cache compiles the engine at start (about a minute on CI)
RELOAD_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0
POLL = 0.05


class _LabDaemon:
    """What both lab daemons share: the process, its log file and its status file."""

    proc: subprocess.Popen
    log_path: Path
    status_path: Path
    LOG_TAIL = 6000  # characters of the log shown in errors
    what = "the daemon"  # how errors name it

    control_path: Path  # the root control socket
    web_control_path: Path | None = None  # the web tool's, when --web-group was passed

    @property
    def pid(self) -> int:
        return self.proc.pid

    def control(self, msg: dict[str, Any], *, web: bool = False, timeout: float = 30.0) -> dict[str, Any]:
        """One request on the daemon's control socket (``web``: on its web socket)."""
        path = self.web_control_path if web else self.control_path
        if path is None:
            raise RuntimeError(f"{self.what} has no web socket: start it with --web-group")
        return request(str(path), msg, timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-self.LOG_TAIL:]

    def status(self) -> dict[str, Any]:
        return read_status(str(self.status_path))

    def wait_for(self, cond: Any, timeout: float, what: str) -> dict[str, Any]:
        """Poll the status file until ``cond(status)``; the status, or RuntimeError saying what."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError, ValueError, KeyError):
                s = self.status()
                if cond(s):
                    return s
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.what} exited {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.what}: not {what} after {timeout:.0f} s:\n{self.log()}")
            time.sleep(POLL)

    def _kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> int:
        """SIGTERM (SIGKILL after STOP_TIMEOUT); the exit code."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._kill()
        return self.proc.returncode


def _option(extra: tuple[str, ...], flag: str) -> str | None:
    """The value of ``flag`` in ``extra`` (``--flag VALUE`` or ``--flag=VALUE``)."""
    for i, arg in enumerate(extra):
        if arg == flag and i + 1 < len(extra):
            return extra[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def _web_path(extra: tuple[str, ...], flag: str, default: Path) -> Path | None:
    """Where a web socket is with ``extra``'s options (None without --web-group)."""
    if _option(extra, "--web-group") is None:
        return None
    return Path(_option(extra, flag) or default)


def lab_io(io: str) -> str:
    """The adapter a lab director runs: ``io``, or PYLVS_LAB_IO's when ``io`` is auto."""
    return LAB_IO if io == "auto" else io


class LabDirector(_LabDaemon):
    def __init__(self, lab: Any, workdir: Path, text: str | None, *, io: str = "auto", host: str = "dir1",
                 capacity: int = 65536, extra: tuple[str, ...] = ()) -> None:  # fmt: skip
        """``text`` None: ``--bare``, no lvs.cf (pylvsadm configures it)."""
        self.lab, self.host = lab, host
        self.what = f"pylvs lvs on {host}"
        workdir.mkdir(parents=True, exist_ok=True)
        self.cf = workdir / "lvs.cf"
        if text is not None:
            self.cf.write_text(text)
        self.status_path = workdir / "lvs.status.json"
        self.status_path.unlink(missing_ok=True)
        self.log_path = workdir / "lvs.log"
        self.control_path = workdir / "lvs.ctl"  # per director: two labs never share one
        self.web_control_path = _web_path(extra, "--web-control", workdir / "lvs.web.ctl")
        source = ["-c", str(self.cf)] if text is not None else ["--bare"]
        argv = [sys.executable, "-m", "pylvs", "lvs", *source, "--nodaemon", "--io", lab_io(io),
                "--runtime-dir", str(workdir), "--status", str(self.status_path), "--control", str(self.control_path),
                "--capacity", str(capacity), *extra]  # fmt: skip
        with open(self.log_path, "wb") as log:
            self.proc = lab.popen(host, argv, what="lvs", stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while not self.status_path.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"pylvs lvs exited {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"pylvs lvs not ready after {START_TIMEOUT:.0f} s:\n{self.log()}")
            time.sleep(POLL)

    def reload(self, text: str) -> dict[str, Any]:
        """Write the file, SIGHUP, and return the status once the director has acted."""
        before = self.status()
        self.cf.write_text(text)
        os.kill(self.proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + RELOAD_TIMEOUT
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):  # replaced between open and read
                s = self.status()
                if (s["reloads"], s["failed_reloads"]) != (before["reloads"], before["failed_reloads"]):
                    return s
            time.sleep(POLL)
        raise RuntimeError(f"no reload within {RELOAD_TIMEOUT:.0f} s:\n{self.log()}")

    def pylvsadm(self, *args: str, stdin: str | None = None, timeout: float = 60.0) -> subprocess.CompletedProcess:
        """``pylvsadm ARGS`` in the director's namespace, against this director."""
        argv = ["env", f"PYLVS_CONTROL={self.control_path}", sys.executable, "-m", "pylvs", "ipvsadm", *args]
        return self.lab.run(self.host, argv, input=stdin, timeout=timeout, check=False)



def _children(pid: int) -> list[int]:
    """The children of ``pid`` (from /proc), for a kill that must not miss one."""
    out: list[int] = []
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
    return out


class LabPulse(_LabDaemon):
    """``pylvs pulse`` on one lab router (dir1 or dir2), with its director as its child.
    Files live in ``workdir/<host>/``: lvs.cf, pulse.log (pulse and director), the status
    files and control sockets of both."""

    def __init__(self, lab: Any, workdir: Path, text: str, *, host: str, io: str = "auto",
                 forceactive: bool = False, wait: bool = True, extra: tuple[str, ...] = ()) -> None:  # fmt: skip
        self.lab, self.host = lab, host
        self.what = f"pulse on {host}"
        self.dir = workdir / host
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cf = self.dir / "lvs.cf"
        if text:
            self.cf.write_text(text)
        self.status_path = self.dir / "pulse.status.json"
        self.lvs_status_path = self.dir / "lvs.status.json"
        for p in (self.status_path, self.lvs_status_path):
            p.unlink(missing_ok=True)
        self.log_path = self.dir / "pulse.log"
        self.control_path = self.dir / "pulse.ctl"  # pulse's own; the director's is lvs_control_path
        self.lvs_control_path = self.dir / "lvs.ctl"
        self.web_control_path = _web_path(extra, "--web-control", self.dir / "pulse.web.ctl")
        self.lvs_web_control_path = _web_path(extra, "--lvs-web-control", self.dir / "lvs.web.ctl")
        argv = [sys.executable, "-m", "pylvs", "pulse", "-c", str(self.cf), "--nodaemon", "--io", lab_io(io),
                "--runtime-dir", str(self.dir), "--control", str(self.control_path),
                "--status", str(self.status_path), "--lvs-status", str(self.lvs_status_path),
                "--lvs-control", str(self.lvs_control_path), *(["--forceactive"] if forceactive else []),
                *extra]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self.proc = lab.popen(host, argv, what="pulse", stdout=log, stderr=subprocess.STDOUT)
        if wait:
            self.wait_for(lambda s: s["director"]["role"] in ("standby", "active"), START_TIMEOUT,
                          "its director ready")  # fmt: skip

    def lvs_status(self) -> dict[str, Any]:
        return read_status(str(self.lvs_status_path))

    def lvs_control(self, msg: dict[str, Any], *, web: bool = False, timeout: float = 30.0) -> dict[str, Any]:
        """One request to pulse's director (``web``: on its web socket)."""
        path = self.lvs_web_control_path if web else self.lvs_control_path
        if path is None:
            raise RuntimeError(f"{self.what} has no web socket: start it with --web-group")
        return request(str(path), msg, timeout=timeout)

    def kill(self) -> None:
        """The box fails: SIGKILL pulse and its director at once (nothing cleans up).
        Both are stopped first: killed one after the other, the director would get
        pulse's PR_SET_PDEATHSIG SIGTERM in between and tidy up (remove the VIP)."""
        pids = [self.proc.pid, *_children(self.proc.pid)]
        with contextlib.suppress(OSError, ValueError, KeyError):
            pids.append(self.status()["director"]["pid"])
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            for pid in dict.fromkeys(p for p in pids if p):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
        self.proc.wait()  # the director, orphaned, is reaped by init

    def _kill(self) -> None:
        self.kill()
