"""Nothing is left behind: not when the test body raises, not when the build fails, not
when the process owning the lab gets SIGTERM/SIGINT; after a SIGKILL the helpers still
die and `pylvs lab down NAME` removes the rest from the record."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time

import pytest

from pylvs.cli import lab as lab_cli
from pylvs.lab import lab_topology, netns, state, topology

CHILD_TIMEOUT = 30.0  # seconds for a child to build its lab / to exit


def _wait_gone(names: list[str], pids: list[int], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(map(netns.netns_exists, names)) and not any(map(netns.pid_running, pids)):
            return
        time.sleep(0.05)
    left_ns = [n for n in names if netns.netns_exists(n)]
    left_pids = [p for p in pids if netns.pid_running(p)]
    raise AssertionError(f"left behind: namespaces {left_ns}, pids {left_pids}")


def test_cleanup_when_the_body_raises(netns_support):
    seen = {}
    with pytest.raises(RuntimeError, match="boom"), lab_topology("tunnel", real_servers=2) as lab:
        seen = {"name": lab.name, "netns": lab.netns_names, "pids": lab.pids}
        assert all(map(netns.netns_exists, seen["netns"]))
        assert seen["pids"] and all(map(netns.pid_running, seen["pids"]))
        raise RuntimeError("boom")
    _wait_gone(seen["netns"], seen["pids"], timeout=0.5)
    assert state.read(seen["name"]) is None


def test_cleanup_when_the_build_fails(netns_support, monkeypatch):
    created: list[str] = []
    real_create = topology._create

    def create_then_fail(lab, mode):
        real_create(lab, mode)
        created.extend(lab.netns_names)
        raise OSError("injected failure after the namespaces exist")

    monkeypatch.setattr(topology, "_create", create_then_fail)
    with pytest.raises(OSError, match="injected"):
        topology.build_lab("nat", 2)
    assert created
    _wait_gone(created, [], timeout=0.5)


CHILD = """
import json, sys, time
from pylvs.lab import lab_topology
with lab_topology(sys.argv[1], real_servers=2) as lab:
    print(json.dumps({"name": lab.name, "netns": lab.netns_names, "pids": lab.pids}), flush=True)
    time.sleep(60)
"""


def _start_child(kind: str) -> tuple[subprocess.Popen, dict]:
    child = subprocess.Popen([sys.executable, "-c", CHILD, kind], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    ready, _, _ = select.select([child.stdout], [], [], CHILD_TIMEOUT)
    if not ready:
        child.kill()
        child.wait()
        raise AssertionError("child did not bring its lab up in time")
    line = child.stdout.readline()
    if not line:
        child.wait()
        raise AssertionError(f"child failed: {child.stderr.read().decode()[-2000:]}")
    info = json.loads(line)
    assert all(map(netns.netns_exists, info["netns"]))
    assert all(map(netns.pid_running, info["pids"]))
    return child, info


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_cleanup_when_the_owner_is_signalled(netns_support, sig):
    child, info = _start_child("tunnel")
    try:
        child.send_signal(sig)
        code = child.wait(timeout=CHILD_TIMEOUT)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert code != 0  # it died of the signal (SIGINT: KeyboardInterrupt)
    _wait_gone(info["netns"], info["pids"])
    assert state.read(info["name"]) is None


def test_sigkilled_owner_helpers_die_and_down_removes_the_rest(netns_support, capsys):
    child, info = _start_child("nat")
    child.kill()  # no chance to clean up
    child.wait()
    try:
        # PR_SET_PDEATHSIG ended the helpers; the namespaces are still there...
        _wait_gone([], info["pids"])
        rec = state.read(info["name"])
        assert rec is not None and rec.is_stale()
        assert lab_cli.main(["list"]) == 0
        assert "stale" in capsys.readouterr().out
        # ... until `pylvs lab down NAME` removes them from the record.
        assert lab_cli.main(["down", info["name"]]) == 0
        _wait_gone(info["netns"], info["pids"], timeout=0.5)
        assert state.read(info["name"]) is None
    finally:
        rec = state.read(info["name"])
        if rec is not None:
            state.teardown(rec)


def test_pids_are_checked_before_killing(netns_support):
    """A recorded PID whose start time does not match (PID reuse) is left alone."""
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        start = netns.proc_start_time(sleeper.pid)
        assert start is not None
        netns.end_process(sleeper.pid, start + 1)  # not "our" process any more
        assert sleeper.poll() is None
        netns.end_process(sleeper.pid, start, popen=sleeper)
        assert sleeper.poll() is not None
    finally:
        if sleeper.poll() is None:
            os.kill(sleeper.pid, signal.SIGKILL)
            sleeper.wait()
