"""One worker's forwarding state and the doors into it: ``handle``, ``native`` and ``swap``.

The Python I/O adapters call ``handle(batch)`` from the dataplane thread; the C loop
(``io.nfq_loop``) calls the engine's cfunc itself, through the ``struct pl_fwd`` that
``native()`` returns and every swap republishes.  The director calls ``swap(tables)`` (a
recompiled configuration), ``snapshot()`` (status views), ``expire()`` and
``tick_estimators()`` from its control thread.  One gate (``csrc/loop.h``: a mutex the
dataplane takes once per batch, with a turnstile so the control thread is never
starved) keeps them apart: compiling happens outside it (ARCHITECTURE rule 1, compile
then swap), so a reload holds the dataplane up only for the moment of the swap itself.

No I/O here: the clock is injected (``clock``: seconds, monotonic) so tests replay it;
the C loop reads CLOCK_MONOTONIC, which is ``time.monotonic``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from pylvs._native import ffi, lib
from pylvs.addr import ip_str
from pylvs.config.model import Config
from pylvs.dataplane import connsync as cs
from pylvs.dataplane import conntab as ctm
from pylvs.dataplane import engine as en
from pylvs.dataplane import tables as tb
from pylvs.dataplane.defense import Defense
from pylvs.dataplane.estimator import RATE_NAMES, Estimator
from pylvs.sched import ACT, ADDR, F_AVAILABLE, FLAGS, FWD, INACT, LTHR, PORT, UTHR, W
from pylvs.sched._dispatch import NAMES as SCHED_NAMES
from pylvs.sched._dispatch import gc_kernel
from pylvs.sched._loctab import CHECK_EXPIRE_INTERVAL_MS

# ipvsadm's "(size=4096)" is the kernel's hash size; ours is the table's fixed capacity.
CONN_TABLE_CAPACITY = 1 << 20  # 1 M entries at 76 B each (docs/benchmarks.md): ~76 MiB
FORWARD_NAMES = {ctm.FWD_MASQ: "Masq", ctm.FWD_LOCALNODE: "Local", ctm.FWD_DROUTE: "Route",
                 ctm.FWD_TUNNEL: "Tunnel"}  # ipvsadm -L (fwd_name)
TUN_TYPE_IPIP = "ipip"  # the only tunnel pylvs makes (ipvsadm --tun-type ipip, the default)
SNAPSHOT_AF = 4  # AF_INET as ipvsadm shows it: pylvs forwards IPv4 only
PROTO_NAMES = {ctm.IPPROTO_TCP: "TCP", ctm.IPPROTO_UDP: "UDP"}
LOCALITY_SCHEDULERS = ("lblc", "lblcr")  # their tables need the collector timer
GC_INTERVAL = CHECK_EXPIRE_INTERVAL_MS / 1000  # seconds
# Records one sync_collect returns at most: 256 full version-1 messages of 40 entries
# (pylvs.ha.sync), i.e. ~51 000 connections/s at the daemon's 0.2 s period.
SYNC_COLLECT_MAX = 256 * 40




class Forwarder:
    def __init__(self, tables: tb.Tables, *, capacity: int = CONN_TABLE_CAPACITY, tunnel_src: int = 0,
                 clock: Callable[[], float], expire_nodest_conn: bool = False,
                 expire_quiescent_template: bool = False, defense: Defense | None = None) -> None:  # fmt: skip
        self.tables = tables
        self.defense = defense or Defense()
        self.local: frozenset[str] = frozenset()  # the director's own addresses (LOCALNODE servers)
        self.ct = en.attach(ctm.create(capacity, 1), tables)
        self.counters = en.new_counters(tables)
        self.tunnel_src = tunnel_src
        self.clock = clock
        self.opts = {"expire_nodest_conn": expire_nodest_conn,
                     "expire_quiescent_template": expire_quiescent_template}  # fmt: skip
        # The gate between the dataplane and the control thread (csrc/loop.h).  cffi
        # releases the GIL while a thread waits at it.
        self.gate = ffi.gc(lib.pl_gate_new(), lib.pl_gate_free)
        self._native = None  # engine_cfunc.NativeState once native() is asked for
        self.next_hops: dict[int, tuple[int, int, bytes, bytes]] = {}  # RIP -> ifindex, mtu, src, dst MAC
        self.svc_est = Estimator(tables.svc.shape[0])
        self.dest_est = Estimator(tables.dest.shape[0])
        self.batches = 0
        self.busy = 0.0  # seconds spent in engine.process (the status shows it per batch)
        self.swap_hold = (0.0, 0.0)  # seconds the last swap, and the longest, kept the gate closed
        self._sync_out = np.zeros(SYNC_COLLECT_MAX, dtype=cs.SYNC_DTYPE)  # reused by sync_collect
        self._sync_fwmark: np.ndarray | None = None
        self._sync_fwmark_of: tb.Tables | None = None

    def warm_up(self) -> None:
        """Compile the engine's numba kernels now (from the on-disk cache when warm), so
        the first real packet does not wait for the JIT: one packet that is not ours
        through a throw-away table and counters."""
        probe = bytes.fromhex("4500001c000000004011" "0000" "c0000201" "c0000202") + bytes(8)  # UDP, TEST-NET
        t = self.tables
        ct = en.attach(ctm.create(2, 1), t)
        en.process(en.batch_from_packets([probe]), 0.0, t, ct, en.new_counters(t))
        # The swap's kernels too (the counts carried into a copy), so the first health
        # change does not hold the gate while numba loads them.
        rows, n = t.dest.shape[0], t.svc.shape[0]
        copy = t._replace(dest=t.dest.copy(), persist=t.persist.copy(), state=t.state.copy(),
                          row_map=np.arange(rows, dtype=np.int64), svc_map=np.arange(n, dtype=np.int64))
        en.carry(en.attach(ctm.create(2, 1), t), copy, t)

    # -- dataplane thread ------------------------------------------------------------------
    def handle(self, batch: en.Batch) -> en.Verdicts:
        lib.pl_gate_batch_enter(self.gate)
        try:
            t = time.perf_counter()
            self.batches += 1
            v = en.process(batch, self.clock(), self.tables, self.ct, self.counters,
                           tunnel_src=self.tunnel_src, **self.opts)  # fmt: skip
            self.busy += time.perf_counter() - t
            return v
        finally:
            lib.pl_gate_batch_leave(self.gate)

    def native(self):
        """The ``struct pl_fwd *`` the C loop reads (the engine cfunc, this generation's
        state descriptor, options, next hops), kept current by every swap.  Loads the
        cfunc (compiled on first use, then from numba's cache)."""
        if self._native is None:
            from pylvs.dataplane.engine_cfunc import NativeState

            native = NativeState(opts=en.options(**self.opts), tunnel_src=self.tunnel_src)
            with self.exclusive():
                self._native = native
                self._publish()
        return self._native.c

    def _publish(self) -> None:
        """Point the C loop's struct at the current generation (the gate held)."""
        if self._native is not None:
            self._native.point(self.ct, self.tables, self.counters, next_hop_array(self.tables, self.next_hops))

    # -- control thread --------------------------------------------------------------------
    @contextlib.contextmanager
    def exclusive(self):
        """The forwarding state to itself, between two batches, without starving."""
        lib.pl_gate_enter(self.gate)
        try:
            yield
        finally:
            lib.pl_gate_leave(self.gate)

    def set_next_hops(self, next_hops: dict[int, tuple[int, int, bytes, bytes]]) -> None:
        """The real servers' next hops for direct routing (RIP -> ifindex, MTU, the out
        interface's MAC, the server's MAC), resolved by the control thread."""
        with self.exclusive():
            self.next_hops = dict(next_hops)
            self._publish()

    def set_tunnel_src(self, tunnel_src: int) -> None:
        """The IPIP outer source address (host order), for the Python engine and the C
        loop's next batch: a configuration that gains its first tunnel server after the
        start (pylvsadm -a -i, a reload) needs one, and ``tunnel_src`` was 0 until then."""
        with self.exclusive():
            self.tunnel_src = int(tunnel_src)
            if self._native is not None:
                self._native.c.tunnel_src = self.tunnel_src

    def expire(self, budget: int) -> int:
        """Expiry on a clock: sweep ``budget`` slots of the connection table now, so
        entries end and ActiveConn/InActConn stay right while no packet arrives (the
        per-batch sweep only runs when packets do).  Returns the entries removed."""
        with self.exclusive():
            t = self.tables
            return en.expire(self.ct, self.clock(), budget, t)

    def defense_tick(self) -> int:
        """The defences' once-a-second work (defense.Defense.tick): levels from the table's
        fill, then the drop_entry scan while engaged.  Returns the entries it dropped."""
        with self.exclusive():
            return self.defense.tick(self.ct, self.clock())

    def compile(self, config: Config, health=None) -> tb.Tables:
        """New tables for ``config`` (outside the lock: reads only the current tables)."""
        return tb.compile(config, health=health, previous=self.tables, local=self.local)

    def swap(self, new: tb.Tables) -> None:
        """Install tables compiled with ``previous=`` the current ones; connections kept.
        The time the gate stays closed (what a batch can wait) is kept in ``swap_hold``
        (last, max, seconds): O(rows), never O(connections) (engine.swap)."""
        # Made ahead, outside the gate (only this thread replaces them), writing nothing
        # the dataplane reads: the table's view on the new arrays, zeroed counters, the
        # estimators, the C loop's descriptor.
        old = self.tables
        ct = en.aim(self.ct, new)
        counters = en.new_counters(new)
        svc_est = self.svc_est.remap(new.svc_map, new.svc.shape[0])
        dest_est = self.dest_est.remap(new.row_map, new.dest.shape[0])
        native = self._native
        staged = None if native is None else native.stage(ct, new, counters, next_hop_array(new, self.next_hops))
        with self.exclusive():
            t0 = time.perf_counter()
            en.carry(self.ct, new, old)  # the counts as the last batch left them
            en.carry_counters(counters, new, self.counters)
            en.apply_timeouts(ct, new)
            self.ct, self.counters, self.tables = ct, counters, new
            self.svc_est, self.dest_est = svc_est, dest_est
            if self._native is not None and self._native is native:
                self._native.publish(staged)
            else:
                self._publish()  # the C side appeared meanwhile: describe it here
            held = time.perf_counter() - t0
        self.swap_hold = (held, max(held, self.swap_hold[1]))

    def collect_garbage(self) -> None:
        """One run of the lblc/lblcr collectors (ip_vs_lblc(r)_check_expire); the caller
        runs it every ``_loctab.CHECK_EXPIRE_INTERVAL_MS``.  No-op for other schedulers."""
        with self.exclusive():
            now_ms = int(self.clock() * 1000)
            t = self.tables
            for i, s in enumerate(t.svc):
                if s["active"] and SCHED_NAMES[int(s["alg_id"])] in LOCALITY_SCHEDULERS:
                    dest, state = t.block(i)
                    gc_kernel(int(s["alg_id"]), dest, state, now_ms)

    def reset_counts(self, service: int) -> int:
        """quiesce_server's least-connection reset for one service (its rows' ActiveConn
        and InActConn to 0, connections kept); returns the entries it stopped counting."""
        with self.exclusive():
            rows = np.array(tb.list_rows(self.tables, service), dtype=np.int64)
            n = ctm.reset_counts(self.ct, rows)
            en._refresh_trees(self.tables)
            return n

    def sync_collect(self, now: float | None = None) -> np.ndarray:
        """The master sync daemon's read (reference 10): the entries due since the last
        call (conntab's due rule) as SYNC_DTYPE records, marked sent.  At most
        SYNC_COLLECT_MAX per call; the rest stays due for the next one."""
        with self.exclusive():
            now = self.clock() if now is None else now
            t = self.tables
            if self._sync_fwmark_of is not t:  # the svc fwmark column, once per generation
                self._sync_fwmark = np.ascontiguousarray(t.svc["fwmark"], dtype=np.uint32)
                self._sync_fwmark_of = t
            n = cs.collect_sync(self.ct, now, self._sync_out, t.dest_svc, self._sync_fwmark)
            return self._sync_out[:n].copy()

    def sync_apply(self, records: np.ndarray, now: float | None = None) -> dict[str, int]:
        """The backup sync daemon's write: create or update the entries of ``records``
        (connsync.apply_sync), then refresh the schedulers over the rows whose counters
        moved, as the engine does between packets.  Returns connsync.APPLY_COUNTER_NAMES counts."""
        with self.exclusive():
            now = self.clock() if now is None else now
            counts = cs.apply_sync(self.ct, records, now, self.tables)
            t = self.tables
            en._drain_touched(self.ct, t.svc, t.dest, t.state, t.dest_svc)
            return counts

    def tick_estimators(self) -> None:
        with self.exclusive():
            svc, dest = self.counters.svc.copy(), self.counters.dest.copy()
            svc_est, dest_est = self.svc_est, self.dest_est
        svc_est.tick(svc)
        dest_est.tick(dest)

    def snapshot(self) -> dict[str, Any]:
        """The virtual-server table with counters and rates, as plain data (JSON-able).

        Services in table order, each one's dests in list order (head first).  A dest's
        ``forward`` is its own row's method (Masq, Route, Tunnel); the fields ipvsadm 1.31
        shows that pylvs has one answer for are filled in: ``ops`` False, ``pe`` None,
        ``af`` 4; per dest ``tun_type`` "ipip" for a Tunnel dest (else None), ``tun_port``
        and ``tun_flags`` None (no GUE/GRE)."""
        with self.exclusive():
            t = self.tables
            svc = t.svc.copy()
            dest = t.dest.copy()
            persist = t.persist.copy()
            stats_s, stats_d = self.counters.svc.copy(), self.counters.dest.copy()
            reasons = en.reason_counts(self.counters)
            rates_s, rates_d = self.svc_est.rates(), self.dest_est.rates()
            n_conns = ctm.count(self.ct)
            capacity = int(self.ct.entries.shape[0])
            conntab = ctm.counters(self.ct)
            defense = self.defense.state(self.ct)
            generation = int(t.generation)
        services = []
        for i, s in enumerate(svc):
            if not s["active"]:
                continue
            off, cap = int(s["dest_off"]), int(s["dest_cap"])
            dests = []
            for r in range(off, off + cap):
                row = dest[r]
                if not row[FLAGS] & F_AVAILABLE:
                    continue
                fwd = int(row[FWD])
                dests.append({
                    "addr": ip_str(row[ADDR]), "port": int(row[PORT]), "forward": FORWARD_NAMES[fwd],
                    "tun_type": TUN_TYPE_IPIP if fwd == ctm.FWD_TUNNEL else None, "tun_port": None, "tun_flags": None,
                    "weight": int(row[W]), "active": int(row[ACT]), "inactive": int(row[INACT]),
                    "persistent": int(persist[r]), "uthreshold": int(row[UTHR]), "lthreshold": int(row[LTHR]),
                    "stats": dict(zip(en.STAT_NAMES, stats_d[r].tolist(), strict=True)),
                    "rates": dict(zip(RATE_NAMES, rates_d[r].tolist(), strict=True)),
                })  # fmt: skip
            services.append({
                "proto": PROTO_NAMES.get(int(s["l4proto"]), str(int(s["l4proto"]))),
                "vip": ip_str(s["vaddr"]), "port": int(s["vport"]), "fwmark": int(s["fwmark"]),
                "scheduler": SCHED_NAMES[int(s["alg_id"])], "sched_flags": int(s["sched_flags"]),
                "persistent": int(s["timeout"]) if s["flags"] & tb.SVC_F_PERSISTENT else 0,
                "pmask": ip_str(s["pmask"]), "ops": False, "pe": None, "af": SNAPSHOT_AF,
                "stats": dict(zip(en.STAT_NAMES, stats_s[i].tolist(), strict=True)),
                "rates": dict(zip(RATE_NAMES, rates_s[i].tolist(), strict=True)),
                "dests": dests,
            })  # fmt: skip
        return {"generation": generation, "size": capacity, "connections": n_conns,
                "batches": self.batches, "engine_us_per_batch": round(1e6 * self.busy / max(self.batches, 1), 1),
                "reasons": reasons, "conntab": conntab, "defense": defense,
                "swap_hold_us": {"last": round(1e6 * self.swap_hold[0], 1), "max": round(1e6 * self.swap_hold[1], 1)},
                "services": services}  # fmt: skip


MTU_MAX = 0xFFFF  # struct pl_neigh keeps the MTU in 16 bits (loopback's is 65536)
NEIGH_DTYPE = np.dtype([("ifindex", "<i4"), ("mtu", "<u2"), ("dst", "u1", 6), ("src", "u1", 6),
                        ("reserved", "<u2")])  # struct pl_neigh (csrc/loop.h)
if NEIGH_DTYPE.itemsize != ffi.sizeof("struct pl_neigh") or any(
        NEIGH_DTYPE.fields[k][1] != ffi.offsetof("struct pl_neigh", k) for k in NEIGH_DTYPE.names):
    raise ImportError("NEIGH_DTYPE does not match struct pl_neigh in csrc/loop.h")


def next_hop_array(tables: tb.Tables, next_hops: dict[int, tuple[int, int, bytes, bytes]]) -> np.ndarray:
    """``struct pl_neigh`` per dest row of ``tables`` (ifindex 0: not resolved)."""
    out = np.zeros(max(tables.dest.shape[0], 1), dtype=NEIGH_DTYPE)
    for r in range(tables.dest.shape[0]):
        hop = next_hops.get(int(tables.dest[r, ADDR]))
        if hop is not None:
            ifindex, mtu, src, dst = hop
            out[r] = (ifindex, min(mtu, MTU_MAX), tuple(dst), tuple(src), 0)
    return out


def dest_addresses(tables: tb.Tables) -> np.ndarray:
    """Host-order addresses of every listed real server (for neighbour resolution)."""
    rows = [r for r in range(tables.dest.shape[0]) if tables.dest[r, FLAGS] & F_AVAILABLE]
    return np.unique(tables.dest[rows, ADDR]) if rows else np.zeros(0, dtype=np.int64)
