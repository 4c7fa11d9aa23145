"""Health checks end to end: `pylvs lvs` with its nanny role, real servers, a real client.

Checks that the tests switch by hand use a program check reading a flag file per real
server (``send_program = "tests/health_programs/flag.sh DIR %h"``, ``expect = "up"``): the server itself keeps
serving, so established connections can be watched while its check fails.  Timing
bounds follow nanny's rules (reference 4.4): one failed check takes a server out within
one interval; ``reentry // timeout`` passing checks bring it back.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from waits import wait_for

from pylvs.lab import topology as topo
from pylvs.lab.director import LabDirector
from pylvs.lab.lvscf import Service, lvs_cf
from pylvs.lab.probes import http_keepalive_get

PROGRAMS = Path(__file__).resolve().parents[1] / "health_programs"
INTERVAL = 2  # lvs.cf timeout: the check interval and the probe limit, seconds
SLACK = 3.0  # scheduling, probe and recompile time on a shared 2-vCPU machine


def check_of(d: LabDirector, address: str, service: str | None = None) -> dict:
    return next(c for c in d.status()["health"]
                if c["address"].split(":")[0] == address and (service is None or c["service"] == service))


def served_by(lab, port=topo.HTTP_PORT) -> str:
    return lab.http_get("client1", topo.VIP, port).body.decode().strip()


class Flags:
    """One flag file per real server, read by the program check."""

    def __init__(self, path: Path, lab):
        self.dir = path
        self.dir.mkdir(parents=True, exist_ok=True)
        for rip in lab.rips:
            self.set(rip, True)

    def set(self, rip: str, up: bool) -> None:
        (self.dir / rip).write_text("up\n" if up else "down\n")

    @property
    def program(self) -> str:
        return f"{PROGRAMS}/flag.sh {self.dir} %h"


def test_a_stopped_server_leaves_within_an_interval_and_returns_after_reentry(make_lab, director):
    lab = make_lab("nat", real_servers=3)
    reentry = 3 * INTERVAL  # N = 3 passing checks
    d = director(lab, lvs_cf(lab, [Service(scheduler="rr", timeout=INTERVAL, reentry=reentry)]))
    assert {served_by(lab) for _ in range(6)} == {"rs1", "rs2", "rs3"}
    proc = next(p for p in lab.processes if p.host == "rs1" and p.what == "servers")
    os.kill(proc.pid, signal.SIGTERM)
    proc.popen.wait(10)
    time.sleep(INTERVAL + SLACK)  # one check interval (plus the probe and the swap)
    answers = Counter(served_by(lab) for _ in range(30))  # every new connection succeeds
    assert answers.keys() == {"rs2", "rs3"}, answers
    assert check_of(d, lab.rips[0])["up"] is False
    # Back: not before N passing checks, and in by N+1 intervals.
    restarted = time.monotonic()
    lab.popen("rs1", [sys.executable, "-m", "pylvs.lab.servers", "--name", "rs1"], what="servers",
              stdout=subprocess.DEVNULL)  # fmt: skip
    seen = wait_for(lambda: "rs1" in {served_by(lab) for _ in range(3)} and time.monotonic(),
                    reentry + INTERVAL + 2 * SLACK, "rs1 back")
    assert seen - restarted >= (3 - 1) * INTERVAL  # three passes span at least two intervals


def test_expect_regex_and_program_checks(make_lab, director):
    lab = make_lab("nat", real_servers=1)
    rs = topo.HTTP_PORT
    d = director(lab, lvs_cf(lab, [
        Service(name="regex", port=80, scheduler="rr", send="GET / HTTP/1.0\\r\\n\\r\\n",
                expect="HTTP/1\\.[01] 200", use_regex=True, timeout=INTERVAL),
        Service(name="wrong", port=81, rport=rs, scheduler="rr", send="GET / HTTP/1.0\\r\\n\\r\\n",
                expect="SMTP", timeout=INTERVAL),
        Service(name="program", port=82, rport=rs, scheduler="rr",
                send_program=f"{PROGRAMS}/print_word.sh OK", expect="OK", timeout=INTERVAL),
        Service(name="hang", port=83, rport=rs, scheduler="rr",
                send_program=f"{PROGRAMS}/hang.sh /tmp/pylvs-hang-{os.getpid()}-%h", expect="OK",
                timeout=INTERVAL),
    ]))
    rip = lab.rips[0]
    assert check_of(d, rip, "regex")["up"] and check_of(d, rip, "program")["up"]
    wrong, hang = check_of(d, rip, "wrong"), check_of(d, rip, "hang")
    assert (wrong["up"], wrong["reason"]) == (False, "expect mismatch")
    assert (hang["up"], hang["reason"]) == (False, "timeout")
    assert hang["duration"] >= INTERVAL  # killed at the time limit, not before
    assert served_by(lab, 80) == "rs1" and served_by(lab, 82) == "rs1"
    with lab.socket("client1") as s, pytest.raises(ConnectionRefusedError):  # no server left: ICMP
        s.settimeout(3)
        s.connect((topo.VIP, 81))
    pids = Path(f"/tmp/pylvs-hang-{os.getpid()}-{rip}")
    if pids.exists():  # the hung program and its child were killed with their group
        for pid in map(int, pids.read_text().split()):
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
        pids.unlink()


def test_quiesce_keeps_established_connections_and_slow_start_climbs(make_lab, director, tmp_path):
    lab = make_lab("nat", real_servers=2)
    flags = Flags(tmp_path / "flags", lab)
    d = director(lab, lvs_cf(lab, [Service(scheduler="wlc", weights=[64, 64], quiesce_server=True,
                                           send_program=flags.program, expect="up", timeout=INTERVAL,
                                           reentry=INTERVAL)]))  # fmt: skip
    conn = lab.socket("client1")
    conn.settimeout(5)
    conn.connect((topo.VIP, topo.HTTP_PORT))
    try:
        owner = ask(conn)
        rip = lab.rips[int(owner[-1]) - 1]
        flags.set(rip, False)
        wait_for(lambda: check_of(d, rip)["quiesced"], INTERVAL + SLACK, f"{owner} quiesced")
        dest = wait_for(lambda: dest_of(d, rip), SLACK, "its row in the table")
        assert dest["weight"] == 0  # quiesced: in the table at weight 0, not removed
        assert ask(conn) == owner  # the established connection goes on
        assert owner not in {served_by(lab) for _ in range(6)}
        flags.set(rip, True)
        first = wait_for(lambda: (w := dest_of(d, rip)["weight"]) > 0 and w, INTERVAL + SLACK, "back")
        assert first == 64 >> 5  # slow start: W >> 5 ...
        # ... and the service's least-connection counts restart at 0 (the held connection
        # and the finished ones no longer count), so the returning server is not flooded.
        wait_for(lambda: all(x["active"] == x["inactive"] == 0 for svc in d.status()["services"]
                             for x in svc["dests"]), SLACK, "counts reset")  # fmt: skip
        assert ask(conn) == owner  # still served
        wait_for(lambda: dest_of(d, rip)["weight"] > first, 20 + 2 * INTERVAL + SLACK, "a doubling")
        assert dest_of(d, rip)["weight"] == 2 * first  # ... then doubling every 20 s
    finally:
        conn.close()


def test_sorry_server_takes_over_when_every_server_is_down(make_lab, director, tmp_path):
    lab = make_lab("nat", real_servers=3)
    flags = Flags(tmp_path / "flags", lab)
    rs1, rs2, sorry = lab.rips
    director(lab, lvs_cf(lab, [Service(scheduler="rr", send_program=flags.program, expect="up",
                                       timeout=INTERVAL, reentry=INTERVAL, sorry_server=sorry)],
                         rips=[rs1, rs2]))  # fmt: skip
    assert {served_by(lab) for _ in range(4)} == {"rs1", "rs2"}
    flags.set(rs1, False)
    flags.set(rs2, False)
    wait_for(lambda: {served_by(lab) for _ in range(4)} == {"rs3"}, INTERVAL + 2 * SLACK, "the sorry server")
    flags.set(rs1, True)
    wait_for(lambda: {served_by(lab) for _ in range(4)} == {"rs1"}, 2 * INTERVAL + 2 * SLACK, "rs1 back")


def dest_of(d: LabDirector, rip: str) -> dict | None:
    for svc in d.status()["services"]:
        for dest in svc["dests"]:
            if dest["addr"] == rip:
                return dest
    return None


def ask(s: socket.socket) -> str:
    """One keep-alive GET on an open connection; the answering server's name."""
    return http_keepalive_get(s, topo.VIP).body.decode().strip()


def test_forced_down_and_back_from_the_control_side(make_lab, director):
    """nanny's SIGUSR1/SIGHUP per server, here `pylvs health force` on the control socket."""
    lab = make_lab("nat", real_servers=2)
    d = director(lab, lvs_cf(lab, [Service(scheduler="rr", timeout=INTERVAL, reentry=INTERVAL)]))
    rs1 = lab.rips[0]

    def force(state: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pylvs", "health", "force", f"{rs1}:80", state,
                               "--control", str(d.control_path)], capture_output=True, text=True, timeout=30)

    out = force("down")
    assert out.returncode == 0, out.stderr
    wait_for(lambda: check_of(d, rs1)["up"] is False, SLACK, "forced down")
    wait_for(lambda: {served_by(lab) for _ in range(4)} == {"rs2"}, SLACK, "traffic off rs1")
    assert force("auto").returncode == 0
    wait_for(lambda: "rs1" in {served_by(lab) for _ in range(4)}, 2 * INTERVAL + 2 * SLACK, "rs1 back")
    bad = subprocess.run([sys.executable, "-m", "pylvs", "health", "force", "10.77.2.99", "down",
                          "--control", str(d.control_path)], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 1 and "no health check" in bad.stderr
