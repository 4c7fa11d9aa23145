"""Every case of the captured ipvsadm 1.31 replayed through pylvsadm against a bare
``pylvs lvs`` started here, compared byte for byte (stdout, stderr, exit code) by the
rules of ``tests/ipvsadm_golden.py``.

The director runs in a namespace of its own with the devices the capture's sync daemon
cases name (``sync0``, ``sync1``: a veth pair), ``--capacity 4096`` so the banner's size is
the kernel's.  pylvsadm runs in another namespace that has only ``lo``, so the name
lookups of the capture (``-L`` without ``-n``, ``nosuchhost.invalid``) fail at once and
no packet leaves either.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ipvsadm_golden import CAPACITY, differences

from pylvs.lab import netns

HERE = Path(__file__).parent
START_TIMEOUT = 180.0  # a cold numba cache compiles the engine at start
REPLAY_TIMEOUT = 300.0


@pytest.fixture
def bare_director(netns_support, tmp_path):
    """A bare `pylvs lvs` in a namespace with sync0/sync1, and a client namespace with
    only lo; both removed after the test, the director stopped by its PID."""
    tag = os.urandom(3).hex()
    ns_dir, ns_cli = f"plga{tag}d", f"plga{tag}c"
    proc = None
    try:
        netns.add_netns(ns_dir)
        netns.add_netns(ns_cli)
        netns.ip(ns_dir, "link", "set", "lo", "up")
        netns.ip(ns_cli, "link", "set", "lo", "up")
        # A veth pair with both ends in the director's namespace (no dummy driver everywhere).
        netns.ip(ns_dir, "link", "add", "sync0", "type", "veth", "peer", "name", "sync1")
        for k, dev in enumerate(("sync0", "sync1")):
            netns.ip(ns_dir, "link", "set", dev, "multicast", "on", "up")
            netns.ip(ns_dir, "addr", "add", f"10.255.{k}.1/24", "dev", dev)
        status, control = tmp_path / "lvs.status.json", tmp_path / "lvs.ctl"
        argv = [sys.executable, "-m", "pylvs", "lvs", "--bare", "--nodaemon", "--io", "nfq-loop",
                "--runtime-dir", str(tmp_path), "--status", str(status), "--control", str(control),
                "--capacity", str(CAPACITY)]  # fmt: skip
        log = open(tmp_path / "lvs.log", "wb")  # noqa: SIM115 - closed with the director below
        proc = subprocess.Popen(netns.exec_argv(ns_dir, argv), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, preexec_fn=netns.die_with_parent)  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT
        while not status.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"pylvs lvs --bare did not start:\n{(tmp_path / 'lvs.log').read_text()}")
            time.sleep(0.1)
        yield ns_cli, control, tmp_path
    finally:
        if proc is not None:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            log.close()
        for ns in (ns_dir, ns_cli):
            if netns.netns_exists(ns):
                netns.del_netns(ns)


def test_every_captured_ipvsadm_case(bare_director):
    ns_cli, control, tmp = bare_director
    out = tmp / "replay.json"
    proc = subprocess.run(netns.exec_argv(ns_cli, [sys.executable, str(HERE / "ipvsadm_replay.py"), str(control),
                                                   str(out)]),  # fmt: skip
                          capture_output=True, text=True, timeout=REPLAY_TIMEOUT, check=False)
    assert proc.returncode == 0, proc.stderr
    bad = differences(json.loads(out.read_text()))
    assert not bad, f"{len(bad)} case(s) differ:\n\n" + "\n".join(bad)
