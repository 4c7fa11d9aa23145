"""Fuzzed packets toward a VIP (hypothesis + scapy), for the tests that send them through
a running loop (test_nfq_loop, test_afxdp): TCP with any flags and options, UDP, ICMP
errors whose quote is cut anywhere, and raw headers of any length and bytes.
``send_fuzz`` sends them from a lab host, bounded in count and paced."""

from __future__ import annotations

import socket
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.packet import Raw

from pylvs.lab import topology as topo

_client_port = st.integers(1024, 65535)
_l4_garbage = st.binary(max_size=60)


@st.composite
def fuzzed(draw, vip: str, client: str):
    kind = draw(st.sampled_from(["tcp", "udp", "icmp_error", "raw_tcp", "raw_udp", "raw_icmp"]))
    ip = IP(src=client, dst=vip, tos=draw(st.integers(0, 255)), ttl=draw(st.integers(2, 255)),
            flags=draw(st.sampled_from([0, "DF"])))  # fmt: skip
    if kind == "tcp":
        flags = draw(st.sampled_from(["S", "SA", "A", "PA", "FA", "R", "SR", "SF", "", "FPU"]))
        port = draw(st.sampled_from([topo.HTTP_PORT, topo.HTTP_PORT, 0, 22]))
        opts = draw(st.sampled_from([[], [("MSS", 1460)], [("WScale", 14), ("SAckOK", b"")], [("NOP", None)] * 3]))
        return ip / TCP(sport=draw(_client_port), dport=port, flags=flags, seq=draw(st.integers(0, 2**32 - 1)),
                        options=opts) / Raw(draw(_l4_garbage))  # fmt: skip
    if kind == "udp":
        return ip / UDP(sport=draw(_client_port), dport=draw(st.sampled_from([topo.UDP_ECHO_PORT, 9]))) / Raw(
            draw(_l4_garbage))
    if kind == "icmp_error":  # about a reply we may or may not know, quote cut anywhere
        quote = bytes(IP(src=vip, dst=client) / TCP(sport=topo.HTTP_PORT, dport=draw(_client_port)))
        return ip / ICMP(type=draw(st.sampled_from([3, 4, 11, 12])), code=draw(st.integers(0, 15))) / Raw(
            quote[:draw(st.integers(0, len(quote)))])
    proto = {"raw_tcp": 6, "raw_udp": 17, "raw_icmp": 1}[kind]  # a header of any length, any bytes
    return IP(src=client, dst=vip, proto=proto) / Raw(draw(_l4_garbage))


def send_fuzz(lab, host: str, vip: str, *, examples: int, batch: int, gap: float) -> dict[str, int]:
    """``examples`` hypothesis draws of 1..``batch`` fuzzed packets each, sent from
    ``host`` to ``vip`` through a raw IP socket (IP_HDRINCL), ``gap`` s apart; how many
    left and how many the host's own stack refused (a header it will not send)."""
    client = lab.host(host).ip()
    raw = lab.socket(host, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    sent = {"n": 0, "refused": 0}

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(packets=st.lists(fuzzed(vip, client), min_size=1, max_size=batch))
    def send(packets):
        for p in packets:
            try:
                raw.sendto(bytes(p), (vip, 0))
                sent["n"] += 1
            except OSError:
                sent["refused"] += 1
            time.sleep(gap)

    try:
        send()
    finally:
        raw.close()
    return sent
