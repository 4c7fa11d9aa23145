"""The per-packet adapter (pylvs.dataplane.io.nfqueue) without root: its packet callback
driven with stand-ins for ``netfilterqueue.Packet``, and the socket wrapper that bounds
one ``run_socket`` round."""

from __future__ import annotations

import errno
import socket
import threading

import pytest
from golden import CLIENT, CPORT, DR_CF, HANDSHAKE, NAT_CF, NOW, RIP1, VIP, VPORT, Director, tcp, udp

from pylvs.dataplane import engine as en
from pylvs.dataplane.io import nfqueue as nq


class FakePacket:
    """What the adapter uses of netfilterqueue.Packet."""

    def __init__(self, payload: bytes, mark: int = 0) -> None:
        self.payload, self.mark = payload, mark
        self.verdict: str | None = None
        self.new_payload: bytes | None = None

    def get_payload(self) -> bytes:
        return self.payload

    def get_mark(self) -> int:
        return self.mark

    def set_payload(self, payload: bytes) -> None:
        self.new_payload = payload

    def accept(self) -> None:
        assert self.verdict is None
        self.verdict = "accept"

    def drop(self) -> None:
        assert self.verdict is None
        self.verdict = "drop"


def make_queue(handle, **kw) -> nq.PacketQueue:
    q = nq.PacketQueue.__new__(nq.PacketQueue)
    q._setup(0, handle, kw.pop("rows", 4), kw.pop("fail_open", True), kw.pop("on_dr", None))
    return q


def engine_handle(d: Director, marks: list | None = None):
    def handle(batch: en.Batch) -> en.Verdicts:
        if marks is not None:
            marks.append(int(batch.marks[0]))
        return en.process(batch, NOW, d.tables, d.ct, d.counters)

    return handle


def test_nat_sets_the_rewritten_payload() -> None:
    marks: list[int] = []
    q = make_queue(engine_handle(Director(NAT_CF), marks))
    p = FakePacket(bytes(HANDSHAKE[0].packet), mark=7)
    q._on_packet(p)
    assert (p.verdict, p.new_payload) == ("accept", bytes(HANDSHAKE[0].expected))
    assert marks == [7]
    other = FakePacket(bytes(tcp(CLIENT, "192.0.2.77", CPORT, VPORT, "S")))
    q._on_packet(other)
    assert (other.verdict, other.new_payload) == ("accept", None)
    bad = FakePacket(b"\x45" + b"\x00" * 5)
    q._on_packet(bad)
    assert bad.verdict == "drop"
    s = q.stats()
    assert (s["packets"], s["batches"], s["mangled"], s["accepted"], s["dropped"]) == (3, 3, 1, 1, 1)


def test_dr_goes_to_on_dr_then_drops() -> None:
    d = Director(DR_CF)
    sent = []
    q = make_queue(engine_handle(d), on_dr=lambda b, idx, rows: sent.append((en.packet_bytes(b, 0), int(rows[0]))))
    syn = bytes(tcp(CLIENT, VIP, CPORT, VPORT, "S"))
    p = FakePacket(syn)
    q._on_packet(p)
    assert p.verdict == "drop" and sent[0][0] == syn and d.rip(sent[0][1]) == RIP1
    q2 = make_queue(engine_handle(d))
    p2 = FakePacket(bytes(tcp(CLIENT, VIP, CPORT + 1, VPORT, "S")))
    q2._on_packet(p2)
    assert p2.verdict == "drop" and q2.stats()["dr_without_sender"] == 1 and q.stats()["dr_sent"] == 1


def test_oversize_is_accepted_unchanged() -> None:
    q = make_queue(lambda b: pytest.fail("the engine must not see it"))
    p = FakePacket(bytes(udp(CLIENT, VIP, 1, 2, b"x" * 3000)))
    q._on_packet(p)
    assert (p.verdict, p.new_payload) == ("accept", None)
    assert q.stats()["oversize"] == 1 and q.stats()["accepted"] == 1


@pytest.mark.parametrize("fail_open", [True, False])
def test_handler_error_gives_a_verdict_and_is_kept(fail_open: bool) -> None:
    def boom(batch):
        raise RuntimeError("handler bug")

    q = make_queue(boom, fail_open=fail_open)
    p = FakePacket(bytes(udp(CLIENT, VIP, 1, 53)))
    q._on_packet(p)
    assert p.verdict == ("accept" if fail_open else "drop")
    assert isinstance(q._error, RuntimeError) and q.stats()["handler_errors"] == 1


def test_counting_socket_bounds_a_round() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        b.setblocking(False)
        stats = {"recv_errors": 0}
        r = nq._CountingSocket(b, stats)
        for i in range(3):
            a.send(bytes([i]))
        r.left = 2
        assert r.recv(10) == b"\x00" and r.recv(10) == b"\x01"
        with pytest.raises(BlockingIOError) as exc:
            r.recv(10)  # budget spent: run_socket sees EAGAIN and returns
        assert exc.value.errno == errno.EAGAIN
        r.left, r.stop = 5, threading.Event()
        r.stop.set()
        with pytest.raises(BlockingIOError):
            r.recv(10)
    finally:
        a.close()
        b.close()


def test_counting_socket_counts_enobufs() -> None:
    class Overrun:
        def recv(self, size: int) -> bytes:
            raise OSError(errno.ENOBUFS, "No buffer space available")

    stats = {"recv_errors": 0}
    r = nq._CountingSocket(Overrun(), stats)
    r.left = 1
    with pytest.raises(OSError):
        r.recv(10)
    assert stats["recv_errors"] == 1


def test_capabilities_say_what_the_binding_lacks() -> None:
    assert nq.CAPABILITIES == {"fail_open": False, "gso": False, "batch_verdicts": False}
    assert make_queue(lambda b: None).gso is False
