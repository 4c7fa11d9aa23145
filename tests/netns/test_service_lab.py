"""Running pylvs as a service, as an operator starts it: the daemon that tells the truth,
one instance per namespace, logs, sd_notify (issue 12's "Why", one test each).

Daemons here are started with ``ip netns exec`` in a lab director's namespace, without
--nodaemon where the test is about daemon mode: the command returns once the daemon runs
(or with its error), and the daemon itself is found through its PID file and ended by
that PID when the test ends, whatever happened.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pylvs.lab import netns
from pylvs.lab import topology as topo
from pylvs.lab.director import LabDirector
from pylvs.lab.lvscf import lvs_cf

START_TIMEOUT = 240.0  # a daemon start includes the first health round and the JIT warm-up
STOP_TIMEOUT = 20.0
BROKEN_LINE = 3  # the line the broken file's error must name


def pylvs(*args: str) -> list[str]:
    return [sys.executable, "-m", "pylvs", *args]


def run_in(lab, host: str, argv: list[str], *, cwd: Path, env: dict | None = None,
           timeout: float = START_TIMEOUT) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return subprocess.run(netns.exec_argv(lab.host(host).netns, argv), cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env, check=False)  # fmt: skip


def _is_pylvs(pid: int) -> bool:
    try:
        return b"pylvs" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def end(pid: int) -> None:
    """SIGTERM a daemon this test started (SIGKILL if it does not go)."""
    if not _is_pylvs(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while _is_pylvs(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _is_pylvs(pid):
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def pidfiles():
    """PID files of daemons started by the test: each one is ended afterwards."""
    files: list[Path] = []
    yield files
    for f in files:
        with contextlib.suppress(OSError, ValueError):
            end(int(f.read_text()))


def served(lab) -> str:
    reply = lab.http_get("client1", topo.VIP, timeout=3.0)
    assert reply.status == 200
    return reply.body.decode().strip()


def test_daemon_with_a_relative_path_forwards_and_cleans_up(make_lab, tmp_path, pidfiles):
    lab = make_lab("nat", real_servers=1)
    (tmp_path / "lvs.cf").write_text(lvs_cf(lab))
    rt = tmp_path / "run"
    pidfile = rt / "lvs.pid"
    pidfiles.append(pidfile)
    got = run_in(lab, "dir1", pylvs("lvs", "-c", "lvs.cf", "--runtime-dir", "run", "--logfile", "lvs.log"),
                 cwd=tmp_path)  # fmt: skip
    assert got.returncode == 0, got.stderr
    pid = int(pidfile.read_text())  # written only once running
    assert _is_pylvs(pid)
    assert served(lab) == lab.real_servers[0].name  # the relative path was read: it forwards
    assert (rt / "lvs.status.json").exists() and (rt / "lvs.ctl").exists()
    end(pid)
    assert not pidfile.exists()  # removed on exit
    assert "stopped" in (tmp_path / "lvs.log").read_text()


def test_broken_file_in_daemon_mode_exits_4_with_the_located_error(make_lab, tmp_path):
    lab = make_lab("nat", real_servers=1)
    lines = lvs_cf(lab).splitlines()
    lines.insert(BROKEN_LINE - 1, "no_such_keyword = 1")
    (tmp_path / "lvs.cf").write_text("\n".join(lines) + "\n")
    got = run_in(lab, "dir1", pylvs("lvs", "-c", "lvs.cf", "--runtime-dir", "run"), cwd=tmp_path)
    assert got.returncode == 4, got.stderr
    assert f"lvs.cf:{BROKEN_LINE}:" in got.stderr and "no_such_keyword" in got.stderr
    assert "has errors: not started" in got.stderr
    assert not (tmp_path / "run" / "lvs.pid").exists()
    # nothing was installed: the VIP is not on the director
    assert topo.VIP not in lab.run("dir1", ["ip", "-o", "addr"]).stdout


def test_a_second_instance_is_refused_and_the_first_keeps_serving(make_lab, tmp_path):
    lab = make_lab("nat", real_servers=1)
    first = LabDirector(lab, tmp_path / "first", lvs_cf(lab))
    try:
        name = served(lab)
        for mode in ((), ("--nodaemon",)):  # the daemon's parent and the foreground both say so
            got = run_in(lab, "dir1", pylvs("lvs", "-c", str(first.cf), "--runtime-dir", "second", *mode),
                         cwd=tmp_path, timeout=60)  # fmt: skip
            assert got.returncode == 1, got.stderr
            assert f"pylvs lvs is already running in this network namespace (pid {first.pid}" in got.stderr
        assert "removed stale" not in first.log()
        for _ in range(5):  # traffic continues through the first
            assert served(lab) == name
        assert first.status()["role"] == "active"
    finally:
        assert first.stop() == 0


def test_logs_reach_the_logfile_and_syslog(make_lab, tmp_path, pidfiles):
    lab = make_lab("nat", real_servers=1)
    (tmp_path / "lvs.cf").write_text(lvs_cf(lab))
    syslog = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # a stand-in for /dev/log
    syslog.bind(str(tmp_path / "log.sock"))
    syslog.settimeout(START_TIMEOUT)
    env = {**os.environ, "PYLVS_SYSLOG_SOCKET": str(tmp_path / "log.sock")}
    pidfiles.append(tmp_path / "run" / "lvs.pid")
    got = run_in(lab, "dir1", pylvs("lvs", "-c", "lvs.cf", "--runtime-dir", "run", "--logfile", "lvs.log"),
                 cwd=tmp_path, env=env)  # fmt: skip
    assert got.returncode == 0, got.stderr
    pid = int((tmp_path / "run" / "lvs.pid").read_text())
    text = (tmp_path / "lvs.log").read_text()
    assert "started 1 virtual service(s)" in text and "active: forwarding" in text
    lines = []
    while not any("started 1 virtual service(s)" in x for x in lines):
        lines.append(syslog.recv(4096).decode())
    # <30> = facility daemon (3) * 8 + info (6); the ident names the role and the PID
    assert any(x.startswith(f"<30>lvs[{pid}]: started 1 virtual service(s)") for x in lines), lines
    end(pid)
    syslog.close()


def notifications(sock: socket.socket, until: str, timeout: float) -> list[str]:
    """Datagrams on our NOTIFY_SOCKET until one contains ``until``."""
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            break
        if until in got[-1]:
            return got
    raise AssertionError(f"no {until!r} within {timeout:.0f} s; got {got}")


def test_sd_notify_ready_reloading_watchdog_stopping(make_lab, tmp_path):
    lab = make_lab("nat", real_servers=1)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "1000000"}
    (tmp_path / "lvs.cf").write_text(lvs_cf(lab))
    argv = pylvs("lvs", "-c", str(tmp_path / "lvs.cf"), "--nodaemon", "--runtime-dir", str(tmp_path / "run"))
    with open(tmp_path / "lvs.log", "wb") as log:
        proc = lab.popen("dir1", argv, what="lvs", stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        ready = notifications(sock, "READY=1", START_TIMEOUT)
        assert "STATUS=active: forwarding, 1 virtual service(s), generation 1" in ready[-1]
        served(lab)  # READY meant it: the first request after it is served
        assert "WATCHDOG=1" in notifications(sock, "WATCHDOG=1", 5)[-1]  # every WatchdogSec/2 = 0.5 s
        os.kill(proc.pid, signal.SIGHUP)
        reload = notifications(sock, "READY=1", 30)
        start = next(m for m in reload if "RELOADING=1" in m)
        usec = int(start.split("MONOTONIC_USEC=")[1].split()[0])
        assert abs(usec / 1e6 - time.clock_gettime(time.CLOCK_MONOTONIC)) < 30  # CLOCK_MONOTONIC µs
        assert reload.index(start) < len(reload) - 1  # READY=1 after RELOADING=1
        os.kill(proc.pid, signal.SIGTERM)
        assert "STOPPING=1" in "".join(notifications(sock, "STOPPING=1", STOP_TIMEOUT))
        assert proc.wait(STOP_TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()


def test_pulse_daemon_returns_once_its_director_stands_ready(make_lab, tmp_path, pidfiles):
    lab = make_lab("nat", real_servers=1, directors=2)
    fast = "keepalive = 0.2\ndeadtime = 0.6\n"
    (tmp_path / "lvs.cf").write_text(lvs_cf(lab, backup=True, extra_globals=fast))
    pidfiles.append(tmp_path / "run" / "pulse.pid")
    got = run_in(lab, "dir1", pylvs("pulse", "-c", "lvs.cf", "--runtime-dir", "run", "--logfile", "pulse.log"),
                 cwd=tmp_path)  # fmt: skip
    assert got.returncode == 0, got.stderr
    pid = int((tmp_path / "run" / "pulse.pid").read_text())
    # the director (pulse's child, same runtime directory) was ready when the command returned
    lvs = json.loads((tmp_path / "run" / "lvs.status.json").read_text())
    assert lvs["role"] in ("standby", "active") and lvs["managed"]
    again = run_in(lab, "dir1", pylvs("pulse", "-c", "lvs.cf", "--runtime-dir", "other"), cwd=tmp_path, timeout=60)
    assert again.returncode == 1 and f"pylvs pulse is already running in this network namespace (pid {pid}" \
        in again.stderr, again.stderr  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # alone, dir1 takes over after deadtime
        with contextlib.suppress(OSError, AssertionError):
            served(lab)
            break
        time.sleep(0.2)
    assert served(lab) == lab.real_servers[0].name
    end(pid)
    assert not (tmp_path / "run" / "pulse.pid").exists()
    assert not (tmp_path / "run" / "lvs.pid").exists()  # the director went with pulse


def test_pulse_notifies_systemd_alone_once_its_director_is_ready(make_lab, tmp_path):
    lab = make_lab("nat", real_servers=1, directors=2)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)  # each datagram says which PID sent it
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "1000000"}
    (tmp_path / "lvs.cf").write_text(lvs_cf(lab, backup=True, extra_globals="keepalive = 0.2\ndeadtime = 0.6\n"))
    rt = tmp_path / "run"
    argv = pylvs("pulse", "-c", str(tmp_path / "lvs.cf"), "--nodaemon", "--runtime-dir", str(rt))
    with open(tmp_path / "pulse.log", "wb") as log:
        proc = lab.popen("dir1", argv, what="pulse", stdout=log, stderr=subprocess.STDOUT, env=env)
    senders: set[int] = set()
    got: list[str] = []
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not any("STOPPING=1" in m for m in got) and time.monotonic() < deadline:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            data, anc, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(12))
            for level, kind, cred in anc:
                if (level, kind) == (socket.SOL_SOCKET, socket.SCM_CREDENTIALS):
                    senders.add(int.from_bytes(cred[:4], "little"))
            got.append(data.decode())
            if "READY=1" in got[-1] and len([m for m in got if "READY=1" in m]) == 1:
                # READY only once the director stands ready: its status file says so already
                lvs = json.loads((rt / "lvs.status.json").read_text())
                assert lvs["role"] in ("standby", "active")
            if "WATCHDOG=1" in got[-1] and proc.poll() is None and not any("STOPPING" in m for m in got):
                os.kill(proc.pid, signal.SIGTERM)
        assert any(m.startswith("READY=1\nSTATUS=primary,") for m in got), got
        assert any("WATCHDOG=1" in m for m in got) and any("STOPPING=1" in m for m in got), got
        assert senders == {proc.pid}, (senders, proc.pid)  # never the director: systemd listens to pulse
        assert proc.wait(STOP_TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()


def test_defaults_live_in_the_namespace_s_own_runtime_directory(make_lab, tmp_path):
    """No path flag at all: the director, `pylvs status` and `pylvs health force` meet in
    /run/pylvs/<netns> (the lab's namespace names are unique per run), which goes with the
    director."""
    from pylvs.service.paths import RUN_ROOT

    lab = make_lab("nat", real_servers=1)
    rt = RUN_ROOT / lab.host("dir1").netns
    (tmp_path / "lvs.cf").write_text(lvs_cf(lab))
    with open(tmp_path / "lvs.log", "wb") as log:
        proc = lab.popen("dir1", pylvs("lvs", "-c", str(tmp_path / "lvs.cf"), "--nodaemon"), what="lvs",
                         stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not (rt / "lvs.pid").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert int((rt / "lvs.pid").read_text()) == proc.pid, (tmp_path / "lvs.log").read_text()
        assert (rt / "lvs.status.json").exists() and (rt / "lvs.ctl").exists()
        shown = lab.run("dir1", pylvs("status"), check=False, timeout=60)
        assert shown.returncode == 0 and f"{lab.real_servers[0].ip()}:80" in shown.stdout, shown.stdout + shown.stderr
        forced = lab.run("dir1", pylvs("health", "force", f"{lab.real_servers[0].ip()}:80", "auto"), timeout=60)
        assert "forced auto" in forced.stdout
        assert served(lab) == lab.real_servers[0].name
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(STOP_TIMEOUT) == 0
    assert not rt.exists()  # its last file gone, the namespace's directory goes too
