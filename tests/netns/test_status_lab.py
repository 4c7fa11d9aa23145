"""``pylvs status`` against a running director: slow start with its schedule, UP, DOWN
with the reason, traffic counted, a hung director and a stopped one.

The lab: NAT, two real servers and an address no host has.  rs1 has weight 100 so its
slow start is long enough to watch (a doubling every 20 // timeout passing checks, about
20 s, reference 4.6); rs2's HTTP server is stopped by the test (its check fails with
``connection refused``); the third address never answers.  Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

from waits import wait_for

from pylvs.lab import topology as topo
from pylvs.lab.director import LabDirector
from pylvs.lab.lvscf import Service, lvs_cf

INTERVAL = 2  # lvs.cf timeout: check interval and probe limit, seconds
REENTRY = 16  # N = 8 passes; the first check makes count 9, so the first doubling comes one check later
STEP_EVERY = 20 // INTERVAL  # passing checks per doubling (reference 4.4 step 5)
SLACK = 3.0  # scheduling, probe and status-file (1 s) latency on a shared 2-vCPU machine
GHOST = "10.77.2.99"  # in the servers' segment, no host has it


def status(d: LabDirector, *args: str) -> subprocess.CompletedProcess:
    """``python -m pylvs status`` on the director's files (no pulse in its runtime directory)."""
    return subprocess.run([sys.executable, "-m", "pylvs", "status", "--runtime-dir", str(d.status_path.parent),
                           "--lvs-status", str(d.status_path), *args],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def line_of(text: str, address: str) -> str:
    return next(x for x in text.splitlines() if x.startswith(f"  -> {address}:"))


def check_of(d: LabDirector, address: str) -> dict:
    return next(c for c in d.status()["health"] if c["address"].split(":")[0] == address)


SLOW = re.compile(r"\bUP\b.* (\d+)/100 .*slow start: (\d+) of 100, next step in (\d+) s \(to (\d+)\)")


def slow_start_now(d: LabDirector, rip: str) -> tuple[float, int, int, int]:
    """(wall time of the reading, weight, seconds to the next step, next weight) as the screen says."""
    # Read again while the screen says "next step due now" (the step is under way), or while
    # the table's weight is one step behind the check's: the file was written between the
    # check's step and the swap that follows it (the control loop applies it within 0.25 s).
    for _ in range(8):
        before = time.time()
        out = status(d)
        assert out.returncode == 0, out.stdout + out.stderr
        m = SLOW.search(line_of(out.stdout, rip))
        if (m and m[1] == m[2]) or (not m and "next step due now" not in out.stdout):
            break
        time.sleep(0.5)
    assert m, out.stdout
    weight, shown, step_in, nxt = map(int, m.groups())
    assert weight == shown and nxt == min(2 * weight, 100)
    return (before + time.time()) / 2, weight, step_in, nxt


def test_status_shows_slow_start_health_and_a_director_gone(make_lab, director):
    lab = make_lab("nat", real_servers=2)
    rs1, rs2 = lab.rips
    d = director(lab, lvs_cf(lab, [Service(scheduler="wlc", weights=[100, 1, 1], timeout=INTERVAL,
                                           reentry=REENTRY)], rips=[rs1, rs2, GHOST]))  # fmt: skip
    wait_for(lambda: all(c["last"] is not None for c in d.status()["health"]), 2 * INTERVAL + SLACK,
             "every server checked")  # fmt: skip

    # slow start: the screen names the next weight and when; the step comes then
    read_at, weight, step_in, nxt = slow_start_now(d, rs1)
    assert 1 <= step_in <= STEP_EVERY * INTERVAL + SLACK
    stepped = wait_for(lambda: check_of(d, rs1)["weight"] == nxt and time.time(), step_in + SLACK, f"weight {nxt}")
    assert abs(stepped - (read_at + step_in)) <= SLACK, (stepped - read_at, step_in)
    _, weight2, step_in2, nxt2 = slow_start_now(d, rs1)
    assert (weight2, nxt2) == (nxt, min(2 * nxt, 100))
    assert STEP_EVERY * INTERVAL - 2 * SLACK <= step_in2 <= STEP_EVERY * INTERVAL + SLACK  # a whole period again

    # traffic is counted on the screen's rows
    for _ in range(6):
        assert lab.http_get("client1", topo.VIP, topo.HTTP_PORT).body.decode().strip() in ("rs1", "rs2")

    # rs2's HTTP server stops: DOWN, with the check's reason
    proc = next(p for p in lab.processes if p.host == "rs2" and p.what == "servers")
    os.kill(proc.pid, signal.SIGTERM)
    proc.popen.wait(10)
    wait_for(lambda: not check_of(d, rs2)["up"], INTERVAL + SLACK, "rs2 down")
    time.sleep(1.5)  # the next status file
    out = status(d)
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert f"director: active, pid {d.pid}," in text and "a standalone director" in text
    assert re.search(r"\bDOWN\b.*  0/1 .*connection refused$", line_of(text, rs2)), text
    assert re.search(r"\bDOWN\b.*  0/1 .*(timeout|host unreachable)$", line_of(text, GHOST)), text
    assert re.search(r"\bUP\b.*slow start: \d+ of 100, next step in \d+ s", line_of(text, rs1)), text
    assert re.search(rf"^TCP  {re.escape(topo.VIP)}:{topo.HTTP_PORT} \(www\)  wlc  conns ", text, re.M), text

    got = json.loads(status(d, "--json").stdout)
    assert got["exit"] == 0 and got["files"]["lvs"]["state"] == "running" and got["pulse"] is None
    checks = {c["address"].split(":")[0]: c for c in got["lvs"]["health"]}
    assert checks[rs1]["slow_start"] and checks[rs1]["configured_weight"] == 100
    assert checks[rs2]["reason"] == "connection refused" and not checks[rs2]["up"]
    assert sum(s["stats"]["conns"] for s in got["lvs"]["services"]) >= 6

    # a hung director: its file stops being rewritten
    os.kill(d.pid, signal.SIGSTOP)
    try:
        time.sleep(2.5)
        out = status(d, "--stale-after", "1")
        assert out.returncode == 3, out.stdout + out.stderr
        assert f"NOT RUNNING: {d.status_path} not rewritten for" in out.stdout
        assert f"(pid {d.pid} still exists: hung?)" in out.stdout
    finally:
        os.kill(d.pid, signal.SIGCONT)

    # stopped: its status file is gone
    assert d.stop() == 0
    out = status(d)
    assert out.returncode == 3
    assert f"director: not running (no status file {d.status_path})" in out.stdout
