"""Two forwarders on one lvs.cf, one deciding with ``engine.process`` (Python), the other
with the cfunc the C loop calls (``pl_engine_batch``): ``Twin.send`` runs a batch through
both and requires every output and every piece of state to be equal.  Shared by
tests/unit/test_engine_cfunc.py, test_ftp_helper.py and tests/property/test_ftp_fuzz.py."""

from __future__ import annotations

import dataclasses

from golden import DIRECTOR, NOW, ip2int
from pylvs._native import lib

from pylvs.config import check_text
from pylvs.dataplane import engine as en
from pylvs.dataplane import tables as tb
from pylvs.dataplane.engine_cfunc import BatchArrays
from pylvs.dataplane.forwarder import Forwarder

ROWS = 64
STRIDE = 2048


def with_methods(config, methods: dict[str, str]):
    """`config` with the named servers given their own forwarding method, as pylvsadm does."""
    return dataclasses.replace(config, virtuals=tuple(
        dataclasses.replace(v, servers=tuple(dataclasses.replace(s, forward=methods.get(s.name, s.forward))
                                             for s in v.servers))
        for v in config.virtuals))


class Twin:
    """Two forwarders on one configuration: ``py`` decides with ``engine.process``, ``c``
    with the cfunc through ``pl_engine_batch``; ``send`` runs a batch through both and
    requires every output and every piece of state to be equal."""

    def __init__(self, cf: str, capacity: int = 1024, methods: dict[str, str] | None = None) -> None:
        r = check_text(cf)
        assert r.ok, [str(d) for d in r.diagnostics]
        self.config = with_methods(r.config, methods or {})
        self.py, self.c = (Forwarder(tb.compile(self.config), capacity=capacity, tunnel_src=ip2int(DIRECTOR),
                                     clock=lambda: NOW) for _ in range(2))  # fmt: skip
        self.c.ct.key[:] = self.py.ct.key  # one index key: both tables lay out alike (still empty here)
        self.cfwd = self.c.native()
        self.arrays = BatchArrays(ROWS, STRIDE)

    def send(self, packets, marks=None, now: float = NOW) -> en.Verdicts:
        packets = [bytes(p) for p in packets]
        b = en.batch_from_packets(packets, marks=marks, stride=STRIDE, rows=ROWS)
        v = en.process(b, now, self.py.tables, self.py.ct, self.py.counters, tunnel_src=ip2int(DIRECTOR))
        a = self.arrays
        n = a.load(packets, marks)
        lib.pl_gate_batch_enter(self.c.gate)
        try:
            n_ops = lib.pl_engine_batch(self.cfwd, a.c, n, now)
        finally:
            lib.pl_gate_batch_leave(self.c.gate)
        assert n_ops >= 0
        assert (a.verdict[:n] == v.verdict).all()
        assert (a.reason[:n] == v.reason).all()
        assert (a.dest_row[:n] == v.dest_row).all()
        assert (a.results[:n] == v.rewrite).all()
        assert (a.off[:n] == b.off[:n]).all() and (a.lens[:n] == b.lens[:n]).all()
        self.out = []  # the packets as they leave (rows are reused: compare from off)
        for i in range(n):
            o, ln = int(b.off[i]), int(b.lens[i])
            assert a.buf[i, o:o + ln].tobytes() == b.buf[i, o:o + ln].tobytes(), f"packet {i}"
            self.out.append(b.buf[i, o:o + ln].tobytes())
        self.check_state()
        return v

    def check_state(self) -> None:
        p, c = self.py, self.c
        for name in ("entries", "next_free", "in_index", "out_index", "meta", "counters", "dest", "persist",
                     "timeouts"):  # fmt: skip
            x, y = getattr(p.ct, name), getattr(c.ct, name)
            assert x.tobytes() == y.tobytes(), f"conntab {name}"
        for name in ("state", "dest"):
            assert getattr(p.tables, name).tobytes() == getattr(c.tables, name).tobytes(), f"tables {name}"
        for name in ("reasons", "svc", "dest", "ip_id"):
            assert getattr(p.counters, name).tobytes() == getattr(c.counters, name).tobytes(), f"counters {name}"

    def reconfigure(self, cf: str | None = None, health=None) -> None:
        if cf is not None:
            self.config = check_text(cf).config
        for fwd in (self.py, self.c):
            fwd.swap(fwd.compile(self.config, health))
        self.check_state()
