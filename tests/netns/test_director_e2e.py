"""End to end: `pylvs lvs` in a lab director, the kernel's TCP stacks at both ends.

Each test builds a lab (pylvs.lab), writes an lvs.cf for it (pylvs.lab.lvscf), starts
the director in the director's namespace as an operator would (``python -m pylvs lvs
-c FILE --nodaemon``), and drives real clients against the VIP; the real servers answer
with their own name (HTTP body, UDP echo prefix), so every assertion is about which
server really answered.  Reloads are real SIGHUPs; stopping is a real SIGTERM, after
which the director's namespace must hold none of its rules or addresses.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections import Counter

import pytest
from bulk_io import download, expected, upload

from pylvs.lab import topology as topo
from pylvs.lab.director import LabDirector, lab_io
from pylvs.lab.lvscf import Service, lvs_cf
from pylvs.lab.probes import http_keepalive_get
from pylvs.sched import ALGORITHMS

NAT_IOS = ("nfq-loop", "afxdp", "nfq-native", "nfqueue")
UDP_PORT = topo.UDP_ECHO_PORT


@pytest.fixture
def director(tmp_path):
    running: list[LabDirector] = []

    def start(lab, text: str, io: str = "auto") -> LabDirector:
        d = LabDirector(lab, tmp_path, text, io=io)
        running.append(d)
        return d

    yield start
    for d in running:
        d.stop()


def served_by(lab, host="client1", port=None) -> str:
    reply = lab.http_get(host, topo.VIP, port)
    assert reply.status == 200
    return reply.body.decode().strip()


def echo_from(lab, host="client1", port=UDP_PORT) -> str:
    return lab.udp_echo(host, topo.VIP, b"ping", port=port).decode().split()[0]


def settled_status(d: LabDirector, check, timeout: float = 5.0) -> dict:
    """The status once ``check(status)`` holds (the file is rewritten every second)."""
    deadline = time.monotonic() + timeout
    while True:
        s = d.status()
        if check(s) or time.monotonic() > deadline:
            return s
        time.sleep(0.1)


def http_and_udp(lab) -> list[Service]:
    # The echo's health check sends a datagram (a UDP check that sends nothing never passes).
    return [Service(scheduler="rr"), Service(name="echo", port=UDP_PORT, protocol="udp", scheduler="rr", send="hc")]


# --- every method, TCP and UDP ---------------------------------------------------------

@pytest.mark.parametrize("io", NAT_IOS)
def test_nat_tcp_udp_reload_and_clean_stop(make_lab, director, io):
    lab = make_lab("nat", real_servers=3)
    names = {rs.name for rs in lab.real_servers}
    d = director(lab, lvs_cf(lab, http_and_udp(lab)), io=io)
    assert d.status()["io"] == io
    assert {served_by(lab) for _ in range(6)} == names  # rr over three servers
    assert {echo_from(lab) for _ in range(6)} == names
    # A bad file is refused and the old configuration keeps forwarding.
    s = d.reload("virtual broken {\n")
    assert s["failed_reloads"] == 1 and s["generation"] == 1
    assert served_by(lab) in names
    assert d.stop() == 0
    rules = lab.run("dir1", ["iptables-save"]).stdout
    addrs = lab.run("dir1", ["ip", "-o", "addr"]).stdout
    assert "PYLVS" not in rules and topo.VIP not in addrs and topo.NAT_ROUTER not in addrs


def test_nat_every_scheduler_selectable_from_lvs_cf(make_lab, director):
    lab = make_lab("nat", real_servers=2)
    names = {rs.name for rs in lab.real_servers}
    d = director(lab, lvs_cf(lab, http_and_udp(lab)))
    for k, sched in enumerate(sorted(ALGORITHMS), start=2):
        s = d.reload(lvs_cf(lab, [Service(scheduler=sched)], serial_no=k))
        assert s["generation"] == k, d.log()
        assert [x["scheduler"] for x in s["services"]] == [sched]
        assert served_by(lab) in names, sched


@pytest.mark.parametrize(("kind", "io"), [("direct", "auto"), ("direct", "afpacket"), ("direct", "afxdp"),
                                          ("tunnel", "auto"), ("tunnel", "afpacket"), ("tunnel", "afxdp")])
def test_direct_routing_and_tunnelling(make_lab, director, kind, io):
    lab = make_lab(kind, real_servers=2)
    names = {rs.name for rs in lab.real_servers}
    d = director(lab, lvs_cf(lab, http_and_udp(lab)), io=io)
    assert {served_by(lab) for _ in range(4)} == names
    assert {echo_from(lab) for _ in range(4)} == names
    status = d.status()
    [www, _echo] = sorted(status["services"], key=lambda s: s["proto"])
    assert {x["forward"] for x in www["dests"]} == {"Route" if kind == "direct" else "Tunnel"}
    expected = {"auto": "nfq-loop"}.get(lab_io(io), lab_io(io))
    assert status["io"] == expected
    if expected == "nfq-loop":  # the C loop: DR frames leave from C, to the next hops it was given
        key = "dr_sent" if kind == "direct" else "mangled"
        status = d.wait_for(lambda s: s["adapter"][key] >= 8, 5, f"{key} >= 8")  # written every second
        assert status["adapter"]["dr_unresolved"] == 0, status["adapter"]
    else:  # afxdp, afpacket: DR and tunnelled packets alike leave as frames
        status = d.wait_for(lambda s: s["adapter"]["sent"] >= 8, 5, "sent >= 8")
        assert status["adapter"]["no_next_hop"] == 0, status["adapter"]


def test_afpacket_reload_moves_the_taps_filter_and_refuses_what_it_cannot_carry(make_lab, director):
    """``--io afpacket``: a reload that moves the service to another VIP re-filters the
    tap (the VIP it started with would otherwise be the only one it sees); a service
    added by hand, which has no device to tap, is refused and changes nothing."""
    lab = make_lab("direct", real_servers=2)
    vip2 = "10.77.1.101"
    for rs in lab.real_servers:  # the guide's DR real server: every VIP on a non-ARPing device
        lab.run(rs, ["ip", "addr", "add", f"{vip2}/32", "dev", "lo"])
    names = {rs.name for rs in lab.real_servers}
    text = lvs_cf(lab, [Service(scheduler="rr")])
    d = director(lab, text, io="afpacket")
    assert {served_by(lab) for _ in range(4)} == names
    s = d.reload(text.replace(topo.VIP, vip2).replace("serial_no = 1", "serial_no = 2"))
    assert s["failed_reloads"] == 0, d.log()
    # The moved service's servers enter as their checks pass (until then a client is refused).
    d.wait_for(lambda s: any(v["vip"] == vip2 and len(v["dests"]) == 2 for v in s["services"]), 30,
               f"both servers on {vip2}")  # fmt: skip
    assert {lab.http_get("client1", vip2).body.decode().strip() for _ in range(4)} == names
    out = d.pylvsadm("-A", "-t", "10.77.1.102:80", "-s", "rr")
    assert out.returncode == 255 and "names no device for 10.77.1.102" in out.stderr, out
    assert "10.77.1.102" not in d.pylvsadm("-L", "-n").stdout


# --- scheduling through the real stack -------------------------------------------------

def test_wrr_1_2_3_over_600_connections(make_lab, director):
    lab = make_lab("nat", real_servers=3)
    # nanny's slow start enters each server at W >> 5 and doubles: 32:64:96 starts at 1:2:3.
    director(lab, lvs_cf(lab, [Service(scheduler="wrr", weights=[32, 64, 96])]))
    counts = Counter(served_by(lab) for _ in range(600))
    for rs, share in zip(lab.real_servers, (1 / 6, 2 / 6, 3 / 6), strict=True):
        assert abs(counts[rs.name] / 600 - share) <= 0.05 * share, counts


def keepalive(lab, host="client1", port=topo.HTTP_PORT) -> socket.socket:
    s = lab.socket(host)
    s.settimeout(5)
    s.connect((topo.VIP, port))
    return s


def ask(s: socket.socket) -> str:
    """One keep-alive GET on an open connection; the answering server's name."""
    return http_keepalive_get(s, topo.VIP).body.decode().strip()


def test_wlc_balances_long_lived_connections(make_lab, director):
    lab = make_lab("nat", real_servers=3)
    d = director(lab, lvs_cf(lab, [Service(scheduler="wlc", weights=[32, 32, 64])]))  # slow start: 1, 1, 2
    held = [keepalive(lab) for _ in range(8)]
    try:
        got = Counter(ask(s) for s in held)
        assert [got[rs.name] for rs in lab.real_servers] == [2, 2, 4]
        def active(s):
            return sorted(x["active"] for x in s["services"][0]["dests"])

        assert active(settled_status(d, lambda s: active(s) == [2, 2, 4])) == [2, 2, 4]
    finally:
        for s in held:
            s.close()


def test_persistence_and_pmask_keep_a_slash_24_together(make_lab, director):
    lab = make_lab("nat", real_servers=3, clients=2)
    director(lab, lvs_cf(lab, [Service(scheduler="rr", persistent=60, pmask="255.255.255.0")]))
    first = served_by(lab, "client1")
    assert {served_by(lab, "client1") for _ in range(10)} == {first}
    assert {served_by(lab, "client2") for _ in range(10)} == {first}  # 10.77.1.51 and .52: one /24


def test_fwmark_bundles_80_and_443_with_the_guides_mark_rules(make_lab, director):
    lab = make_lab("nat", real_servers=3)
    for rs in lab.real_servers:  # a second service on 443 (plain HTTP is enough to name the server)
        lab.popen(rs, [sys.executable, "-m", "pylvs.lab.servers", "--name", rs.name, "--http-port", "443",
                       "--udp-port", "9443"], what="https", stdout=subprocess.DEVNULL)  # fmt: skip
    for port in (80, 443):  # as the RHEL 5 guide writes them
        lab.run("dir1", ["iptables", "-t", "mangle", "-A", "PREROUTING", "-p", "tcp", "-d", f"{topo.VIP}/32",
                         "--dport", str(port), "-j", "MARK", "--set-mark", "80"])  # fmt: skip
    # firewall marks are netfilter's: nfq-loop, whatever PYLVS_LAB_IO says (afxdp refuses them)
    director(lab, lvs_cf(lab, [Service(name="shop", scheduler="rr", fwmark=80, persistent=60)]), io="nfq-loop")
    time.sleep(0.5)  # the extra servers bind
    first = served_by(lab, port=80)
    for _ in range(5):
        assert served_by(lab, port=443) == first
        assert served_by(lab, port=80) == first


def test_weight_0_lets_established_connections_finish(make_lab, director):
    lab = make_lab("nat", real_servers=2)
    d = director(lab, lvs_cf(lab, [Service(scheduler="wlc")]))
    conn = keepalive(lab)
    try:
        owner = ask(conn)
        weights = [0 if rs.name == owner else 1 for rs in lab.real_servers]
        d.reload(lvs_cf(lab, [Service(scheduler="wlc", weights=weights)], serial_no=2))
        assert ask(conn) == owner  # still served by the quiesced server
        assert {served_by(lab) for _ in range(6)} == {rs.name for rs in lab.real_servers} - {owner}
    finally:
        conn.close()


def test_reload_with_new_weights_keeps_every_connection(make_lab, director):
    lab = make_lab("nat", real_servers=3)
    d = director(lab, lvs_cf(lab, [Service(scheduler="wlc")]))
    held = [keepalive(lab) for _ in range(6)]
    try:
        before = [ask(s) for s in held]
        s = d.reload(lvs_cf(lab, [Service(scheduler="wrr", weights=[5, 1, 0])], serial_no=2))
        assert s["generation"] == 2
        assert [ask(s) for s in held] == before
    finally:
        for s in held:
            s.close()


def test_icmp_port_unreachable_reaches_the_client(make_lab, director):
    lab = make_lab("nat", real_servers=1)
    # The health check must keep the server in although nothing listens on 9100: a program check.
    director(lab, lvs_cf(lab, [Service(name="nothing", port=9100, protocol="udp", scheduler="rr",
                                       send_program="/bin/echo OK", expect="OK")]))
    s = lab.socket("client1", socket.AF_INET, socket.SOCK_DGRAM)
    with s:
        s.settimeout(3)
        s.connect((topo.VIP, 9100))  # connected: an ICMP error for this flow surfaces as ECONNREFUSED
        s.send(b"anyone?")
        with pytest.raises(ConnectionRefusedError):
            s.recv(100)


def test_100_mb_through_nat_arrives_intact(make_lab, director):
    size = 100 * 1024 * 1024
    lab = make_lab("nat", real_servers=1)
    director(lab, lvs_cf(lab, [Service(scheduler="rr")]))
    assert download(lab, size) == (size, expected(size))


def test_64_mb_upload_through_direct_routing_arrives_intact(make_lab, director):
    """The client's TCP super-packets reach the C loop whole (a GSO queue) and leave as
    frames the kernel cuts to the MTU (a virtio-net header); the real server hashes what
    arrived."""
    size = 64 * 1024 * 1024
    lab = make_lab("direct", real_servers=1)
    d = director(lab, lvs_cf(lab, [Service(scheduler="rr")]))
    assert upload(lab, size) == (lab.real_servers[0].name, size, expected(size))
    # the counters as they are now (the status file is rewritten each second: it may still
    # show the first batches of the upload)
    status = d.control({"cmd": "status"})["status"]
    if status["io"] == "afxdp":  # with an XDP program on its veth, the sender does not offload
        assert status["adapter"]["sent"] > 0 and status["adapter"]["too_big"] == 0, status["adapter"]
        return
    assert status["io"] == "nfq-loop" and status["adapter"]["dr_sent"] > 0, status["adapter"]
    assert status["adapter"]["dr_too_big"] == 0, status["adapter"]
    assert status["adapter"]["dr_gso"] > 0, status["adapter"]  # super-packets left whole


def test_no_server_left_answers_port_unreachable(make_lab, director):
    """Every server at weight 0: the director answers the SYN with ICMP port unreachable
    (ip_vs_leave), so the client's connect fails at once instead of timing out."""
    lab = make_lab("nat", real_servers=2)
    director(lab, lvs_cf(lab, [Service(scheduler="wlc", weights=[0, 0])]))
    s = lab.socket("client1")
    with s:
        s.settimeout(3)
        with pytest.raises(ConnectionRefusedError):
            s.connect((topo.VIP, topo.HTTP_PORT))
