"""Both NFQUEUE adapters on a real kernel (tests/netns/golden_io.py topology):

* the whole golden packet table (tests/golden.py), each packet injected from P, queued
  in M, decided by the engine, re-injected by the kernel and captured on the far side;
* firewall marks (a mangle MARK rule) reaching the engine's fwmark service;
* fail-open: ``--queue-bypass`` without a consumer, ``NFQA_CFG_F_FAIL_OPEN`` with a full
  queue (and fail-closed without it); a socket-buffer overflow counted, not fatal;
* a bulk TCP transfer through NAT with GSO super-packets, arriving intact;
* the adapters' counters adding up.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import threading
import time

import pytest
from golden import (
    CASES,
    CLIENT,
    CPORT,
    DIRECTOR,
    FWM_CF,
    FWM_VIP,
    FWMARK,
    NAT_CF,
    NOW,
    RIP1,
    Director,
    _check_step,
    ip2int,
    tcp,
)
from golden_io import (
    BULK_SERVER,
    PRIVATE,
    PUBLIC,
    QUEUE_NUM,
    BulkNet,
    Consumer,
    GoldenNet,
    in_netns,
    rules,
    ttl_minus_one,
    ttl_plus,
)
from scapy.layers.inet import IP, TCP

from pylvs.dataplane import engine as en
from pylvs.lab import netns

ADAPTERS = ("native", "python")
RIP_NET = "10.0.0."
SETTLE = 0.15  # s to let a packet the kernel should not forward show that it was not


def _eventually(cond, timeout: float = 3.0) -> bool:
    """Poll ``cond`` until it holds (True) or ``timeout`` s pass (False)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _factory(kind: str, handle, **kw):
    if kind == "native":
        from pylvs.dataplane.io.nfq_native import NativeQueue

        return lambda: NativeQueue(QUEUE_NUM, handle, **kw)
    from pylvs.dataplane.io.nfqueue import PacketQueue

    return lambda: PacketQueue(QUEUE_NUM, handle, **kw)


@pytest.fixture(scope="module")
def net(netns_support):
    if not shutil.which("iptables-restore"):
        pytest.skip("iptables-restore (iptables-nft) not found")
    n = GoldenNet()
    try:
        n.iptables(rules())
        yield n
    finally:
        n.destroy()


def _side_of(ip: bytes) -> str:
    return PRIVATE if IP(ip).dst.startswith(RIP_NET) else PUBLIC


def _reaches_queue(ip: bytes) -> bool:
    """Whether M's kernel hands this packet to NFQUEUE: ip_rcv drops bad versions, short
    headers and truncated datagrams.  Fragments do reach the queue: nothing in M uses
    conntrack (``CT --notrack`` does not enable it), so no defragmenter holds them."""
    if len(ip) < 20 or ip[0] >> 4 != 4 or (ip[0] & 15) < 5:
        return False
    total = int.from_bytes(ip[2:4], "big")
    return (ip[0] & 15) * 4 <= total <= len(ip)


class Recorder:
    """The director's closure for the tests: engine.process with a golden Director, plus
    a record of every packet (verdict, counter, dest row, bytes as rewritten)."""

    def __init__(self) -> None:
        self.director: Director | None = None
        self.seen: list[tuple[int, str, int, bytes]] = []
        self.dr_calls: list[tuple[bytes, int]] = []

    def handle(self, batch: en.Batch) -> en.Verdicts:
        d = self.director
        v = en.process(batch, NOW, d.tables, d.ct, d.counters, tunnel_src=ip2int(DIRECTOR))
        for i in range(batch.n):
            self.seen.append((int(v.verdict[i]), en.REASON_NAMES[v.reason[i]], int(v.dest_row[i]),
                              en.packet_bytes(batch, i)))
        return v

    def on_dr(self, batch: en.Batch, idx, dest_rows) -> None:
        for i, row in zip(idx.tolist(), dest_rows.tolist(), strict=True):
            self.dr_calls.append((en.packet_bytes(batch, i), row))


@pytest.mark.parametrize("kind", ADAPTERS)
def test_golden_table(net: GoldenNet, kind: str) -> None:
    rec = Recorder()
    consumer = Consumer(net, _factory(kind, rec.handle, on_dr=rec.on_dr, rows=64))
    skipped_by_kernel = 0
    try:
        for case in CASES:
            rec.director = d = Director(case.cf, case.capacity)
            for k, step in enumerate(case.steps):
                where = f"{case.desc!r} step {k}"
                inp = bytes(step.packet)
                before = consumer.answered()
                n_seen, n_dr = len(rec.seen), len(rec.dr_calls)
                net.clear()
                # real-server-side packets are queued in FORWARD: the kernel has already
                # decremented their TTL when the engine sees them
                in_forward = IP(inp).src.startswith(RIP_NET)
                net.inject(PRIVATE if in_forward else PUBLIC, inp)
                if not _reaches_queue(inp):
                    time.sleep(SETTLE)
                    assert consumer.queue.stats()["packets"] == before, f"{where}: the kernel queued it"
                    skipped_by_kernel += 1
                    continue
                assert consumer.wait_packets(before + 1), f"{where}: never reached the adapter"
                assert len(rec.seen) == n_seen + 1, where
                v, counter, row, out = rec.seen[-1]
                _check_step(d, step, (v, counter, row, ttl_plus(out, 1) if in_forward else out), k)
                if step.verdict in (en.V_NAT, en.V_TUNNEL):
                    out = ttl_minus_one(bytes(step.expected))
                    assert net.wait_for(_side_of(out), out), f"{where}: forwarded packet not captured"
                elif step.verdict == en.V_DR:
                    assert rec.dr_calls[n_dr:] == [(inp, rec.seen[-1][2])], where
                    assert d.rip(rec.dr_calls[-1][1]) == RIP1
                if step.verdict in (en.V_DROP, en.V_DR):
                    time.sleep(SETTLE)
                    fwd = ttl_minus_one(inp)
                    assert all(p != fwd for _, p in net.captured()), f"{where}: dropped packet was forwarded"
    finally:
        consumer.close()
    s = consumer.queue.stats()
    assert skipped_by_kernel == 3  # truncated, not IPv4, IHL 4
    assert s["packets"] == len(rec.seen) == s["accepted"] + s["dropped"] + s["mangled"]
    verdicts = [v for v, *_ in rec.seen]
    assert s["mangled"] == sum(v in (en.V_NAT, en.V_TUNNEL) for v in verdicts)
    assert s["dr_sent"] == sum(v == en.V_DR for v in verdicts) == len(rec.dr_calls) > 0
    assert s["dr_without_sender"] == s["oversize"] == s["recv_errors"] == s["handler_errors"] == 0



@pytest.mark.parametrize("kind", ADAPTERS)
def test_firewall_mark_reaches_the_engine(net: GoldenNet, kind: str) -> None:
    """M's mangle MARK rule (as the guide's operator writes it) marks VIP traffic; the
    adapter hands NFQA_MARK to the engine, which picks the fwmark service."""
    rec = Recorder()
    rec.director = Director(FWM_CF)
    marks: list[int] = []

    def handle(batch: en.Batch) -> en.Verdicts:
        marks.extend(batch.marks[: batch.n].tolist())
        return rec.handle(batch)

    consumer = Consumer(net, _factory(kind, handle, rows=8))
    try:
        net.clear()
        syn = tcp(CLIENT, FWM_VIP, CPORT, 80, "S")
        net.inject(PUBLIC, bytes(syn))
        assert consumer.wait_packets(1)
        verdict, counter, row, out = rec.seen[0]
        assert (marks, verdict, counter) == ([FWMARK], en.V_NAT, "nat_in")
        assert IP(out).dst == rec.director.rip(row)
        assert net.wait_for(PRIVATE, ttl_minus_one(out))
    finally:
        consumer.close()

def _reply(seq: int) -> bytes:
    """A real server's packet to a client with no connection: the engine passes it."""
    return bytes(IP(src=RIP1, dst="203.0.113.7", id=seq, ttl=64) / TCP(sport=8080, dport=40000, flags="SA", seq=seq))


@pytest.mark.parametrize("bypass", [True, False])
def test_no_consumer_queue_bypass(net: GoldenNet, bypass: bool) -> None:
    net.iptables(rules(bypass=bypass))
    try:
        assert net.queue_counters() is None  # nobody bound
        net.clear()
        pkt = _reply(1)
        net.inject(PRIVATE, pkt)
        if bypass:
            assert net.wait_for(PUBLIC, ttl_minus_one(pkt)), "--queue-bypass did not let it through"
        else:
            time.sleep(SETTLE)
            assert (PUBLIC, ttl_minus_one(pkt)) not in net.captured()
    finally:
        net.iptables(rules())


@pytest.mark.parametrize("fail_open", [True, False])
def test_full_queue_fail_open(net: GoldenNet, fail_open: bool) -> None:
    from pylvs.dataplane.io.nfq_native import NativeQueue

    rec = Recorder()
    rec.director = Director(NAT_CF)
    maxlen, sent = 2, 5
    q = in_netns(net.m, lambda: NativeQueue(QUEUE_NUM, rec.handle, maxlen=maxlen, fail_open=fail_open, rows=8))
    try:
        net.clear()
        pkts = [_reply(100 + i) for i in range(sent)]
        for p in pkts:
            net.inject(PRIVATE, p)
        overflow = sent - maxlen
        forwarded = {ttl_minus_one(p) for p in pkts}

        def early() -> list[bytes]:
            return sorted(p for side, p in net.captured() if side == PUBLIC and p in forwarded)

        if fail_open:  # the kernel accepted what did not fit, unchanged
            want = sorted(ttl_minus_one(p) for p in pkts[maxlen:])
            assert _eventually(lambda: early() == want)
            assert net.queue_counters()["queue_dropped"] == 0
        else:
            assert _eventually(lambda: net.queue_counters()["queue_dropped"] == overflow)
            time.sleep(SETTLE)
            assert early() == []
        assert net.queue_counters()["waiting"] == maxlen
        handled = 0
        deadline = time.monotonic() + 3
        while handled < maxlen and time.monotonic() < deadline:
            handled += q.step(0.2)
        assert handled == maxlen
        for p in pkts[:maxlen]:  # the queued ones, passed by the engine
            assert net.wait_for(PUBLIC, ttl_minus_one(p))
        s = q.stats()
        assert s["packets"] == s["accepted"] == maxlen
    finally:
        q.close()



@pytest.mark.parametrize("kind", ADAPTERS)
@pytest.mark.filterwarnings("ignore:Socket rcvbuf limit:RuntimeWarning")
def test_socket_overflow_is_counted_not_fatal(net: GoldenNet, kind: str) -> None:
    """A tiny receive buffer: the kernel cannot deliver most packets (ENOBUFS on our next
    receive, counted); fail-open (native) lets them through, the binding drops them."""
    rec = Recorder()
    rec.director = Director(NAT_CF)
    q = in_netns(net.m, _factory(kind, rec.handle, rcvbuf=1, rows=64))
    try:
        net.clear()
        pkts = [_reply(200 + i) for i in range(OVERFLOW_PACKETS)]
        for p in pkts:
            net.inject(PRIVATE, p)
        time.sleep(SETTLE)
        for _ in range(OVERFLOW_PACKETS):  # bounded: every round answers >= 1 packet or ends
            before = q.stats()["packets"]
            q.step(0.05)
            if q.stats()["packets"] == before:
                break
        s = q.stats()
        assert s["recv_errors"] >= 1
        assert 0 < s["packets"] < OVERFLOW_PACKETS
        assert s["packets"] == s["accepted"]  # the engine passed them (no connection)
        forwarded = {ttl_minus_one(p) for p in pkts}

        def got() -> int:
            return sum(1 for side, p in net.captured() if side == PUBLIC and p in forwarded)

        if kind == "native":  # fail-open: what was not delivered to us went through unchanged
            assert _eventually(lambda: got() == OVERFLOW_PACKETS)
            assert net.queue_counters()["user_dropped"] == 0
        else:
            assert _eventually(lambda: got() == s["packets"])
            assert net.queue_counters()["user_dropped"] == OVERFLOW_PACKETS - s["packets"]
    finally:
        q.close()


OVERFLOW_PACKETS = 40

def _bulk(net: BulkNet, size: int) -> tuple[str, str]:
    """Send ``size`` random bytes from C to VIP:80 (NAT to R:8080); (sha256 sent, received)."""
    data = os.urandom(size)
    srv = netns.socket_in(net.r, socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((BULK_SERVER, 8080))
    srv.listen(1)
    srv.settimeout(20)
    got: dict[str, str] = {}

    def serve() -> None:
        conn, _ = srv.accept()
        conn.settimeout(20)
        h = hashlib.sha256()
        with conn:
            while chunk := conn.recv(1 << 16):
                h.update(chunk)
            got["digest"] = h.hexdigest()
            conn.sendall(got["digest"].encode())

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    cli = netns.socket_in(net.c, socket.AF_INET, socket.SOCK_STREAM)
    cli.settimeout(20)
    try:
        cli.connect(("192.0.2.10", 80))
        cli.sendall(data)
        cli.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := cli.recv(128):
            answer += chunk
    finally:
        cli.close()
        t.join(timeout=20)
        srv.close()
    assert answer.decode() == got.get("digest")
    return hashlib.sha256(data).hexdigest(), answer.decode()


BULK_BYTES = 4 << 20


@pytest.mark.parametrize("kind,gso", [("native", True), ("native", False), ("python", False)])
def test_bulk_tcp_through_nat(netns_support, kind: str, gso: bool) -> None:
    if not shutil.which("iptables-restore"):
        pytest.skip("iptables-restore (iptables-nft) not found")
    net = BulkNet()
    consumer = None
    try:
        net.iptables(rules())
        rec = Recorder()
        rec.director = Director(NAT_CF)
        kw = {"gso": gso} if kind == "native" else {}

        def handle(batch: en.Batch) -> en.Verdicts:  # no per-packet record: bulk
            d = rec.director
            return en.process(batch, time.monotonic(), d.tables, d.ct, d.counters)

        consumer = Consumer(net, _factory(kind, handle, rows=64, **kw))
        sent, received = _bulk(net, BULK_BYTES)
        assert sent == received
        s = consumer.queue.stats()
        assert s["mangled"] > 0 and s["oversize"] == 0 and s["handler_errors"] == 0
        assert s["packets"] == s["accepted"] + s["dropped"] + s["mangled"]
        if kind == "native" and gso:
            assert s["gso_packets"] > 0 and s["csum_fixed"] > 0
        else:
            assert s["gso_packets"] == 0
        reasons = en.reason_counts(rec.director.counters)
        assert set(reasons) <= {"nat_in", "nat_out"}, reasons
    finally:
        if consumer is not None:
            consumer.close()
        net.destroy()

