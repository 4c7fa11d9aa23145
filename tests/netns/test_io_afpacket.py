"""The AF_PACKET adapter (pylvs.dataplane.io.afpacket: the C loop over a packet socket)
forwarding real traffic in the lab.

A director process (tests/netns/afpacket_topo.py) runs AfPacketLoop inside dir1 with the
kernel's copy of service traffic dropped at netdev ingress, as netctl will set it up:

* direct routing (``make_lab("direct")``, the VIP on dir1 and on every real server's lo):
  HTTP from the client is answered by the real servers in round-robin order, UDP echo too;
* tunnelling (``make_lab("tunnel")``): the same through IPIP to each real server;
* the golden DR and TUNNEL cases of tests/golden.py, injected as frames into dir1's public
  interface and captured on rs1's interface: the expected bytes, rs1's MAC as the
  destination and dir1's private MAC as the source (the DR cases with no BPF filter, so
  the C receive sorts every frame itself);
* a short bounded UDP burst reports the frames per second the adapter took (printed, not
  asserted).
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from afpacket_topo import dr_sender_probe, frame_sender_probe, ingress_drop_commands
from golden import CASES, CLIENT, DIRECTOR, DR_CF, RIP1, RIP2, TUN_CF, VIP
from scapy.layers.l2 import Ether

from pylvs.dataplane import engine as en
from pylvs.dataplane.io import afpacket as afp
from pylvs.lab import probes, topology
from pylvs.lab.lvscf import Service, lvs_cf
from pylvs.lab.topology import DIRECT, TUNNEL

HERE = Path(__file__).parent
SCRIPT = HERE / "afpacket_topo.py"
READY_TIMEOUT = 180.0  # seconds: Python start-up plus numba compiling on a cold cache
STOP_TIMEOUT = 15.0
BURST_PACKETS = 20000  # the bounded load loop: at most this many datagrams ...
BURST_SECONDS = 2.0  # ... and at most this long
ETH_HLEN = 14
IP_MTU_DISCOVER, IP_PMTUDISC_PROBE = 10, 3  # linux/in.h: set DF, do not use the path MTU


class DirectorProcess:
    """The director script in dir1, started and stopped by PID."""

    def __init__(self, lab, cf_path: Path, extra: list[str]):
        self.lab = lab
        self.popen = lab.popen(lab.director, [sys.executable, str(SCRIPT), "-c", str(cf_path), *extra],
                               what="afpacket-director", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
        line = self._line(READY_TIMEOUT)
        if line != "ready":
            self.popen.kill()
            _, err = self.popen.communicate(timeout=STOP_TIMEOUT)
            raise RuntimeError(f"director did not start (got {line!r}): {err[-3000:]}")

    def _line(self, timeout: float) -> str:
        ready, _, _ = select.select([self.popen.stdout], [], [], timeout)
        return self.popen.stdout.readline().strip() if ready else ""

    def snapshot(self) -> dict:
        self.popen.send_signal(signal.SIGUSR1)
        return json.loads(self._line(STOP_TIMEOUT))

    def stop(self) -> dict:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        out, err = self.popen.communicate(timeout=STOP_TIMEOUT)
        assert self.popen.returncode == 0, err[-3000:]
        return json.loads(out.strip().splitlines()[-1])


@pytest.fixture
def afp_director(tmp_path):
    """start(lab, cf_text, drop_matches, extra_args) -> DirectorProcess; everything it
    started (the process, the nft table) is removed after the test, also on failure."""
    if not shutil.which("nft"):
        pytest.skip("nft (nftables) not found: the netdev ingress drop rule needs it")
    started: list[tuple[object, DirectorProcess | None, str]] = []

    def start(lab, cf: str, drops: list[str], extra: list[str] = ()) -> DirectorProcess:
        table = f"pylvs_afp_{secrets.token_hex(3)}"
        started.append((lab, None, table))
        for cmd in ingress_drop_commands(table, topology.PUBLIC_IF, drops):
            lab.run(lab.director, cmd)
        path = tmp_path / f"{table}.cf"
        path.write_text(cf)
        d = DirectorProcess(lab, path, list(extra))
        started[-1] = (lab, d, table)
        return d

    yield start
    for lab, d, table in started:
        if d is not None and d.popen.poll() is None:
            d.popen.terminate()
            try:
                d.popen.communicate(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                d.popen.kill()
                d.popen.communicate()
        lab.run(lab.director, ["nft", "delete", "table", "netdev", table], check=False)


# --- the BPF program, run by a tiny classic-BPF interpreter (no root needed) ------------

def _run_bpf(prog, frame: bytes, pkttype: int) -> int:
    """What the kernel's sk_run_filter returns for ``frame`` (the instructions vip_filter
    uses: LD W/H ABS incl. the pkttype ancillary load, JEQ K, RET K)."""
    pc = a = 0
    while True:
        code, jt, jf, k = prog[pc]
        pc += 1
        if code == afp.BPF_RET | afp.BPF_K:
            return k
        if code == afp.BPF_LD | afp.BPF_W | afp.BPF_ABS:
            if k == (afp.SKF_AD_OFF + afp.SKF_AD_PKTTYPE) & 0xFFFFFFFF:
                a = pkttype
            elif k + 4 > len(frame):
                return 0  # the kernel ends the program on an out-of-bounds load
            else:
                a = int.from_bytes(frame[k:k + 4], "big")
        elif code == afp.BPF_LD | afp.BPF_H | afp.BPF_ABS:
            if k + 2 > len(frame):
                return 0
            a = int.from_bytes(frame[k:k + 2], "big")
        elif code == afp.BPF_JMP | afp.BPF_JEQ | afp.BPF_K:
            pc += jt if a == k else jf
        else:
            raise AssertionError(f"unexpected instruction {code:#x}")


def test_vip_filter_program():
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import ARP

    vips = ["10.77.1.100", "192.0.2.10", "192.0.2.77"]
    prog = afp.vip_filter(int(ipaddress.IPv4Address(v)) for v in vips)
    assert all(0 <= jt < 256 and 0 <= jf < 256 for _, jt, jf, _ in prog)

    def frame(dst: str) -> bytes:
        return bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:02") / IP(src="10.77.1.51", dst=dst)
                     / UDP(dport=9000))

    for vip in vips:
        assert _run_bpf(prog, frame(vip), afp.PACKET_HOST) == afp.SNAP_ALL
        for other in (afp.PACKET_OUTGOING, afp.PACKET_OTHERHOST, afp.PACKET_BROADCAST):
            assert _run_bpf(prog, frame(vip), other) == 0
    assert _run_bpf(prog, frame("10.77.1.1"), afp.PACKET_HOST) == 0
    arp = Ether(dst="ff:ff:ff:ff:ff:ff", src="02:00:00:00:00:02") / ARP(pdst="10.77.1.100", psrc="10.77.1.51")
    assert _run_bpf(prog, bytes(arp), afp.PACKET_HOST) == 0
    assert _run_bpf(prog, frame("10.77.1.100")[:20], afp.PACKET_HOST) == 0
    one = afp.vip_filter([1])
    assert _run_bpf(one, frame("0.0.0.1"), afp.PACKET_HOST) == afp.SNAP_ALL
    with pytest.raises(ValueError):
        afp.vip_filter([])
    with pytest.raises(ValueError):
        afp.vip_filter(range(afp.MAX_FILTER_VIPS + 1))


def _service_drops(lab) -> list[str]:
    return [f"ip daddr {lab.vip} tcp dport {lab.http_port}", f"ip daddr {lab.vip} udp dport {lab.udp_port}"]


def _alternates(names: list[str]) -> bool:
    return all(a != b for a, b in zip(names, names[1:], strict=False))


def _http_and_udp_through(lab, d: DirectorProcess) -> dict:
    client = lab.clients[0]
    servers = sorted(rs.name for rs in lab.real_servers)
    bodies = [lab.http_get(client, lab.vip).body.decode().strip() for _ in range(6)]
    assert sorted(set(bodies)) == servers and _alternates(bodies), bodies  # round robin
    replies = [lab.udp_echo(client, lab.vip, f"hello-{k}".encode()) for k in range(4)]
    names = [r.split()[0].decode() for r in replies]
    assert [r.split()[1] for r in replies] == [f"hello-{k}".encode() for k in range(4)]
    assert sorted(set(names)) == servers and _alternates(names), names
    return d.snapshot()


def lab_cf(lab) -> str:
    """HTTP and the UDP echo on the lab's VIP, rr over its real servers (lab.kind's method)."""
    return lvs_cf(lab, [Service(scheduler="rr", port=lab.http_port),
                        Service(name="echo", port=lab.udp_port, protocol="udp", scheduler="rr")])


PAD_HEADERS, PAD_BYTES = 40, 8000  # a 320 KB request: the client's TCP sends GSO super-packets


def _big_request(lab) -> str:
    """A GET whose headers make the client send ~320 KB through the director; returns the
    answering server's name (it only answers once it parsed every byte)."""
    pad = "".join(f"X-Pad-{k}: {'p' * PAD_BYTES}\r\n" for k in range(PAD_HEADERS))
    request = f"GET / HTTP/1.1\r\nHost: {lab.vip}\r\n{pad}Connection: close\r\n\r\n".encode()
    with lab.socket(lab.clients[0]) as sock:
        sock.settimeout(10)
        sock.connect((lab.vip, lab.http_port))
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    return body.decode().strip()


def _udp_burst(lab) -> tuple[int, float]:
    """A bounded burst of 64-byte datagrams to the VIP's echo port from the client."""
    sock = lab.socket(lab.clients[0], socket.AF_INET, socket.SOCK_DGRAM)
    payload = b"x" * 64
    sent = 0
    t0 = time.monotonic()
    with sock:
        sock.setblocking(False)
        while sent < BURST_PACKETS and time.monotonic() - t0 < BURST_SECONDS:
            try:
                sock.sendto(payload, (lab.vip, lab.udp_port))
                sent += 1
            except BlockingIOError:
                time.sleep(0.0005)
    return sent, time.monotonic() - t0


def test_dr_http_round_robin_udp_echo_and_rate(make_lab, afp_director):
    lab = make_lab(DIRECT, real_servers=2, vip_on_director=True)
    cf = lab_cf(lab)
    d = afp_director(lab, cf, _service_drops(lab))
    snap = _http_and_udp_through(lab, d)
    io = snap["io"]
    assert io["sent"] >= 6 * 3 + 4, io  # at least SYN, ACK, request per GET, and the datagrams
    # Frames from the client's stack on a veth carry partial checksums: completed on receipt.
    assert io["csum_completed"] > 0, io
    assert _big_request(lab) in {rs.name for rs in lab.real_servers}
    snap = d.snapshot()
    io = snap["io"]
    assert io["gso_frames"] > 0 and io["gso"] > 0, io  # GSO super-packets went through whole
    assert (io["no_next_hop"], io["send_errors"], io["truncated"], io["tso_segments"]) == (0, 0, 0, 0), io
    assert snap["reasons"].get("tunnel", 0) == 0, snap

    sent, seconds = _udp_burst(lab)
    time.sleep(0.5)  # let the director drain its socket
    end = d.stop()
    frames = end["io"]["frames"] - io["frames"]
    cpu = end["cpu"] - snap["cpu"]
    forwarded = end["io"]["sent"] - io["sent"]
    print(f"\nafpacket DR burst: {sent} datagrams in {seconds:.2f} s from the client; the director took "
          f"{frames} frames ({frames / seconds:,.0f} frames/s over the burst), sent {forwarded}, "
          f"{cpu / max(frames, 1) * 1e6:.1f} us CPU per frame; stats {end['io']}")
    e = end["io"]
    assert e["no_next_hop"] == 0
    # Every DR verdict was sent or counted as a send problem (a burst may fill the out
    # queue).  icmp_dr: the client's port unreachables about echo replies that reached
    # its closed sockets, forwarded to the real server as the kernel does.
    dr = end["reasons"]["dr"] + end["reasons"].get("icmp_dr", 0)
    assert dr == e["sent"] + e["send_errors"] + e["too_big"], end


def test_tunnel_http_round_robin_and_udp_echo(make_lab, afp_director):
    lab = make_lab(TUNNEL, real_servers=2, vip_on_director=True)
    cf = lab_cf(lab)
    d = afp_director(lab, cf, _service_drops(lab))
    snap = _http_and_udp_through(lab, d)
    io = snap["io"]
    assert io["sent"] >= 6 * 3 + 4 and snap["reasons"].get("dr", 0) == 0, snap
    assert (io["no_next_hop"], io["send_errors"], io["too_big"]) == (0, 0, 0), io
    # GSO super-packets (and full-size segments, 20 bytes too big once encapsulated) are
    # cut into segments that fit the tunnel.
    assert _big_request(lab) in {rs.name for rs in lab.real_servers}
    io = d.snapshot()["io"]
    assert io["tso_segments"] > 0 and io["too_big"] == 0, io
    # A UDP datagram that no longer fits once encapsulated, sent with DF: the client gets
    # ICMP fragmentation needed with the tunnel's MTU, from the VIP.
    mtu = int(lab.run(lab.director, ["cat", f"/sys/class/net/{topology.PRIVATE_IF}/mtu"]).stdout)
    client = lab.clients[0]
    with lab.socket(client, socket.AF_INET, socket.SOCK_DGRAM) as sock, \
            lab.socket(client, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(probes.ETH_P_ALL)) as cap:
        cap.bind((topology.HOST_IF, 0))
        sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_PROBE)  # DF, ignore the PMTU
        sock.sendto(b"u" * (mtu - 28), (lab.vip, lab.udp_port))
        frame = probes.capture(cap, lambda f: f.ethertype == probes.ETH_P_IP and f.payload[9] == 1
                               and f.payload[20:22] == bytes([3, 4]), timeout=3)
    assert frame is not None, "no ICMP fragmentation needed"
    icmp = frame.payload
    assert socket.inet_ntoa(icmp[12:16]) == lab.vip and socket.inet_ntoa(icmp[16:20]) == client.ip()
    assert int.from_bytes(icmp[26:28], "big") == mtu - 20
    end = d.stop()
    assert end["io"]["frag_needed"] == 1, end
    assert end["reasons"]["tunnel"] == end["io"]["sent"] + end["io"]["frag_needed"], end


# The golden cases this adapter can carry: DR and tunnel forwarding, and the ICMP port
# unreachable the director answers with when no real server is available.
V_REJECT = getattr(en, "V_REJECT", None)
GOLDEN = [c for c in CASES if c.cf in (DR_CF, TUN_CF)
          or all(s.counter == "nat_in" for s in c.steps)  # NAT sent on like DR (not this adapter's job)
          or (V_REJECT is not None and all(s.verdict == V_REJECT for s in c.steps))]


def test_golden_cases_as_frames(make_lab, afp_director):
    """Each golden DR/TUNNEL/NAT-in/reject case through a fresh director: frames injected into
    dir1's public interface from client1, captured on rs1's interface (forwarded) or on
    client1's (rejects).  The DR cases run without the BPF filter (frames sorted in
    Python), the others with it."""
    assert len(GOLDEN) >= 4
    lab = make_lab(DIRECT, real_servers=1)
    client, rs1, director = lab.clients[0], lab.real_servers[0], lab.director
    rs_mac = rs1.iface(topology.PRIVATE).mac
    dir_pub_mac = director.iface(topology.PUBLIC).mac
    dir_priv_mac = director.iface(topology.PRIVATE).mac
    for case in GOLDEN:
        extra = ["--neigh", f"{RIP1}={rs_mac}", "--neigh", f"{RIP2}={rs_mac}", "--tunnel-src", DIRECTOR]
        if case.cf == DR_CF:
            extra.append("--no-filter")
        d = afp_director(lab, case.cf, [f"ip daddr {VIP}"], extra)
        with lab.socket(client, socket.AF_PACKET, socket.SOCK_RAW) as tx, \
                lab.socket(rs1, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(probes.ETH_P_ALL)) as cap_rs, \
                lab.socket(client, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(probes.ETH_P_ALL)) as cap_cl:
            tx.bind((topology.HOST_IF, 0))
            cap_rs.bind((topology.HOST_IF, 0))
            cap_cl.bind((topology.HOST_IF, 0))
            for k, step in enumerate(case.steps):
                expected = bytes(step.packet) if step.expected is None else bytes(step.expected)
                tx.send(bytes(Ether(dst=dir_pub_mac, src=client.mac) / step.packet))
                if step.verdict == V_REJECT:
                    cap, macs = cap_cl, (client.mac, dir_pub_mac, probes.ETH_P_IP)
                else:
                    cap, macs = cap_rs, (rs_mac, dir_priv_mac, probes.ETH_P_IP)
                frame = probes.capture(cap, lambda f, e=expected: f.payload[:len(e)] == e, timeout=3)
                assert frame is not None, f"{case.desc} step {k}: the expected frame was not seen"
                assert (frame.dst_mac, frame.src_mac, frame.ethertype) == macs
        end = d.stop()
        want: dict[str, int] = {}
        for step in case.steps:
            want[step.counter] = want.get(step.counter, 0) + 1
        assert end["reasons"] == want, case.desc
        kind = "rejected" if case.steps[0].verdict == V_REJECT else "sent"  # DR, TUNNEL, NAT-in
        assert end["io"][kind] == len(case.steps) and end["io"]["no_next_hop"] == 0, end


def test_frame_sender_and_dr_sender(make_lab):
    """FrameSender alone, and DrSender (the NFQUEUE adapters' on_dr): frames from dir1's
    private interface reach rs1 as sent."""
    lab = make_lab(DIRECT, real_servers=1)
    rs1, director = lab.real_servers[0], lab.director
    rs_mac = rs1.iface(topology.PRIVATE).mac
    dir_priv_mac = director.iface(topology.PRIVATE).mac
    frames = [bytes(Ether(dst=rs_mac, src=dir_priv_mac)
                    / probes.ipv4_udp(CLIENT, VIP, 40000 + k, 80, f"fs-{k}".encode())) for k in range(3)]
    with lab.socket(rs1, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(probes.ETH_P_ALL)) as cap:
        cap.bind((topology.HOST_IF, 0))
        got = lab.call(director, frame_sender_probe, topology.PRIVATE_IF, frames)
        for f in frames:
            seen = probes.capture(cap, lambda x, f=f: x.payload == f[ETH_HLEN:], timeout=3)
            assert seen is not None and (seen.dst_mac, seen.src_mac) == (rs_mac, dir_priv_mac)
    assert (got["first"], got["sent"], got["errors"], got["mac"]) == (0, 2, 0, dir_priv_mac), got
    assert got["missing"] != 0 and got["mtu"] > 0

    # DrSender, the NFQUEUE adapters' on_dr: IP packets from batch rows out as frames.
    packets = [probes.ipv4_udp(CLIENT, VIP, 41000 + k, 80, f"dr-{k}".encode()) for k in range(3)]
    with lab.socket(rs1, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(probes.ETH_P_ALL)) as cap:
        cap.bind((topology.HOST_IF, 0))
        stats = lab.call(director, dr_sender_probe, topology.PRIVATE_IF, packets, rs_mac)
        for p in packets[1:]:
            seen = probes.capture(cap, lambda x, p=p: x.payload == p, timeout=3)
            assert seen is not None and (seen.dst_mac, seen.src_mac) == (rs_mac, dir_priv_mac)
    assert stats == {"dr_sent": 2, "unresolved": 1, "send_errors": 0, "too_big": 0}
