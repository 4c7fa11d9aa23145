"""Gratuitous ARP in a two-director lab: a failover's announcement moves the client.

The client first learns the VIP's MAC as dir1's by asking (ping -> ARP).  Then the VIP
moves to dir2 and dir2 announces it (pylvs.ha.garp.announce, and the `pylvs send-arp`
command as pulse's send_arp); the client's neighbour entry must follow to dir2's MAC
although the client sends nothing, and a capture in the client's namespace must show the
exact 60-byte frames of reference 2.6.
"""

from __future__ import annotations

import json
import select
import socket
import sys
import time

from pylvs.ha import garp
from pylvs.lab import topology as topo

ETH_P_ARP = 0x0806
NEIGH_TIMEOUT = 5.0  # seconds to wait for a neighbour entry to show the expected MAC
CAPTURE_TIMEOUT = 3.0
FRAMES = 3
INTERVAL = 0.2  # seconds between frames: the test need not wait pulse's full second


def neigh_mac(lab, host: str, ip: str) -> str | None:
    out = lab.run(host, ["ip", "-j", "neigh", "show", ip, "dev", topo.HOST_IF]).stdout
    entries = json.loads(out or "[]")
    return entries[0].get("lladdr") if entries else None


def wait_neigh(lab, host: str, ip: str, mac: str) -> str | None:
    deadline = time.monotonic() + NEIGH_TIMEOUT
    seen = neigh_mac(lab, host, ip)
    while seen != mac and time.monotonic() < deadline:
        time.sleep(0.1)
        seen = neigh_mac(lab, host, ip)
    return seen


def move_vip(lab, src: str | None, dst: str) -> None:
    if src is not None:
        lab.run(src, ["ip", "addr", "del", f"{lab.vip}/32", "dev", topo.PUBLIC_IF])
    lab.run(dst, ["ip", "addr", "add", f"{lab.vip}/32", "dev", topo.PUBLIC_IF, "label", f"{topo.PUBLIC_IF}:1"])


def learn_from_dir1(lab) -> None:
    """The client asks for the VIP (ARP) while dir1 holds it."""
    lab.run("client1", ["ip", "neigh", "flush", "dev", topo.HOST_IF])
    lab.run("client1", ["ping", "-c", "1", "-W", "2", lab.vip])
    assert wait_neigh(lab, "client1", lab.vip, lab.hosts["dir1"].mac) == lab.hosts["dir1"].mac


def capture(lab) -> socket.socket:
    """An ARP capture on the client's eth0 (outgoing frames included)."""
    sock = lab.socket("client1", socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
    sock.bind((topo.HOST_IF, ETH_P_ARP))
    return sock


def captured(sock: socket.socket, want: int) -> list[tuple[bytes, int]]:
    """(frame, pkttype) of ARP frames seen, until `want` from elsewhere or the timeout."""
    frames: list[tuple[bytes, int]] = []
    deadline = time.monotonic() + CAPTURE_TIMEOUT
    while sum(1 for _, t in frames if t != socket.PACKET_OUTGOING) < want:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([sock], [], [], remaining)[0]:
            break
        data, addr = sock.recvfrom(2048)
        frames.append((data, addr[2]))
    return frames


def check_moved(lab, sock: socket.socket) -> None:
    dir2_mac = lab.hosts["dir2"].mac
    assert wait_neigh(lab, "client1", lab.vip, dir2_mac) == dir2_mac
    frames = captured(sock, FRAMES)
    expected = garp.garp_frame(garp.parse_mac(dir2_mac), lab.vip)
    received = [f for f, t in frames if t != socket.PACKET_OUTGOING]
    assert received == [expected] * FRAMES
    assert len(expected) == 60
    # The client only listened: it sent no ARP of its own while its entry moved.
    assert [f for f, t in frames if t == socket.PACKET_OUTGOING] == []


def vip_moved_to_dir2(make_lab):
    """A lab whose client learned the VIP from dir1, the VIP since moved to dir2 (nothing
    announced yet), and a capture socket in the client."""
    lab = make_lab("nat", real_servers=1, directors=2)
    move_vip(lab, None, "dir1")
    learn_from_dir1(lab)
    move_vip(lab, "dir1", "dir2")
    return lab, capture(lab)


def test_announce_moves_the_client(make_lab) -> None:
    lab, sock = vip_moved_to_dir2(make_lab)
    with sock:
        assert neigh_mac(lab, "client1", lab.vip) == lab.hosts["dir1"].mac  # nothing moved it yet

        def sender_in_dir2(device: str) -> garp.GarpSender:
            return garp.GarpSender(device, sock=lab.socket("dir2", socket.AF_PACKET, socket.SOCK_RAW, 0))

        sent = garp.announce([(lab.vip, f"{topo.PUBLIC_IF}:1")], count=FRAMES, interval=INTERVAL,
                             sender_factory=sender_in_dir2)
        assert sent == FRAMES
        check_moved(lab, sock)


def test_send_arp_command_moves_the_client(make_lab) -> None:
    lab, sock = vip_moved_to_dir2(make_lab)
    with sock:
        mac12 = lab.hosts["dir2"].mac.replace(":", "")  # as pulse writes it
        proc = lab.run("dir2", [sys.executable, "-m", "pylvs", "send-arp", "-i", f"{topo.PUBLIC_IF}:1", lab.vip,
                                mac12, "10.77.1.255", "ffffffffffff", "--count", str(FRAMES),
                                "--interval", str(INTERVAL)], check=False)
        assert proc.returncode == 0, proc.stderr
        check_moved(lab, sock)

    bad = lab.run("dir2", [sys.executable, "-m", "pylvs", "send-arp", "-i", "eth7", lab.vip, mac12,
                           "10.77.1.255", "ffffffffffff"], check=False)
    assert bad.returncode == 1 and "eth7" in bad.stderr
