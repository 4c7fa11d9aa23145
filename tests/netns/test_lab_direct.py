"""Direct routing: real servers hold the VIP but never answer ARP for it, and answer the
client directly (through gw, not the director)."""

from __future__ import annotations

import socket

from pylvs.lab import probes, topology
from pylvs.lab.topology import DIRECT, VIP

CLIENT_PORT = 40001


def test_real_servers_do_not_answer_arp_for_the_vip(shared_lab):
    lab = shared_lab(DIRECT, 3, 1)
    targets = [VIP, *lab.rips]
    # scapy srp inside the director's namespace, from its LAN side (eth1).
    answers = lab.call(lab.director, probes.arp_probe_many, topology.PRIVATE_IF, targets, 1.0)
    assert answers[VIP] == [], f"someone answered ARP for the VIP: {answers[VIP]}"
    # Positive control: the same probe for each RIP gets that server's MAC.
    for rs in lab.real_servers:
        assert answers[rs.ip(topology.PRIVATE)] == [rs.iface(topology.PRIVATE).mac]
    # ... although every real server does own the VIP (on lo).
    for rs in lab.real_servers:
        assert f"inet {VIP}/32" in lab.run(rs, ["ip", "-4", "addr", "show", "dev", "lo"]).stdout


def test_dr_reply_goes_straight_to_the_client(shared_lab):
    """Do what a DR director does (frame to the RS's MAC, IP untouched: client -> VIP) and
    check the client gets the answer from the VIP, delivered by gw, not by the director."""
    lab = shared_lab(DIRECT, 3, 1)
    client = lab.clients[0]
    cip = client.ip()
    gw_mac = lab.gateway.iface(topology.PUBLIC).mac
    dir_mac = lab.director.iface(topology.PRIVATE).mac
    with lab.socket(lab.director, socket.AF_PACKET, socket.SOCK_RAW) as tx, \
            lab.socket(client, socket.AF_INET, socket.SOCK_DGRAM) as rx, \
            lab.socket(client, socket.AF_PACKET, socket.SOCK_RAW,
                       socket.htons(probes.ETH_P_ALL)) as cap:
        tx.bind((topology.PRIVATE_IF, 0))
        cap.bind((topology.HOST_IF, 0))
        rx.bind((cip, CLIENT_PORT))
        rx.settimeout(2)
        for rs in lab.real_servers:
            payload = f"dr-{rs.name}".encode()
            packet = probes.ipv4_udp(cip, VIP, CLIENT_PORT, lab.udp_port, payload)
            tx.send(probes.ethernet(rs.iface(topology.PRIVATE).mac, dir_mac, packet))
            data, peer = rx.recvfrom(2048)
            assert peer == (VIP, lab.udp_port)
            assert data == f"{rs.name} ".encode() + payload
            frame = probes.capture(
                cap, lambda f, data=data: (u := probes.udp_of(f)) is not None and u[:4] ==
                (VIP, cip, lab.udp_port, CLIENT_PORT) and u[4] == data, timeout=2)
            assert frame is not None and frame.src_mac == gw_mac
