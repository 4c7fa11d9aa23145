"""LVS-TUN: IPIP from the director reaches the VIP on each real server (kernel ipip or the
userspace decapsulator) and the real server answers the client directly."""

from __future__ import annotations

import socket

import pytest

from pylvs.lab import netns, probes, topology, tunnel
from pylvs.lab.topology import TUNNEL, VIP

CLIENT_UDP_PORT = 40002
CLIENT_TCP_PORT = 40003


def test_tunnel_mode_is_detected(shared_lab):
    lab = shared_lab(TUNNEL, 3, 1)
    assert lab.tunnel_mode in (tunnel.MODE_KERNEL, tunnel.MODE_USERSPACE)
    if not tunnel.ipip_loaded():
        # No ipip in this kernel: the userspace decapsulator runs on every real server.
        assert lab.tunnel_mode == tunnel.MODE_USERSPACE, lab.tunnel_reason
        decaps = [p for p in lab.processes if p.what == "decap"]
        assert sorted(p.host for p in decaps) == [rs.name for rs in lab.real_servers]
        assert all(netns.pid_running(p.pid) for p in decaps)
    dev = tunnel.KERNEL_DEV if lab.tunnel_mode == tunnel.MODE_KERNEL else tunnel.USERSPACE_DEV
    for rs in lab.real_servers:
        assert f"inet {VIP}/32" in lab.run(rs, ["ip", "-4", "addr", "show", "dev", dev]).stdout
        assert netns.read_sysctl(rs.netns, f"net.ipv4.conf.{dev}.rp_filter") == "0"


def _capture_socket(lab, host):
    cap = lab.socket(host, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(probes.ETH_P_ALL))
    cap.bind((topology.HOST_IF, 0))
    return cap


def test_ipip_udp_answered_directly_to_client(shared_lab):
    lab = shared_lab(TUNNEL, 3, 1)
    client = lab.clients[0]
    cip = client.ip()
    gw_mac = lab.gateway.iface(topology.PUBLIC).mac
    with lab.socket(lab.director, socket.AF_INET, socket.SOCK_RAW, tunnel.IPPROTO_IPIP) as tx, \
            lab.socket(client, socket.AF_INET, socket.SOCK_DGRAM) as rx, \
            _capture_socket(lab, client) as cap:
        rx.bind((cip, CLIENT_UDP_PORT))
        rx.settimeout(2)
        for rs, rip in zip(lab.real_servers, lab.rips, strict=True):
            payload = f"tun-{rs.name}".encode()
            inner = probes.ipv4_udp(cip, VIP, CLIENT_UDP_PORT, lab.udp_port, payload)
            probes.send_ipip(tx, rip, inner)  # outer: director -> RIP, protocol 4
            data, peer = rx.recvfrom(2048)
            assert peer == (VIP, lab.udp_port)
            assert data == f"{rs.name} ".encode() + payload
            frame = probes.capture(
                cap, lambda f, data=data: (u := probes.udp_of(f)) is not None and u[4] == data,
                timeout=2)
            assert frame is not None and frame.src_mac == gw_mac  # via gw, not the director


@pytest.mark.parametrize("rs_index", [0, 2])
def test_ipip_tcp_syn_gets_syn_ack_at_the_client(shared_lab, rs_index):
    lab = shared_lab(TUNNEL, 3, 1)
    client = lab.clients[0]
    cip = client.ip()
    rip = lab.rips[rs_index]
    sport = CLIENT_TCP_PORT + rs_index
    with lab.socket(lab.director, socket.AF_INET, socket.SOCK_RAW, tunnel.IPPROTO_IPIP) as tx, \
            _capture_socket(lab, client) as cap:
        probes.send_ipip(tx, rip, probes.ipv4_tcp(cip, VIP, sport, lab.http_port))
        frame = probes.capture(
            cap, lambda f: (t := probes.tcp_of(f)) is not None
            and t[:4] == (VIP, cip, lab.http_port, sport), timeout=2)
    assert frame is not None, "no SYN-ACK from the VIP reached the client"
    assert probes.tcp_of(frame)[4] & (probes.TCP_SYN | probes.TCP_ACK) == probes.TCP_SYN | probes.TCP_ACK
    assert frame.src_mac == lab.gateway.iface(topology.PUBLIC).mac


def test_tunnel_with_two_directors(shared_lab):
    lab = shared_lab(TUNNEL, 3, 2)
    cip = lab.clients[0].ip()
    with lab.socket(lab.directors[1], socket.AF_INET, socket.SOCK_RAW, tunnel.IPPROTO_IPIP) as tx, \
            lab.socket(lab.clients[0], socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind((cip, CLIENT_UDP_PORT + 10))
        rx.settimeout(2)
        for rs, rip in zip(lab.real_servers, lab.rips, strict=True):
            probes.send_ipip(tx, rip, probes.ipv4_udp(cip, VIP, CLIENT_UDP_PORT + 10,
                                                      lab.udp_port, b"x"))
            assert rx.recvfrom(2048) == (f"{rs.name} x".encode(), (VIP, lab.udp_port))
