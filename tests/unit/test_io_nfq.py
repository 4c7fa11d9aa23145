"""NFQUEUE adapters without root: the shared verdict mapping (pylvs.dataplane.io._verdict),
the checksum completion of csrc/nfq.c, and the native adapter's receive/verdict code fed
crafted netlink messages through a socketpair standing for the kernel
(``NativeQueue.over_socket``)."""

from __future__ import annotations

import socket
import struct
import threading

import numpy as np
import pytest
from golden import CLIENT, CPORT, DR_CF, HANDSHAKE, NAT_CF, NOW, RIP1, TUN_CF, VIP, VPORT, Director, tcp, udp
from pylvs._native import ffi, lib
from scapy.layers.inet import IP, TCP, UDP
from scapy.packet import Raw

from pylvs.dataplane import engine as en
from pylvs.dataplane import rewrite as rw
from pylvs.dataplane.io import _verdict as vd
from pylvs.dataplane.io.nfq_native import NativeQueue

# linux/netfilter/nfnetlink_queue.h, nfnetlink.h, netlink.h
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT = 0, 1
NFQA_PACKET_HDR, NFQA_VERDICT_HDR, NFQA_MARK, NFQA_PAYLOAD, NFQA_CAP_LEN, NFQA_SKB_INFO = 1, 2, 3, 10, 13, 14
NFQA_SKB_CSUMNOTREADY, NFQA_SKB_GSO = 1, 2
NLMSG_ERROR = 2
NF_DROP, NF_ACCEPT = 0, 1
QUEUE = 3


# --- the verdict mapping ---------------------------------------------------------------

def test_actions_per_verdict() -> None:
    v = np.array([en.V_PASS, en.V_DROP, en.V_NAT, en.V_DR, en.V_TUNNEL, 200], dtype=np.uint8)
    assert vd.actions(v).tolist() == [vd.ACCEPT, vd.DROP, vd.ACCEPT_PAYLOAD, vd.DROP, vd.ACCEPT_PAYLOAD, vd.DROP]
    out = np.full(8, 9, dtype=np.uint8)
    assert vd.actions(v, out=out).tolist() == out[:6].tolist()
    assert out[6:].tolist() == [9, 9]


def test_actions_match_c_constants() -> None:
    assert (vd.ACCEPT, vd.DROP, vd.ACCEPT_PAYLOAD) == (lib.PL_NFQ_ACCEPT, lib.PL_NFQ_DROP, lib.PL_NFQ_ACCEPT_PAYLOAD)


def test_count_and_fallback() -> None:
    s = vd.new_stats()
    vd.count_actions(s, np.array([0, 1, 2, 2, 0], dtype=np.uint8))
    assert (s["accepted"], s["dropped"], s["mangled"]) == (2, 1, 2)
    assert vd.fallback_action(True) == vd.ACCEPT and vd.fallback_action(False) == vd.DROP
    assert set(vd.STAT_KEYS) >= {"packets", "batches", "accepted", "dropped", "mangled", "dr_sent",
                                 "dr_without_sender", "recv_errors", "gso_packets", "csum_fixed", "oversize"}


def test_dr_hand_off() -> None:
    d = Director(DR_CF)
    b = en.batch_from_packets([bytes(tcp(CLIENT, VIP, CPORT, VPORT, "S")), bytes(tcp(CLIENT, "192.0.2.77", 1, 2))])
    v = en.process(b, NOW, d.tables, d.ct, d.counters)
    calls = []
    s = vd.new_stats()
    vd.hand_off(b, v, lambda batch, idx, rows: calls.append((idx.tolist(), rows.tolist())), None, s)
    assert calls == [([0], [int(v.dest_row[0])])] and d.rip(calls[0][1][0]) == RIP1
    assert s["dr_sent"] == 1
    vd.hand_off(b, v, None, None, s)
    assert s["dr_without_sender"] == 1


def test_strides() -> None:
    assert vd.stride_for(False) == en.STRIDE_DEFAULT
    assert vd.STRIDE_GSO % vd.PAGE == 0
    assert vd.STRIDE_GSO >= rw.HEADROOM + vd.IPV4_MAX + vd.NETLINK_META
    assert vd.NETLINK_META == lib.PL_NFQ_META_MAX


# --- checksum completion -----------------------------------------------------------------

def _partial(pkt: bytes) -> bytearray:
    """``pkt`` as CHECKSUM_PARTIAL leaves it: the L4 checksum field holds only the
    (uncomplemented) pseudo-header sum."""
    b = bytearray(pkt)
    ihl = (b[0] & 15) * 4
    off = ihl + (16 if b[9] == 6 else 6)
    s = sum(struct.unpack("!4H", bytes(b[12:20]))) + b[9] + (len(b) - ihl)
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    b[off:off + 2] = struct.pack("!H", s)
    return b


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 1001, 4000])
def test_csum_complete(n: int) -> None:
    for pkt in (bytes(tcp(CLIENT, VIP, CPORT, VPORT, "PA", bytes(range(256)) * (n // 256) + b"x" * (n % 256))),
                bytes(udp(CLIENT, VIP, 1, 2, b"y" * n))):
        b = _partial(pkt)
        buf = ffi.from_buffer("uint8_t[]", b)
        assert lib.pl_csum_l4_complete(buf, len(b)) == 1
        assert bytes(b) == pkt


@pytest.mark.parametrize("n", [0, 1, 9, 1001])
def test_csum_partial_is_recognised_only_as_the_pseudo_header_sum(n: int) -> None:
    """AF_XDP loses the CHECKSUM_PARTIAL mark: the loop completes a checksum exactly when
    it holds the pseudo-header sum (completing a complete one would rewrite it to itself)."""
    for pkt in (bytes(tcp(CLIENT, VIP, CPORT, VPORT, "PA", b"q" * n)), bytes(udp(CLIENT, VIP, 1, 2, b"y" * n))):
        assert lib.pl_csum_l4_partial(pkt, len(pkt)) == 0  # complete
        partial = bytes(_partial(pkt))
        assert lib.pl_csum_l4_partial(partial, len(partial)) == 1
    no_sum = bytearray(bytes(udp(CLIENT, VIP, 1, 2, b"y" * n)))
    no_sum[26:28] = b"\0\0"  # UDP without a checksum: nothing to complete
    assert lib.pl_csum_l4_partial(bytes(no_sum), len(no_sum)) == 0
    frag = bytes(_partial(bytes(IP(src=CLIENT, dst=VIP, flags="MF") / TCP() / Raw(b"z" * 8))))
    assert lib.pl_csum_l4_partial(frag, len(frag)) == 0
    assert lib.pl_csum_l4_partial(b"\x45" + b"\0" * 10, 11) == 0


def test_csum_complete_leaves_fragments_and_others() -> None:
    frag = bytearray(bytes(IP(src=CLIENT, dst=VIP, flags="MF") / TCP() / Raw(b"z" * 8)))
    icmp = bytearray(bytes(IP(src=CLIENT, dst=VIP) / Raw(b"\x08\x00" + b"\x00" * 10)))
    for b in (frag, icmp, bytearray(b"\x45" + b"\x00" * 10)):
        before = bytes(b)
        assert lib.pl_csum_l4_complete(ffi.from_buffer("uint8_t[]", b), len(b)) == 0
        assert bytes(b) == before


# --- the native adapter over a fake kernel ---------------------------------------------

def _nla(kind: int, data: bytes) -> bytes:
    n = 4 + len(data)
    return struct.pack("=HH", n, kind) + data + b"\0" * (-n % 4)


def packet_msg(pid: int, payload: bytes | None, *, mark: int | None = None, skb_info: int = 0,
               cap_len: int | None = None, hdr: bool = True) -> bytes:
    attrs = b""
    if hdr:
        attrs += _nla(NFQA_PACKET_HDR, struct.pack("!IHB", pid, 0x0800, 0))
    if mark is not None:
        attrs += _nla(NFQA_MARK, struct.pack("!I", mark))
    if skb_info:
        attrs += _nla(NFQA_SKB_INFO, struct.pack("!I", skb_info))
    if cap_len is not None:
        attrs += _nla(NFQA_CAP_LEN, struct.pack("!I", cap_len))
    if payload is not None:
        attrs += _nla(NFQA_PAYLOAD, payload)
    body = struct.pack("=BBH", socket.AF_INET, 0, socket.htons(QUEUE)) + attrs
    return struct.pack("=IHHII", 16 + len(body), NFNL_SUBSYS_QUEUE << 8 | NFQNL_MSG_PACKET, 0, 0, 0) + body


def error_msg(err: int) -> bytes:
    body = struct.pack("=i", err) + struct.pack("=IHHII", 16, 0, 0, 0, 0)
    return struct.pack("=IHHII", 16 + len(body), NLMSG_ERROR, 0, 0, 0) + body


def parse_verdicts(datagram: bytes, attr: int = NFQA_PAYLOAD) -> list[tuple[int, int, bytes | int | None]]:
    """(packet id, NF_* verdict, payload or None) of every verdict message; with
    ``attr=NFQA_MARK`` the mark (an int) instead of the payload."""
    out = []
    while datagram:
        length, kind = struct.unpack("=IH", datagram[:6])
        assert kind == NFNL_SUBSYS_QUEUE << 8 | NFQNL_MSG_VERDICT
        assert struct.unpack("!H", datagram[18:20])[0] == QUEUE
        attrs, vid, verdict, value = datagram[20:length], None, None, None
        while attrs:
            n, t = struct.unpack("=HH", attrs[:4])
            if t == NFQA_VERDICT_HDR:
                verdict, vid = struct.unpack("!II", attrs[4:12])
            elif t == attr:
                value = attrs[4:n] if attr == NFQA_PAYLOAD else struct.unpack("!I", attrs[4:8])[0]
            attrs = attrs[(n + 3) & ~3:]
        out.append((vid, verdict, value))
        datagram = datagram[(length + 3) & ~3:]
    return out


class FakeKernel:
    def __init__(self, handle, **kw) -> None:
        self.kernel, self.ours = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.kernel.setblocking(False)
        self.q = NativeQueue.over_socket(self.ours.fileno(), QUEUE, handle, **kw)

    def send(self, *msgs: bytes) -> None:
        for m in msgs:
            self.kernel.send(m)

    def verdicts(self) -> list[tuple[int, int, bytes | None]]:
        out = []
        while True:
            try:
                out += parse_verdicts(self.kernel.recv(1 << 20))
            except BlockingIOError:
                return out

    def sendmsgs_seen(self) -> int:
        return self.q.stats()["sendmsgs"]

    def close(self) -> None:
        self.q.close()
        self.kernel.close()
        self.ours.close()


@pytest.fixture
def nat():
    d = Director(NAT_CF)
    seen = []

    def handle(batch):
        seen.append([en.packet_bytes(batch, i) for i in range(batch.n)] + [batch.marks[:batch.n].tolist()])
        return en.process(batch, NOW, d.tables, d.ct, d.counters)

    k = FakeKernel(handle, rows=8, gso=False)
    k.seen = seen
    yield k
    k.close()


def test_batch_in_rows_and_verdicts_in_one_sendmsg(nat: FakeKernel) -> None:
    syn, sa = bytes(HANDSHAKE[0].packet), bytes(HANDSHAKE[1].packet)
    other = bytes(tcp(CLIENT, "192.0.2.77", CPORT, VPORT, "S"))
    nat.send(packet_msg(11, syn, mark=5), packet_msg(12, sa), packet_msg(13, other))
    assert nat.q.step(1.0) == 3
    assert nat.seen[0][:3] == [syn, sa, other] and nat.seen[0][3] == [5, 0, 0]
    assert (nat.q.off[:3] == [rw.HEADROOM] * 3).all()
    assert nat.verdicts() == [(11, NF_ACCEPT, bytes(HANDSHAKE[0].expected)),
                              (12, NF_ACCEPT, bytes(HANDSHAKE[1].expected)), (13, NF_ACCEPT, None)]
    s = nat.q.stats()
    assert s["sendmsgs"] == 1 and s["verdict_msgs"] == 3 and s["batches"] == 1 and s["recv_calls"] == 1
    assert (s["packets"], s["mangled"], s["accepted"], s["dropped"]) == (3, 2, 1, 0)


def test_rows_limit_a_batch(nat: FakeKernel) -> None:
    nat.send(*[packet_msg(i, bytes(tcp(CLIENT, "192.0.2.77", 1000 + i, 80))) for i in range(1, 12)])
    assert nat.q.step(1.0) == 8 and nat.q.step(1.0) == 3 and nat.q.step(0.0) == 0
    assert [v[0] for v in nat.verdicts()] == list(range(1, 12))


def test_malformed_and_errors_are_counted_and_skipped(nat: FakeKernel) -> None:
    good = bytes(tcp(CLIENT, "192.0.2.77", 1, 80))
    nat.send(b"\x01\x02\x03", error_msg(-2), error_msg(0), packet_msg(0, good, hdr=False),
             packet_msg(21, None), struct.pack("=IHHII", 4000, 0x300, 0, 0, 0) + b"x" * 8,
             packet_msg(22, good))
    assert nat.q.step(1.0) == 1
    s = nat.q.stats()
    assert s["nl_errors"] == 1  # the zero error is an ACK
    assert s["malformed"] == 4  # short datagram, no packet header, no payload, bad length
    assert s["packets"] == 1 and nat.seen[0][0] == good
    assert sorted(nat.verdicts()) == [(21, NF_ACCEPT, None), (22, NF_ACCEPT, None)]  # no payload: accepted


def test_oversize_is_accepted_unchanged() -> None:
    calls = []
    k = FakeKernel(lambda b: calls.append(b.n), rows=4, gso=False, stride=256)
    try:
        big = bytes(udp(CLIENT, VIP, 1, 2, b"b" * 400))
        cut = bytes(udp(CLIENT, VIP, 1, 2, b"c" * 40))
        k.send(packet_msg(31, big), packet_msg(32, cut, cap_len=1400))
        assert k.q.step(1.0) == 0 and calls == []
        assert k.verdicts() == [(31, NF_ACCEPT, None), (32, NF_ACCEPT, None)]
        s = k.q.stats()
        assert s["oversize"] == 2 and s["packets"] == s["accepted"] == 2
    finally:
        k.close()


def test_partial_checksum_completed_before_the_engine() -> None:
    d = Director(NAT_CF)
    k = FakeKernel(lambda b: en.process(b, NOW, d.tables, d.ct, d.counters), rows=4, gso=True)
    try:
        data = bytes(range(256)) * 40
        syn = bytes(tcp(CLIENT, VIP, CPORT, VPORT, "S"))
        big = bytes(tcp(CLIENT, VIP, CPORT, VPORT, "A", data, seq=1001, ack=5001))
        k.send(packet_msg(1, syn), packet_msg(2, bytes(_partial(big)), skb_info=NFQA_SKB_CSUMNOTREADY | NFQA_SKB_GSO))
        assert k.q.step(1.0) == 2
        assert k.q.info[:2].tolist() == [0, lib.PL_NFQ_PKT_GSO | lib.PL_NFQ_PKT_CSUM_FIXED]
        expected = bytes(tcp(CLIENT, RIP1, CPORT, 8080, "A", data, seq=1001, ack=5001))
        assert [v[2] for v in k.verdicts()][1] == expected
        s = k.q.stats()
        assert (s["gso_packets"], s["csum_fixed"]) == (1, 1)
    finally:
        k.close()


def test_tunnel_payload_is_longer() -> None:
    d = Director(TUN_CF)
    k = FakeKernel(lambda b: en.process(b, NOW, d.tables, d.ct, d.counters, tunnel_src=0x0A000001), rows=2,
                   gso=False)
    try:
        syn = bytes(tcp(CLIENT, VIP, CPORT, VPORT, "S"))
        k.send(packet_msg(5, syn))
        assert k.q.step(1.0) == 1
        (vid, verdict, payload), = k.verdicts()
        assert (vid, verdict) == (5, NF_ACCEPT) and len(payload) == len(syn) + 20 and payload[20:] == syn
        assert IP(payload).proto == 4
    finally:
        k.close()


def test_dr_with_and_without_sender() -> None:
    d = Director(DR_CF)
    sent = []
    for on_dr in (lambda b, idx, rows: sent.append((en.packet_bytes(b, int(idx[0])), int(rows[0]))), None):
        k = FakeKernel(lambda b: en.process(b, NOW, d.tables, d.ct, d.counters), rows=2, gso=False, on_dr=on_dr)
        try:
            syn = bytes(tcp(CLIENT, VIP, CPORT + len(sent), VPORT, "S"))
            k.send(packet_msg(9, syn))
            assert k.q.step(1.0) == 1
            assert k.verdicts() == [(9, NF_DROP, None)]
            s = k.q.stats()
            assert (s["dr_sent"], s["dr_without_sender"], s["dropped"]) == ((1, 0, 1) if on_dr else (0, 1, 1))
        finally:
            k.close()
    assert len(sent) == 1 and sent[0][0] == bytes(tcp(CLIENT, VIP, CPORT, VPORT, "S")) and d.rip(sent[0][1]) == RIP1


@pytest.mark.parametrize("fail_open", [True, False])
def test_handler_error_still_gives_verdicts(fail_open: bool) -> None:
    def boom(batch):
        raise RuntimeError("handler bug")

    k = FakeKernel(boom, rows=4, gso=False, fail_open=fail_open)
    try:
        k.send(packet_msg(1, bytes(udp(CLIENT, VIP, 1, 53))), packet_msg(2, bytes(udp(CLIENT, VIP, 2, 53))))
        with pytest.raises(RuntimeError, match="handler bug"):
            k.q.step(1.0)
        want = NF_ACCEPT if fail_open else NF_DROP
        assert k.verdicts() == [(1, want, None), (2, want, None)]
        assert k.q.stats()["handler_errors"] == 1
    finally:
        k.close()


def test_run_honours_stop(nat: FakeKernel) -> None:
    stop = threading.Event()
    t = threading.Thread(target=nat.q.run, args=(stop,), kwargs={"poll": 0.02})
    t.start()
    nat.send(packet_msg(1, bytes(HANDSHAKE[0].packet)))
    stop.set()
    t.join(timeout=5)
    assert not t.is_alive()
    nat.q.step(0.0)  # whatever the loop left
    assert [v[0] for v in nat.verdicts()] == [1]


def test_closed_queue_refuses() -> None:
    k = FakeKernel(lambda b: None, rows=1, gso=False)
    k.q.close()
    k.q.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        k.q.step(0.0)
    k.kernel.close()
    k.ours.close()


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        NativeQueue.over_socket(0, 70000, lambda b: None)
    with pytest.raises(ValueError):
        NativeQueue.over_socket(0, 1, lambda b: None, rows=0)
    with pytest.raises(ValueError):
        NativeQueue.over_socket(0, 1, lambda b: None, stride=40)


def test_udp_payload_without_checksum_kept(nat: FakeKernel) -> None:
    p = IP(src=CLIENT, dst=VIP, id=9, ttl=64) / UDP(sport=40001, dport=53, chksum=0) / Raw(b"q" * 12)
    nat.send(packet_msg(4, bytes(p)))
    assert nat.q.step(1.0) == 1
    (_, _, payload), = nat.verdicts()
    assert IP(payload)[UDP].chksum == 0 and IP(payload).dst == RIP1
