"""``--io afxdp``: the XDP program, the AF_XDP sockets and the C loop, in a lab.

What only this adapter does: the program decides in the kernel what reaches the
director (service traffic and NAT replies) and what the kernel keeps (ping, health-check
replies, other ports); a reload changes that; nothing can be handed back up the stack
(``unpassed``); a tunnel packet too big for the tunnel gets ICMP "fragmentation needed";
partial checksums from local senders are completed; consecutive segments leave as one
super-packet; a killed director's program is
found and removed by the next start; the generic (skb) hook works as the driver's does.
Every other end-to-end test runs on this adapter too with ``make test-afxdp``
(PYLVS_LAB_IO=afxdp).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time

import pytest
from bulk_io import download, expected, upload
from fuzz_packets import send_fuzz
from scapy.layers.inet import IP, TCP

from pylvs.lab import topology as topo
from pylvs.lab.director import LabDirector
from pylvs.lab.lvscf import Service, lvs_cf

UDP_PORT = topo.UDP_ECHO_PORT
OTHER_PORT = 2222  # a port of the VIP with no service: the kernel's, as SSH to the box would be
FUZZ_EXAMPLES = 60
FUZZ_BATCH = 10
SEND_GAP = 0.0005
IP_RECVTTL = 12  # linux/in.h (the socket module does not export it)


@pytest.fixture
def start(tmp_path):
    running: list[LabDirector] = []

    def go(lab, services, *extra: str) -> LabDirector:
        d = LabDirector(lab, tmp_path / f"d{len(running)}", lvs_cf(lab, services), io="afxdp", extra=extra)
        running.append(d)
        return d

    yield go
    for d in running:
        d.stop()


def web_and_echo() -> list[Service]:
    return [Service(scheduler="rr"), Service(name="echo", port=UDP_PORT, protocol="udp", scheduler="rr", send="hc")]


def xdp(status: dict, dev: str) -> dict:
    return status["adapter"]["xdp"][dev]


def names(lab, n: int = 4, port: int | None = None) -> set[str]:
    return {lab.http_get("client1", topo.VIP, port).body.decode().strip() for _ in range(n)}


def test_nat_what_the_program_takes_and_what_the_kernel_keeps(make_lab, start):
    lab = make_lab("nat", real_servers=2)
    servers = {rs.name for rs in lab.real_servers}
    # a listener of the director's own on the VIP, on a port no service has
    lab.popen("dir1", [sys.executable, "-c", f"""
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", {OTHER_PORT})); s.listen()
while True:
    c, _ = s.accept(); c.sendall(b"director\\n"); c.close()
"""], what="listener")
    d = start(lab, web_and_echo())
    assert names(lab) == servers
    assert {lab.udp_echo("client1", topo.VIP, b"x", port=UDP_PORT).split()[0].decode() for _ in range(4)} == servers
    lab.run("client1", ["ping", "-c", "2", "-W", "2", topo.VIP])  # the kernel answers the VIP's echo
    with lab.socket("client1") as s:  # the box's own service on the VIP
        s.settimeout(5)
        s.connect((topo.VIP, OTHER_PORT))
        assert s.recv(100) == b"director\n"
    st = d.wait_for(lambda s: s["adapter"]["sent"] >= 16, 5, "frames sent")
    a = st["adapter"]
    assert st["io"] == "afxdp" and {x["mode"] for x in a["xdp"].values()} == {"native"}, a["xdp"]
    pub, priv = xdp(st, "eth0"), xdp(st, "eth1")
    assert pub["to_service"] >= 8 and priv["from_server"] >= 8, a["xdp"]  # requests in, replies back
    # health checks (director -> RIP:80 and :9000) answered to the director itself: the kernel's
    st = d.wait_for(lambda s: xdp(s, "eth1")["server_to_local"] > 0, 10, "health-check replies passed")
    a = st["adapter"]
    # every frame taken became a packet; local senders on veth leave partial checksums
    assert a["frames"] == a["packets"] and a["short_frames"] == a["oversize"] == a["bad_meta"] == 0, a
    assert a["csum_completed"] > 0 and a["no_next_hop"] == a["unpassed"] == a["send_errors"] == 0, a
    assert st["reasons"]["nat_in"] >= 8 and st["reasons"]["nat_out"] >= 8

    # A reload moves the service: the program follows (the old port goes to the kernel).
    s = d.reload(lvs_cf(lab, [Service(scheduler="rr", port=8080, rport=topo.HTTP_PORT)], serial_no=2))
    assert s["reloads"] == 1 and s["failed_reloads"] == 0, d.log()  # (a health swap may add a generation)
    # The new service's servers enter as their checks pass: until one has, a client is refused.
    d.wait_for(lambda s: any(v["port"] == 8080 and v["dests"] for v in s["services"]), 30, "a server on :8080")
    assert names(lab, port=8080) <= servers
    with lab.socket("client1") as c, pytest.raises(ConnectionRefusedError):  # the kernel: no socket there
        c.settimeout(5)
        c.connect((topo.VIP, topo.HTTP_PORT))


def test_two_workers_take_their_share_of_the_queues(make_lab, start):
    """``--workers 2`` on devices with two receive queues: worker k reads queue k of each
    device, both forward (the switch port's flow hash spreads 60 connections and their
    replies over the queues), one connection table serves every connection whichever
    queue each direction lands on, and the counts add up."""
    lab = make_lab("nat", real_servers=2, director_queues=2)
    for dev in ("eth0", "eth1"):
        assert "rx-1" in lab.run("dir1", ["ls", f"/sys/class/net/{dev}/queues"]).stdout.split()
    d = start(lab, [Service(scheduler="rr")], "--workers", "2")
    served = [lab.http_get("client1", topo.VIP, topo.HTTP_PORT).body.decode().strip() for _ in range(60)]
    assert set(served) == {rs.name for rs in lab.real_servers}
    status = d.wait_for(lambda s: len(s["adapter"].get("workers", [])) == 2
                        and all(w["packets"] > 0 for w in s["adapter"]["workers"])
                        and s["services"][0]["stats"]["conns"] == 60, 5,
                        "both workers forwarding, 60 connections counted")  # fmt: skip
    a = status["adapter"]
    assert a["packets"] == sum(w["packets"] for w in a["workers"]) == a["frames"], a
    assert a["no_next_hop"] == a["send_errors"] == a["unpassed"] == 0, a
    www = status["services"][0]
    assert www["stats"]["conns"] == 60 and sum(x["stats"]["conns"] for x in www["dests"]) == 60


def test_more_workers_than_receive_queues_is_refused(make_lab, tmp_path):
    lab = make_lab("nat", real_servers=1)
    with pytest.raises(RuntimeError, match="exited 1(.|\n)*2 workers needs as many receive queues"):
        LabDirector(lab, tmp_path, lvs_cf(lab, [Service(scheduler="rr")]), io="afxdp", extra=("--workers", "2"))


def test_nat_servers_own_traffic_is_forwarded_as_the_kernel_would(make_lab, start):
    """With a port-0 UDP service every datagram of a real server is the program's (its
    replies may come from any port); one that is no reply of ours is forwarded as it
    came, its TTL lowered as the kernel's forwarding lowers it, and one whose TTL runs
    out is dropped and counted (nfq-loop: NF_ACCEPT, the kernel forwards)."""
    lab = make_lab("nat", real_servers=1)
    d = start(lab, [Service(name="any", port=0, protocol="udp", scheduler="rr", persistent=30)])
    client = lab.clients[0].ip()
    with lab.socket("client1", socket.AF_INET, socket.SOCK_DGRAM) as sink, \
            lab.socket("rs1", socket.AF_INET, socket.SOCK_DGRAM) as src:  # fmt: skip
        sink.bind((client, 7777))
        sink.settimeout(3)
        sink.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
        src.bind(("0.0.0.0", 5555))
        src.sendto(b"from the server itself", (client, 7777))
        data, anc, _, (addr, _) = sink.recvmsg(100, socket.CMSG_SPACE(4))
        ttl = next(int.from_bytes(v, "little") for lvl, typ, v in anc if typ == socket.IP_TTL)
        assert (data, addr, ttl) == (b"from the server itself", lab.real_servers[0].ip(), 63)  # 64, one hop
        src.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 1)
        src.sendto(b"never arrives", (client, 7777))
        with pytest.raises(TimeoutError):
            sink.settimeout(1)
            sink.recvfrom(100)
    a = d.wait_for(lambda s: s["adapter"]["ttl_expired"] == 1, 5, "the TTL-1 datagram counted")["adapter"]
    x = xdp(d.status(), "eth1")
    assert a["unpassed"] == 0 and x["from_server"] + x["from_server_routed"] >= 2, (a, x)


def test_a_stray_ack_cannot_go_back_to_the_kernel_and_is_counted(make_lab, start):
    lab = make_lab("nat", real_servers=1)
    d = start(lab, [Service(scheduler="rr")])
    before = d.status()["adapter"]["unpassed"]
    raw = lab.socket("client1", socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    with raw:
        ack = IP(src=lab.clients[0].ip(), dst=topo.VIP) / TCP(sport=40000, dport=topo.HTTP_PORT, flags="A")
        raw.sendto(bytes(ack), (topo.VIP, 0))
    st = d.wait_for(lambda s: s["adapter"]["unpassed"] > before, 5, "the stray ACK counted")
    assert st["reasons"]["not_syn"] >= 1


def test_tunnel_too_big_gets_frag_needed_and_the_upload_arrives(make_lab, start):
    """Full-size segments no longer fit once the outer header is on: the director
    answers with ICMP "fragmentation needed" (as ip_vs_tunnel_xmit does), the client's
    TCP lowers its segment size, and the real server hashes an intact upload."""
    size = 4 * 1024 * 1024
    lab = make_lab("tunnel", real_servers=1)
    d = start(lab, [Service(scheduler="rr")])
    assert upload(lab, size) == (lab.real_servers[0].name, size, expected(size))
    a = d.wait_for(lambda s: s["adapter"]["frag_needed"] > 0, 5, "frag-needed sent")["adapter"]
    assert a["too_big"] == 0, a


def test_bulk_both_ways_through_nat_leaves_as_super_packets(make_lab, start):
    """A NAT upload and download, hashed at the far end: consecutive segments of a batch
    leave as one GSO frame (csrc/gro.c), and nothing is lost or reordered on the way."""
    size = 8 * 1024 * 1024
    lab = make_lab("nat", real_servers=1)
    d = start(lab, [Service(scheduler="rr")])
    # upload: the client's segments merged toward the server; download: the replies
    assert upload(lab, size) == (lab.real_servers[0].name, size, expected(size))
    assert download(lab, size) == (size, expected(size))
    a = d.wait_for(lambda s: s["adapter"]["gro_frames"] > 0, 5, "super-packets sent")["adapter"]
    assert a["gro_merged"] > a["gro_frames"] and a["send_errors"] == a["too_big"] == 0, a


def test_killed_fail_closed_director_drops_then_its_program_is_cleaned(make_lab, start):
    lab = make_lab("direct", real_servers=1)
    d = start(lab, [Service(scheduler="rr")], "--fail-closed")
    assert names(lab, 1) == {lab.real_servers[0].name}
    os.kill(d.pid, signal.SIGKILL)  # the box's director dies: nothing detaches the program
    d.proc.wait()
    link = json.loads(lab.run("dir1", ["ip", "-j", "link", "show", "eth0"]).stdout)[0]
    assert "xdp" in link, link
    with lab.socket("client1") as s, pytest.raises(TimeoutError):  # dropped, not answered by the kernel
        s.settimeout(1.5)
        s.connect((topo.VIP, topo.HTTP_PORT))
    d2 = start(lab, [Service(scheduler="rr")])
    assert "removed stale XDP program from eth0" in d2.log()
    assert names(lab, 2) == {lab.real_servers[0].name}


def test_generic_skb_mode(make_lab, start):
    lab = make_lab("direct", real_servers=2)
    d = start(lab, web_and_echo(), "--xdp-mode", "skb")
    assert names(lab) == {rs.name for rs in lab.real_servers}
    st = d.wait_for(lambda s: s["adapter"]["sent"] >= 4, 5, "frames sent")
    assert xdp(st, "eth0")["mode"] == "skb"


def test_fuzzed_frames_through_the_running_loop(make_lab, start):
    """Bounded fuzz (hypothesis + scapy) at the VIP's ports: no crash, no hang, and every
    frame the program redirected is one packet the engine counted in one reason."""
    lab = make_lab("nat", real_servers=2)
    d = start(lab, web_and_echo())
    sent = send_fuzz(lab, "client1", topo.VIP, examples=FUZZ_EXAMPLES, batch=FUZZ_BATCH, gap=SEND_GAP)
    time.sleep(1.5)  # late answers (SYN-ACKs, the client's RSTs) settle

    def balanced(s):
        a = s["adapter"]
        taken = sum(v[k] for v in a["xdp"].values() for k in ("to_service", "from_server", "from_server_routed"))
        return taken == a["frames"] == a["packets"] == sum(s["reasons"].values())

    st_ = d.wait_for(balanced, 10, "every redirected frame counted once")
    assert sent["n"] > FUZZ_EXAMPLES and st_["adapter"]["packets"] > 0
    assert d.proc.poll() is None and lab.http_get("client1", topo.VIP).status == 200
