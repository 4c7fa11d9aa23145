"""Forwarding-core throughput: ``engine.process`` on prebuilt batches, and the same
batches through the C entry point (``pl_engine_batch``: what the C loop calls).

Cases (one TCP service VIP:80, scheduler wlc, 16 real servers):

* *NAT in*: client -> VIP packets of 10,000 established NAT connections (rewritten
  to RIP:8080).
* *NAT out*: replies RIP:8080 -> client of the same connections (rewritten to VIP:80).
* *DR*: client -> VIP packets of 10,000 established direct-routing connections (no
  rewrite: the entry is found, its state stepped and the packet counted).
* *new*: SYNs from client addresses/ports never seen before, so every packet is a
  service lookup, a wlc decision, a connection-table insert and a NAT rewrite.

Established packets are ACK|PSH with payload, so the IP packet is 64 or 1500 bytes;
the new-connection SYNs carry the same payloads (a SYN with data, as TCP Fast Open
sends).  Batch sizes 1, 32 and 256.  The connections are created (SYN, then ACK:
ESTABLISHED) before timing; each timed batch takes the next ``n`` flows of a shuffled
order, so consecutive packets hit scattered entries.

``process`` rewrites packets in place (addresses, ports, checksums, ``off``/``lens``),
so every round's ``setup`` (pytest-benchmark ``pedantic``) copies the pristine packets
back into the batch buffer: the copy is outside the timed region.  The clock is frozen
(``now`` constant), so nothing expires during the run.  JIT compilation and warm-up
happen before timing.  After each test the reason counters are checked: every timed
packet landed in the expected slot (nat_in / nat_out / dr).

A separate test splits one process call into its parts (Python prologue and
allocations, ``_process_kernel`` (sweep and packets), the C rewrite call, the result
fold) to show where the time goes; it calls the same functions with the same
arguments as ``engine.process`` does, without changing the engine.

The tables (pps and ns/packet, medians; the breakdown; bytes per entry) are printed
at the end of the run (bench/conftest.py).

    .venv/bin/python -m pytest bench/bench_engine.py --benchmark-only -p no:cacheprovider
"""

from __future__ import annotations

import functools
import time

import numpy as np
import pytest
from golden import HEAD, virtual
from pylvs._native import lib

from pylvs.config import check_text
from pylvs.dataplane import conntab as ctm
from pylvs.dataplane import engine as en
from pylvs.dataplane import headers as hd
from pylvs.dataplane import rewrite as rw
from pylvs.dataplane import tables as tb
from pylvs.dataplane.engine_cfunc import BatchArrays, NativeState
from pylvs.dataplane.forwarder import NEIGH_DTYPE
from pylvs.sched import ADDR, PORT

NOW = 1000.0  # frozen clock: nothing expires during the run
VIP = 0xC000020A  # 192.0.2.10
VPORT, RPORT = 80, 8080
N_SERVERS = 16
FLOWS = 10_000
SIZES = [64, 1500]  # IP packet bytes
BATCHES = [1, 32, 256]
CASES = ["NAT in", "NAT out", "DR", "new"]
ROUNDS = {1: 2000, 32: 500, 256: 200}
WARMUP = 20
TCP_ACK_PSH, TCP_SYN = 0x18, 0x02

def _cf(network: str) -> str:
    """The lvs.cf text: golden.py's globals, one wlc service, N_SERVERS weights 1-4."""
    rport = RPORT if network == "nat" else None
    servers = [(f"rs{i}", f"10.0.0.{i + 2}", rport, 1 + i % 4) for i in range(N_SERVERS)]
    return HEAD.format(network=network) + virtual("www", "192.0.2.10", 80, sched="wlc", servers=servers)


# --- packets, built with numpy (checked against scapy once) --------------------------

def _put16(p, col, v):
    v = np.asarray(v, dtype=np.uint64)
    p[:, col] = (v >> 8) & 0xFF
    p[:, col + 1] = v & 0xFF


def _put32(p, col, v):
    v = np.asarray(v, dtype=np.uint64)
    for k in range(4):
        p[:, col + k] = (v >> (24 - 8 * k)) & 0xFF


def _csum(p, start, stop, extra=0):
    """Internet checksum of p[:, start:stop] (even length) plus ``extra`` per row."""
    s = (p[:, start:stop:2].astype(np.uint64) << 8).sum(axis=1)
    s += p[:, start + 1:stop:2].astype(np.uint64).sum(axis=1)
    s += np.asarray(extra, dtype=np.uint64)
    for _ in range(4):
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def tcp_packets(saddr, sport, daddr, dport, flags, size, ip_id=0x1234, seq=1000, ack=2000):
    """uint8[k, size]: IPv4 (DF, TTL 64) + TCP (20 bytes, window 65535) + payload."""
    saddr = np.asarray(saddr, dtype=np.uint64)
    daddr = np.asarray(daddr, dtype=np.uint64)
    k = saddr.shape[0]
    p = np.zeros((k, size), dtype=np.uint8)
    p[:, 40:] = (np.arange(size - 40) % 251).astype(np.uint8)  # payload pattern
    p[:, 0] = 0x45
    _put16(p, 2, size)
    _put16(p, 4, ip_id)
    _put16(p, 6, 0x4000)  # DF
    p[:, 8] = 64
    p[:, 9] = 6
    _put32(p, 12, saddr)
    _put32(p, 16, daddr)
    _put16(p, 10, _csum(p, 0, 20))
    _put16(p, 20, sport)
    _put16(p, 22, dport)
    _put32(p, 24, seq)
    _put32(p, 28, ack)
    p[:, 32] = 0x50
    p[:, 33] = flags
    _put16(p, 34, 0xFFFF)
    pseudo = (saddr >> 16) + (saddr & 0xFFFF) + (daddr >> 16) + (daddr & 0xFFFF) + 6 + (size - 20)
    _put16(p, 36, _csum(p, 20, size, pseudo))
    return p


def _check_builder():
    from scapy.layers.inet import IP, TCP
    from scapy.packet import Raw
    for size, flags, fl in ((64, TCP_ACK_PSH, "PA"), (1500, TCP_SYN, "S")):
        ours = tcp_packets([0xCB007107], [40000], [VIP], [VPORT], flags, size)[0].tobytes()
        pay = bytes((np.arange(size - 40) % 251).astype(np.uint8))
        ref = bytes(IP(src="203.0.113.7", dst="192.0.2.10", id=0x1234, flags="DF", ttl=64)
                    / TCP(sport=40000, dport=80, seq=1000, ack=2000, flags=fl, window=65535) / Raw(pay))
        assert ours == ref, size


# --- directors and flows -------------------------------------------------------------

class Director:
    def __init__(self, network: str, capacity: int):
        r = check_text(_cf(network))
        assert r.ok, [str(d) for d in r.diagnostics]
        self.tables = tb.compile(r.config)
        self.ct = en.attach(ctm.create(capacity, 1), self.tables)
        self.counters = en.new_counters(self.tables)

    def process(self, batch):
        return en.process(batch, NOW, self.tables, self.ct, self.counters)


def _clients(k, base, seed):
    """k distinct (address, port) pairs: many addresses, a few ports each."""
    rng = np.random.default_rng(seed)
    i = np.arange(k, dtype=np.uint64)
    caddr = base + (i // 4) * 7 % (1 << 20)  # distinct per i//4 (7 is odd); k/4*7 < 2^17 here
    cport = 1024 + (i % 4) * 15000 + rng.integers(0, 15000, k).astype(np.uint64)
    return caddr.astype(np.uint64), cport.astype(np.uint64)


def _send_all(d, packets, expect):
    """Push packets through ``d`` in batches of 256; returns dest_row per packet."""
    rows = np.empty(len(packets), dtype=np.int64)
    for s in range(0, len(packets), 256):
        chunk = packets[s:s + 256]
        b = en.batch_from_packets(list(chunk))
        v = d.process(b)
        assert (v.reason == expect).all(), en.reason_counts(d.counters)
        rows[s:s + len(chunk)] = v.dest_row
    return rows


@functools.cache
def _established(network: str):
    """A director holding FLOWS established connections, and their addresses."""
    _check_builder()
    d = Director(network, 1 << 15)
    caddr, cport = _clients(FLOWS, 0xC6120000, seed=1)  # 198.18.0.0/15
    syn = tcp_packets(caddr, cport, np.full(FLOWS, VIP), np.full(FLOWS, VPORT), TCP_SYN, 64)
    fwd = en.C_NAT_IN if network == "nat" else en.C_DR
    rows = _send_all(d, syn, fwd)
    ack = tcp_packets(caddr, cport, np.full(FLOWS, VIP), np.full(FLOWS, VPORT), TCP_ACK_PSH, 64)
    _send_all(d, ack, fwd)
    assert d.ct.meta[ctm.M_COUNT] == FLOWS
    assert (d.ct.entries["state"][d.ct.entries["live"] == 1] == ctm.S_ESTABLISHED).all()
    raddr = d.tables.dest[rows, ADDR].astype(np.uint64)
    rport = d.tables.dest[rows, PORT].astype(np.uint64)
    assert len(np.unique(raddr)) == N_SERVERS
    return d, caddr, cport, raddr, rport


@functools.cache
def _pristine(case: str, size: int):
    """Packets of every flow for an established case, in a shuffled flow order."""
    network = "direct" if case == "DR" else "nat"
    d, caddr, cport, raddr, rport = _established(network)
    if case == "NAT out":
        p = tcp_packets(raddr, rport, caddr, cport, TCP_ACK_PSH, size)
    else:
        p = tcp_packets(caddr, cport, np.full(FLOWS, VIP), np.full(FLOWS, VPORT), TCP_ACK_PSH, size)
    order = np.random.default_rng(3).permutation(FLOWS)
    return d, np.ascontiguousarray(p[order])


class _Feeder:
    """The round's batch: restores ``n`` pristine packets into the buffer (setup)."""

    def __init__(self, n, size, source):
        self.n, self.size, self.source = n, size, source  # source(j) -> uint8[n, size]
        self.batch = en.Batch(np.zeros((n, en.STRIDE_DEFAULT), np.uint8),
                              np.full(n, rw.HEADROOM, np.uint32), np.full(n, size, np.uint32),
                              np.zeros(n, np.uint32), n)
        self.j = 0

    def restore(self, j):
        self.batch.buf[:, rw.HEADROOM:rw.HEADROOM + self.size] = self.source(j)
        self.batch.off[:] = rw.HEADROOM
        self.batch.lens[:] = self.size
        return self.batch

    def __call__(self):
        self.j += 1
        return (self.restore(self.j - 1),), {}


def _source(case, size, n, rounds):
    """(director, source(j) -> packets of round j, expected reason slot)."""
    if case == "new":
        total = (rounds + 1) * n
        cap = 1 << max(12, int(np.ceil(np.log2(2 * total))))  # stays below 50 % full
        d = Director("nat", cap)
        caddr, cport = _clients(total, 0x64400000, seed=2)  # 100.64.0.0/10
        vip = np.full(n, VIP)
        vport = np.full(n, VPORT)

        def fresh(j):
            s = slice(j * n, (j + 1) * n)
            return tcp_packets(caddr[s], cport[s], vip, vport, TCP_SYN, size)
        return d, fresh, en.C_NAT_IN
    d, pristine = _pristine(case, size)
    starts = {}

    def cycle(j):
        a = (j * n) % FLOWS
        if a + n <= FLOWS:
            return pristine[a:a + n]
        if a not in starts:
            starts[a] = np.take(pristine, np.arange(a, a + n) % FLOWS, axis=0)
        return starts[a]
    slot = {"NAT in": en.C_NAT_IN, "NAT out": en.C_NAT_OUT, "DR": en.C_DR}[case]
    return d, cycle, slot


@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("case", CASES)
def test_engine(benchmark, engine_results, case, size, n):
    rounds = ROUNDS[n]
    d, source, slot = _source(case, size, n, rounds + WARMUP + 1)
    feed = _Feeder(n, size, source)
    process = en.process
    tables, ct, counters = d.tables, d.ct, d.counters

    def run(batch):
        process(batch, NOW, tables, ct, counters)

    run(*feed()[0])  # compile (cached on disk) and warm
    before = counters.reasons.copy()
    created = int(ct.counters[ctm.C_CREATED])
    benchmark.group = f"engine {case} {size} B"
    benchmark.extra_info.update(case=case, size=size, batch=n)
    benchmark.pedantic(run, setup=feed, rounds=rounds, warmup_rounds=WARMUP, iterations=1)
    delta = counters.reasons - before
    assert delta[slot] == (rounds + WARMUP) * n and delta.sum() == delta[slot], en.reason_counts(counters)
    if case == "new":
        assert int(ct.counters[ctm.C_CREATED]) - created == (rounds + WARMUP) * n
        assert ct.counters[ctm.C_FULL_DROPS] == 0
    engine_results(case, size, n, benchmark.stats.stats.median)


@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("case", CASES)
def test_engine_c_entry(benchmark, engine_results, case, size, n):
    """The same batches through the C entry point the C loop calls per batch
    (``pl_engine_batch``: the engine cfunc, then the C rewrite), timed from Python: the
    figure includes one cffi call (~0.2 us) that the C loop does not pay."""
    rounds = ROUNDS[n]
    d, source, slot = _source(case, size, n, rounds + WARMUP + 1)
    arrays = BatchArrays(n, en.STRIDE_DEFAULT)
    native = NativeState(opts=en.options(), tunnel_src=0)
    native.point(d.ct, d.tables, d.counters, np.zeros(1, dtype=NEIGH_DTYPE))
    cfwd, cbatch, engine_batch = native.c, arrays.c, lib.pl_engine_batch
    j = [0]

    def setup():
        arrays.buf[:, rw.HEADROOM:rw.HEADROOM + size] = source(j[0])
        arrays.off[:] = rw.HEADROOM
        arrays.lens[:] = size
        j[0] += 1
        return (), {}

    def run():
        engine_batch(cfwd, cbatch, n, NOW)

    setup()
    run()  # the cfunc loads from numba's cache (compiled by pylvs.precompile)
    counters, ct = d.counters, d.ct
    before = counters.reasons.copy()
    created = int(ct.counters[ctm.C_CREATED])
    benchmark.group = f"engine C entry {case} {size} B"
    benchmark.extra_info.update(case=case, size=size, batch=n, entry="C")
    benchmark.pedantic(run, setup=setup, rounds=rounds, warmup_rounds=WARMUP, iterations=1)
    delta = counters.reasons - before
    assert delta[slot] == (rounds + WARMUP) * n and delta.sum() == delta[slot], en.reason_counts(counters)
    if case == "new":
        assert int(ct.counters[ctm.C_CREATED]) - created == (rounds + WARMUP) * n
    engine_results(f"{case} (C entry)", size, n, benchmark.stats.stats.median)


def test_bytes_per_entry(benchmark, engine_results):
    """conntab.memory_per_entry of a 2^20 table (times creating it, to run under
    --benchmark-only)."""
    benchmark.group = "engine conntab"
    table = benchmark.pedantic(ctm.create, args=(1 << 20, 1), rounds=1)
    engine_results("bytes/entry", 0, 1 << 20, ctm.memory_per_entry(table))
    engine_results("entry dtype", 0, 0, ctm.ENTRY_DTYPE.itemsize)


# --- where the time goes ------------------------------------------------------------

PARTS = ["prologue", "kernel", "rewrite call", "C rewrite", "fold", "process()"]


def _split(batch, d):
    """``engine.process`` step by step (same calls, same arguments), timed per step."""
    t = time.perf_counter_ns
    tables, ct, counters = d.tables, d.ct, d.counters
    t0 = t()
    n = int(batch.n)
    buf = batch.buf
    # process()'s argument checks, as it does them
    if buf.dtype != np.uint8 or buf.ndim != 2 or not buf.flags.c_contiguous:
        raise ValueError
    for name in ("off", "lens", "marks"):
        a = getattr(batch, name)
        if a.dtype != np.uint32 or a.ndim != 1 or a.shape[0] < n:
            raise ValueError
    if ct.dest is not tables.dest or ct.persist is not tables.persist:
        raise ValueError
    if counters.svc.shape[0] != tables.svc.shape[0] or counters.dest.shape[0] != tables.dest.shape[0]:
        raise ValueError
    fields = hd.new_fields(max(n, 1))
    ops = np.zeros(n, dtype=rw.OP_DTYPE)
    verdict = np.full(n, en.V_DROP, dtype=np.uint8)
    reason = np.zeros(n, dtype=np.int16)
    dest_row = np.full(n, -1, dtype=np.int64)
    off = batch.off[:n]
    lens = batch.lens[:n]
    t1 = t()
    # One dispatch: the sweep and every packet.
    n_ops = en._process_kernel(buf, off, lens, batch.marks[:n], n, fields, float(NOW), int(NOW * 1000), 0,
                               en.SWEEP_PER_PACKET * n + en.SWEEP_BASE, ct, tables.svc, tables.dest,
                               tables.state, tables.dest_svc, tables.svc_keys, tables.svc_keys_idx,
                               tables.fwm_keys, tables.fwm_idx, counters.reasons, counters.svc,
                               counters.dest, counters.ip_id, np.int64(0), ops, verdict, reason, dest_row)
    t2 = t()
    results = np.zeros(n, dtype=np.uint8)
    rewritten = rw._apply_checked_arrays(buf[:n], lens, ops, off, results)
    t3 = t()
    if rewritten != n_ops:  # process() folds failures into counters only then
        raise AssertionError("rewrite refused a packet")
    t4 = t()
    return [t1 - t0, t2 - t1, t3 - t2, 0, t4 - t3], ops


def _c_only(batch, ops, n):
    """Only the C call inside rewrite.apply (the cffi buffers made beforehand)."""
    from pylvs._native import ffi, lib
    results = np.zeros(n, dtype=np.uint8)
    args = (ffi.from_buffer("uint8_t[]", batch.buf[:n], require_writable=True), n, batch.buf.shape[1],
            ffi.from_buffer("uint32_t[]", batch.off[:n], require_writable=True),
            ffi.from_buffer("uint32_t[]", batch.lens[:n], require_writable=True),
            ffi.from_buffer(rw._C_OP + "[]", ops),
            ffi.from_buffer("uint8_t[]", results, require_writable=True))
    t = time.perf_counter_ns()
    lib.pl_rewrite_batch(*args)
    return time.perf_counter_ns() - t


@pytest.mark.parametrize("n", [1, 256])
@pytest.mark.parametrize("case", CASES)
def test_breakdown(benchmark, engine_results, case, n):
    """Median ns per batch of each part of process() for batches of n packets of 64
    bytes (interleaved with whole process() calls on the same kind of batch).  The
    pytest-benchmark time of this test is the whole loop (one round)."""
    benchmark.group = "engine breakdown"
    benchmark.pedantic(_breakdown, args=(engine_results, case, n), rounds=1)


def _breakdown(engine_results, case, n):
    size, rounds = 64, 300
    d, source, slot = _source(case, size, n, 2 * (rounds + WARMUP))
    feed = _Feeder(n, size, source)
    parts = []
    for r in range(rounds + WARMUP):
        (batch,), _ = feed()
        row, ops = _split(batch, d)
        batch = feed.restore(feed.j - 1)  # the C call alone on the same packets and ops
        row[3] = _c_only(batch, ops, n)
        (batch,), _ = feed()
        t = time.perf_counter_ns()
        d.process(batch)
        row.append(time.perf_counter_ns() - t)
        if r >= WARMUP:
            parts.append(row)
    med = np.median(np.array(parts, dtype=np.float64), axis=0)
    for name, v in zip(PARTS, med, strict=True):
        engine_results(f"split {case}", n, name, float(v))
