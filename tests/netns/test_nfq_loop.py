"""The C forwarding loop (``--io nfq-loop``, the default) in a NAT lab, beyond what the
director's end-to-end tests already run through it:

* fuzzed packets (hypothesis + scapy, bounded) sent at the VIP from the client through
  the running loop: the director keeps serving, and every packet the kernel queued to it
  (the NFQUEUE rules' own counters) is counted by the engine in exactly one reason;
* an idle director: 20 closed connections, then no packet for the TIME_WAIT timeout plus
  2 s, and the ``ipvsadm -L -n`` layout of its status shows 0 InActConn (expiry on a
  clock, not on traffic).
"""

from __future__ import annotations

import re
import time

import pytest
from fuzz_packets import send_fuzz

from pylvs.dataplane import conntab as ctm
from pylvs.ipvsadm import format_list
from pylvs.lab import topology as topo
from pylvs.lab.director import LabDirector
from pylvs.lab.lvscf import Service, lvs_cf
from pylvs.lab.probes import http_get
from pylvs.netctl.plan import CHAIN_IN, CHAIN_OUT

SECOND_CLIENTS = 200  # 10.77.1.200..215: more client addresses for the balance test
FUZZ_EXAMPLES = 120  # batches; each at most FUZZ_BATCH packets: the load is bounded
FUZZ_BATCH = 12
SEND_GAP = 0.0005  # seconds between two fuzzed packets: far below what fills the queue
STABLE = 1.5  # seconds without a queued packet: the fuzz's echoes are over, the status written


@pytest.fixture
def nat_director(make_lab, tmp_path):
    lab = make_lab("nat", real_servers=2)
    services = [Service(scheduler="wlc"),
                Service(name="echo", port=topo.UDP_ECHO_PORT, protocol="udp", scheduler="rr", send="hc")]
    d = LabDirector(lab, tmp_path, lvs_cf(lab, services), io="nfq-loop")  # this file is the NFQUEUE loop's
    try:
        assert d.status()["io"] == "nfq-loop"
        yield lab, d
    finally:
        d.stop()


def queued(lab) -> int:
    """Packets the director's NFQUEUE rules handed to the queue (iptables' counters)."""
    total = 0
    for chain in (CHAIN_IN, CHAIN_OUT):
        out = lab.run("dir1", ["iptables", "-t", "mangle", "-L", chain, "-v", "-x", "-n"]).stdout
        total += sum(int(line.split()[0]) for line in out.splitlines() if "NFQUEUE" in line)
    return total


def counted(status) -> int:
    return sum(status["reasons"].values())


def settled(d: LabDirector, lab, timeout: float = 15.0):
    """(queued, status) once the queue's count has stopped moving and the status (written
    every second) has counted all of it: late answers to fuzzed SYNs (SYN-ACKs, the
    client's RSTs) keep arriving for a moment after the last send."""
    deadline = time.monotonic() + timeout
    while True:
        q = queued(lab)
        time.sleep(STABLE)
        s = d.status()
        if counted(s) == q == queued(lab):
            return q, s
        if time.monotonic() > deadline:
            raise AssertionError(f"queued {q}, counted {counted(s)}: {s['reasons']}")


def test_fuzzed_packets_through_the_running_loop(nat_director):
    lab, d = nat_director
    before_q, before = settled(d, lab)
    sent = send_fuzz(lab, "client1", topo.VIP, examples=FUZZ_EXAMPLES, batch=FUZZ_BATCH, gap=SEND_GAP)
    after_q, after = settled(d, lab)
    assert sent["n"] > FUZZ_EXAMPLES
    assert after_q - before_q > 0
    # Every packet the kernel queued was counted by the engine, in exactly one reason.
    assert counted(after) - counted(before) == after_q - before_q, (after["reasons"], sent)
    assert after["adapter"]["packets"] - before["adapter"]["packets"] == after_q - before_q
    assert after["pid"] == d.pid and d.proc.poll() is None
    # ... and it still forwards.
    assert lab.http_get("client1", topo.VIP).status == 200


def test_idle_director_expires_closed_connections(nat_director):
    lab, d = nat_director
    for _ in range(20):
        assert lab.http_get("client1", topo.VIP).status == 200

    def inactive(status) -> list[int]:  # the InActConn column, as ipvsadm -L -n prints it
        dests = [line for line in format_list(status).splitlines() if line.startswith("  -> ")][1:]
        return [int(re.split(r"\s+", line.strip())[-1]) for line in dests]

    busy = d.wait_for(lambda s: sum(inactive(s)) >= 20, 5, "20 inactive connections")
    assert busy["connections"] >= 20
    time.sleep(ctm.DEFAULT_TIMEOUTS["TIME_WAIT"] + 2)  # no packet at all meanwhile
    idle = d.wait_for(lambda s: s["connections"] == 0, 3, "the table empty")
    assert inactive(idle) == [0] * len(inactive(idle)) and len(inactive(idle)) == 4, format_list(idle)


def test_two_workers_share_one_connection_table(make_lab, tmp_path):
    """``--workers 2``: two C loops on queues 0 and 1 (the rules balance flows over them),
    one connection table: every connection is served whichever queue each direction
    lands on, both workers forward, and the counts add up."""
    lab = make_lab("nat", real_servers=2)
    # The balance hashes addresses (not ports): 16 client addresses make 16 flows in each
    # direction, so both queues get some unless 32 fair coins all fall one way.
    client = lab.clients[0]
    sources = [f"10.77.1.{SECOND_CLIENTS + k}" for k in range(16)]
    for ip in sources:
        lab.run(client, ["ip", "addr", "add", f"{ip}/24", "dev", client.iface(topo.PUBLIC).name])
    d = LabDirector(lab, tmp_path, lvs_cf(lab, [Service(scheduler="rr")]), io="nfq-loop", extra=("--workers", "2"))
    try:
        rules = lab.run("dir1", ["iptables", "-t", "mangle", "-S", CHAIN_IN]).stdout
        assert "--queue-balance 0:1" in rules, rules
        served = set()
        for k in range(60):
            sock = lab.socket(client)
            sock.bind((sources[k % len(sources)], 0))
            served.add(http_get(sock, topo.VIP, topo.HTTP_PORT).body.decode().strip())
        assert served == {rs.name for rs in lab.real_servers}
        # The status file is up to a second old: wait for one written after the 60th connection.
        status = d.wait_for(lambda s: all(w["packets"] > 0 for w in s["adapter"]["workers"])
                            and s["services"][0]["stats"]["conns"] == 60, 5,
                            "both workers forwarding, 60 connections counted")  # fmt: skip
        assert [w["queue"] for w in status["adapter"]["workers"]] == [0, 1]
        assert status["adapter"]["packets"] == sum(w["packets"] for w in status["adapter"]["workers"])
        www = status["services"][0]
        assert www["stats"]["conns"] == 60 and sum(x["stats"]["conns"] for x in www["dests"]) == 60
    finally:
        assert d.stop() == 0
