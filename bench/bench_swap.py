"""Swaps under forwarding load (issue 16): how long a reconfiguration keeps the gate closed
when the connection table holds 1,000,000 entries (capacity 2^20).

A NAT director (16 real servers, wlc) is filled with 1 M connections, then for 30 s a
dataplane thread forwards established-flow batches of 256 packets through the C entry
point (``pl_engine_batch``, the C loop's own call, behind the gate as the loop takes it)
while the control thread flaps one server's health 10 times a second: each flap is a
compile (outside the gate) and a ``Forwarder.swap`` (inside).  Reported:

* the swap's lock hold (``Forwarder.swap_hold``: from the gate taken to the gate left),
  median, 99th percentile and maximum over the 300 swaps: the longest forwarding can
  stop for a flap;
* the dataplane's longest wait at the gate as Python timed it around the call, which
  adds the wait for the GIL after the call returns (the C loop has no such wait; the
  bench sets a 0.1 ms switch interval to keep it small): an upper bound;
* what the swap cost before entries kept a stable real-server identity: the walk that
  remapped every live entry's row (the same numpy operation, timed on a copy of this
  table).

    .venv/bin/python -m pytest bench/bench_swap.py --benchmark-only -p no:cacheprovider -s
"""

from __future__ import annotations

import sys
import threading
import time

import numpy as np
import pytest
from bench_engine import TCP_ACK_PSH, TCP_SYN, VIP, VPORT, _cf, tcp_packets
from pylvs._native import lib

from pylvs.config import check_text
from pylvs.dataplane import conntab as ctm
from pylvs.dataplane import engine as en
from pylvs.dataplane import rewrite as rw
from pylvs.dataplane import tables as tb
from pylvs.dataplane.engine_cfunc import BatchArrays
from pylvs.dataplane.forwarder import Forwarder

CAPACITY = 1 << 20
ENTRIES = 1_000_000
FLAPS_PER_SECOND = 10
SECONDS = 30
BATCH = 256
SIZE = 64
FILL_BATCH = 4096
TARGET_HOLD = 1e-3  # the target for a swap's lock hold


def _batch(pkts: np.ndarray) -> en.Batch:
    n = pkts.shape[0]
    buf = np.zeros((n, rw.HEADROOM + SIZE), dtype=np.uint8)
    buf[:, rw.HEADROOM:] = pkts
    return en.Batch(buf, np.full(n, rw.HEADROOM, dtype=np.uint32), np.full(n, SIZE, dtype=np.uint32),
                    np.zeros(n, dtype=np.uint32), n)  # fmt: skip


def _clients(n: int) -> tuple[np.ndarray, np.ndarray]:
    i = np.arange(n, dtype=np.uint64)
    return 0xC6120000 + i // 16, 1024 + (i % 16) * 4000 + (i // 16) % 4000  # distinct pairs


def _filled() -> tuple[Forwarder, np.ndarray, np.ndarray]:
    config = check_text(_cf("nat")).config
    fwd = Forwarder(tb.compile(config), capacity=CAPACITY, clock=time.monotonic)
    fwd.warm_up()  # as the director does before its first packet
    caddr, cport = _clients(ENTRIES)
    for s in range(0, ENTRIES, FILL_BATCH):
        e = min(s + FILL_BATCH, ENTRIES)
        syn = tcp_packets(caddr[s:e], cport[s:e], np.full(e - s, VIP), np.full(e - s, VPORT), TCP_SYN, SIZE)
        fwd.handle(_batch(syn))
    assert ctm.count(fwd.ct) == ENTRIES, ctm.count(fwd.ct)
    return fwd, caddr, cport


def _old_walk(ct: ctm.ConnTable, rows: int) -> float:
    """The swap's former O(entries) step, on a copy: every bound entry's row remapped."""
    e = ct.entries.copy()
    row_map = np.arange(rows, dtype=np.int64)
    t0 = time.perf_counter()
    d = e["dest_id"].astype(np.int64)
    bound = (e["live"] == 1) & (d >= 0)
    e["dest_id"][bound] = row_map[d[bound]]
    return time.perf_counter() - t0


def _forward(fwd: Forwarder, acks: list[np.ndarray], stop: threading.Event, waits: list[float],
             done: list[int]) -> None:  # fmt: skip
    arrays = BatchArrays(BATCH, rw.HEADROOM + SIZE + 64)
    cfwd, gate = fwd.native(), fwd.gate
    k = 0
    while not stop.is_set():
        pkts = acks[k % len(acks)]
        k += 1
        arrays.buf[:BATCH, rw.HEADROOM:rw.HEADROOM + SIZE] = pkts
        arrays.off[:] = rw.HEADROOM
        arrays.lens[:] = SIZE
        t0 = time.perf_counter()
        lib.pl_gate_batch_enter(gate)
        t1 = time.perf_counter()
        lib.pl_engine_batch(cfwd, arrays.c, BATCH, lib.pl_monotonic())
        lib.pl_gate_batch_leave(gate)
        waits.append(t1 - t0)
        done[0] += BATCH


def _flaps(fwd: Forwarder, config) -> list[float]:
    holds = []
    victim = config.virtuals[0].servers[-1]
    key = tb.health_key(config, config.virtuals[0], victim)
    start = time.monotonic()
    for k in range(FLAPS_PER_SECOND * SECONDS):
        health = {key: tb.HealthState(up=k % 2 == 1)}
        fwd.swap(fwd.compile(config, health))
        holds.append(fwd.swap_hold[0])
        time.sleep(max(0.0, start + (k + 1) / FLAPS_PER_SECOND - time.monotonic()))
    return holds


@pytest.mark.benchmark(group="swap")
def test_swap_lock_hold_under_flaps(benchmark):
    fwd, caddr, cport = _filled()
    config = check_text(_cf("nat")).config
    pick = np.random.default_rng(5).choice(ENTRIES, size=(64, BATCH), replace=False)
    acks = [tcp_packets(caddr[p], cport[p], np.full(BATCH, VIP), np.full(BATCH, VPORT), TCP_ACK_PSH, SIZE)
            for p in pick]  # fmt: skip
    old = _old_walk(fwd.ct, fwd.tables.dest.shape[0])
    stop, waits, done = threading.Event(), [], [0]
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)
    worker = threading.Thread(target=_forward, args=(fwd, acks, stop, waits, done), daemon=True)
    try:
        worker.start()
        t0 = time.monotonic()
        holds = benchmark.pedantic(_flaps, args=(fwd, config), rounds=1, iterations=1)
        elapsed = time.monotonic() - t0
    finally:
        stop.set()
        worker.join(10)
        sys.setswitchinterval(switch)
    assert ctm.count(fwd.ct) >= ENTRIES - 1  # the flaps changed no connection
    h = np.array(holds) * 1e6
    w = np.array(waits) * 1e6
    benchmark.extra_info.update(hold_p50_us=float(np.median(h)), hold_p99_us=float(np.percentile(h, 99)),
                                hold_max_us=float(h.max()), wait_max_us=float(w.max()), old_walk_us=old * 1e6)
    print(f"\n{len(holds)} swaps at {FLAPS_PER_SECOND}/s with {ctm.count(fwd.ct):,} entries "
          f"(capacity {CAPACITY:,}) while forwarding {done[0] / elapsed / 1e6:.2f} M packets/s")
    print(f"swap lock hold: median {np.median(h):.0f} us, p99 {np.percentile(h, 99):.0f} us, "
          f"max {h.max():.0f} us (swap #{int(h.argmax()) + 1}; target {TARGET_HOLD * 1e6:.0f} us)")
    print(f"dataplane's longest wait at the gate, GIL included: {w.max():.0f} us over {len(w):,} batches")
    print(f"the former swap's walk over the entries alone: {old * 1e3:.1f} ms "
          f"({old * 1e6 / np.median(h):.0f} x today's median hold)")
