"""The sans-I/O forwarding core: ``process(batch, now, tables, ct, counters) -> Verdicts``.

Python runs once per batch: one numba call (``_process_kernel``) runs the bounded
expiry sweep, then parses every packet, looks up or creates its connection, schedules,
runs the TCP state machine, counts and fills one rewrite op per packet; then one C call
does the byte work; only when it rewrote fewer packets than there were ops does a
vectorised fold turn the failures into drops.  Nothing here reads a clock,
opens a socket or logs (ARCHITECTURE rules 2-4, 7).

Kernel functions followed (reference 7.8, 7.6, 8): ``ip_vs_in`` (``_handle_packet``,
``_handle_existing``), ``ip_vs_out`` (the NAT reply branch of ``_handle_packet``),
``ip_vs_in_icmp``/``ip_vs_out_icmp`` (``_handle_icmp``), ``ip_vs_schedule``
(``_schedule``, ``_handle_new``), ``ip_vs_sched_persist`` (``_sched_persist``),
``ip_vs_nat_xmit``/``ip_vs_dr_xmit``/``ip_vs_tunnel_xmit`` (``_emit``).

Per packet, in order:

1. parse (``headers._parse_one``): R_OTHER_PROTO passes, other problems drop with
   ``parse_<reason>``; any fragment drops (``fragment``: NFQUEUE hands over reassembled
   datagrams, so a fragment here is not one of ours to key).
2. ICMP errors: quoted key looked up out (from a real server about a NAT connection,
   ``ICMP_NAT_OUT``) then in (from the client side about a reply: NAT ``ICMP_NAT_IN``,
   DR unchanged, TUN encapsulated); no match passes (``icmp_unmatched``); other ICMP
   passes (``icmp_other``).
3. TCP/UDP: in-entry -> forward by its method; else NAT out-entry -> ``NAT_OUT``; else a
   new connection (service lookup, SYN check, persistence template or scheduler,
   conntab ``_new``) forwarded by the chosen real server's method (the dest row's
   ``FWD``, as the kernel's per-dest conn_flags: a service may mix methods).
4. after every packet the rows whose counters changed (``ct.touched``) refresh their
   scheduler's tree (lc family), so the next decision in the batch sees them.

Every packet gets exactly one verdict and exactly one counter slot (``reason``), so the
counters of a batch add up to its size.  Statistics (reference 7.9: conns, inpkts,
outpkts, inbytes, outbytes) are kept per service and per dest row, counted before
transmit as the kernel does (a packet the rewrite then refuses is still counted in).

At a reconfiguration, ``swap`` moves the connection table to the new Tables (counters
carried, entries' rows remapped through ``row_map``, lvs.cf timeouts applied) and
``adopt_counters`` carries the statistics.

``conn_reuse_mode`` (default 1) as ip_vs_in since 5.9: a SYN that finds an entry in
TIME_WAIT or CLOSE (mode bit 2: also FIN_WAIT without replies) ends that entry and is
scheduled as a new connection, so a client port reused quickly is balanced and counted.
Rate estimators (``estimator``) and the lblc/lblcr collector run from the director's
control thread (``forwarder``), and so does connection sync, which reads and writes the
connection table between batches (``connsync.collect_sync`` / ``apply_sync``).

The FTP helper of NAT port-21 services (``ftp``, the kernel's ip_vs_ftp) reads the
control connections' commands and replies in the engine itself: 227 rewriting with the
sequence adjustment that follows, data connections filed in advance (docs/ftp.md).

Not done yet: ``sloppy_tcp``; the ``cache_bypass`` of fwmark services; errors about the
IPIP packet itself (reference 8, tunnel column).
"""

from __future__ import annotations

import threading
from typing import NamedTuple

import numpy as np
from numba import njit

from pylvs.dataplane import conntab as ctm
from pylvs.dataplane import ftp
from pylvs.dataplane import headers as hd
from pylvs.dataplane import rewrite as rw
from pylvs.dataplane.conntab import (
    DIR_INPUT,
    DIR_OUTPUT,
    F_APP_FTP,
    F_FWD_MASK,
    F_NO_CPORT,
    F_NOOUTPUT,
    F_OUT_SEQ,
    F_TEMPLATE,
    FWD_LOCALNODE,
    FWD_MASQ,
    FWD_TUNNEL,
    IPPROTO_IP,
    M_DROP_COUNTER,
    M_DROP_RATE,
    M_TOUCHED,
    TCP_ACK,
    TCP_RST,
    TCP_SYN,
    TOUCHED_CAP,
    _countdown,
    _dest_row,
    _fill_cport,
    _invalidate_template,
    _lookup_in,
    _lookup_in_hashed,
    _lookup_no_cport,
    _lookup_out,
    _lookup_out_hashed,
    _lookup_template,
    _new,
    _new_hashed,
    _packet_hashes,
    _prefetch_free,
    _prefetch_keys,
    _release,
    _sweep,
    _tcp_transition,
    _touch,
)
from pylvs.dataplane.headers import (
    F_DADDR,
    F_DPORT,
    F_FRAG,
    F_HASH_IN,
    F_HASH_OUT,
    F_ICMP_TYPE,
    F_IHL,
    F_IN_DADDR,
    F_IN_DPORT,
    F_IN_PROTO,
    F_IN_SADDR,
    F_IN_SPORT,
    F_PROTO,
    F_REASON,
    F_SADDR,
    F_SPORT,
    F_TCP_FLAGS,
    F_TOTAL,
    FRAG_NONE,
    IPPROTO_ICMP,
    IPPROTO_TCP,
    R_OK,
    R_OTHER_PROTO,
)
from pylvs.dataplane.tables import FTP_CONTROL_PORT, SVC_F_PERSISTENT, Tables, _lookup_kernel
from pylvs.dataplane.tables import adopt_counters as _adopt_table_counters
from pylvs.sched._common import ADDR, F_AVAILABLE, FLAGS, FWD, PORT, W
from pylvs.sched._dispatch import ALG_ID, schedule_kernel, update_kernel
from pylvs.sched._tree import _config_kernel as _tree_config_kernel

# --- Verdicts ------------------------------------------------------------------------
# V_REJECT: the packet was turned into the ICMP port unreachable for its sender (no
# real server, reference 7.8 step 5); the adapter sends it from the local stack (its
# source is the VIP) and drops the original.
V_PASS, V_DROP, V_NAT, V_DR, V_TUNNEL, V_REJECT = range(6)
VERDICT_NAMES = ("pass", "drop", "nat", "dr", "tunnel", "reject")

# --- Counter slots: every packet lands in exactly one --------------------------------
_FORWARD = (
    "nat_in", "nat_out", "dr", "tunnel",                     # TCP/UDP forwarded
    "icmp_nat_in", "icmp_nat_out", "icmp_dr", "icmp_tunnel",  # ICMP errors forwarded
    "local", "icmp_local",  # PASS: to the director's own stack, a LOCALNODE server (7.8)
)  # fmt: skip
_OUTCOMES = (
    "fragment",        # DROP: a fragment (NFQUEUE delivers reassembled datagrams)
    "no_service",      # PASS: no virtual service for the new connection
    "not_syn",         # PASS: TCP without SYN (or with RST) and no entry (ip_vs_in accepts)
    "no_dest",         # REJECT: no server: ICMP port unreachable to the client (ip_vs_leave)
    "table_full",      # DROP: the connection table refused the entry
    "nodest",          # DROP: the entry's server was deleted (expire_nodest_conn, 7.7)
    "icmp_unmatched",  # PASS: an ICMP error about no connection of ours
    "icmp_other",      # PASS: ICMP that is not an error (echo, ...)
    "drop_packet",     # DROP: a new connection the drop_packet defence refused (defense.py)
)  # fmt: skip
# Parse problems, one slot per headers reason so C_PARSE_BASE + R_* indexes them
# (``parse_ok`` is never counted: a parsed packet lands in another slot; nor is
# ``parse_fragment``: every fragment, first or later, is counted as ``fragment``).
_PARSE = tuple("parse_" + name for name in hd.REASON_NAMES)
# Rewrite failures, one slot per RW code (``rewrite_OK`` is never counted).
_REWRITE = tuple("rewrite_" + name for name in rw.RESULT_NAMES)
REASON_NAMES = _FORWARD + _OUTCOMES + _PARSE + _REWRITE
N_REASONS = len(REASON_NAMES)
(C_NAT_IN, C_NAT_OUT, C_DR, C_TUNNEL, C_ICMP_NAT_IN, C_ICMP_NAT_OUT, C_ICMP_DR,
 C_ICMP_TUNNEL, C_LOCAL, C_ICMP_LOCAL) = range(len(_FORWARD))  # fmt: skip
(C_FRAGMENT, C_NO_SERVICE, C_NOT_SYN, C_NO_DEST, C_TABLE_FULL, C_NODEST, C_ICMP_UNMATCHED,
 C_ICMP_OTHER, C_DROP_PACKET) = range(len(_FORWARD), len(_FORWARD) + len(_OUTCOMES))  # fmt: skip
C_PARSE_BASE = len(_FORWARD) + len(_OUTCOMES)  # + headers R_* code
C_REWRITE_BASE = C_PARSE_BASE + len(_PARSE)  # + rewrite RW_* code

# --- Statistics columns (reference 7.9) ------------------------------------------------
S_CONNS, S_INPKTS, S_OUTPKTS, S_INBYTES, S_OUTBYTES = range(5)
STAT_NAMES = ("conns", "inpkts", "outpkts", "inbytes", "outbytes")

# --- Engine options (bit flags passed to the kernel) ------------------------------------
OPT_EXPIRE_NODEST_CONN = 0x1  # sysctl expire_nodest_conn (default 0, reference 7.7)
OPT_EXPIRE_QUIESCENT_TEMPLATE = 0x2  # sysctl expire_quiescent_template (default 0, 7.6)
# sysctl conn_reuse_mode (default 1, reference 7.7), shifted into the option bits:
# bit 1 reschedules a new SYN that hits a TIME_WAIT/CLOSE entry, bit 2 also FIN_WAIT
# entries that never saw a reply (DR/TUN).
OPT_CONN_REUSE_SHIFT = 2
CONN_REUSE_MODE_DEFAULT = 1
CONN_REUSE_FIN_WAIT = 2

# Sweep budget per batch: entries visited = SWEEP_PER_PACKET * n + SWEEP_BASE, so the
# sweep outruns the creation rate (at most one entry and one template per packet).
SWEEP_PER_PACKET = 2
SWEEP_BASE = 64
TREE_SCHEDULERS = ("lc", "wlc", "sed", "nq", "fo", "ovf")  # keep a tree over the counters
_TREE_ALG_IDS = tuple(ALG_ID[name] for name in TREE_SCHEDULERS)
# Rows one packet can touch: its entry and template, plus what the eviction scan of a
# full table reaps.  Below TOUCHED_CAP, so only the sweep can overflow `touched`.
PACKET_TOUCH_MAX = ctm.EVICT_SCAN + 4
assert PACKET_TOUCH_MAX < ctm.TOUCHED_CAP

STRIDE_DEFAULT = 2048
SCRATCH_ROWS = 256  # parse fields and rewrite ops kept per thread; grown for bigger batches
U16 = 0xFFFF


class Batch(NamedTuple):
    """Packets of one batch: row ``i`` of ``buf`` holds packet ``i`` at ``off[i]``."""

    buf: np.ndarray  # uint8[rows, stride], C-contiguous; rows >= n
    off: np.ndarray  # uint32[rows]
    lens: np.ndarray  # uint32[rows]
    marks: np.ndarray  # uint32[rows]: firewall marks (0 = none)
    n: int


def batch_from_packets(packets, marks=None, stride: int | None = None, rows: int | None = None) -> Batch:
    """A Batch from packet bytes (tests, pcap replay): each at ``rewrite.HEADROOM``."""
    packets = [bytes(p) for p in packets]
    n = len(packets)
    longest = max((len(p) for p in packets), default=0)
    if stride is None:
        stride = max(STRIDE_DEFAULT, rw.HEADROOM + longest)
    rows = n if rows is None else rows
    if rows < n:
        raise ValueError(f"rows={rows} < {n} packets")
    buf = np.zeros((max(rows, 1), stride), dtype=np.uint8)
    off = np.full(max(rows, 1), rw.HEADROOM, dtype=np.uint32)
    lens = np.zeros(max(rows, 1), dtype=np.uint32)
    mk = np.zeros(max(rows, 1), dtype=np.uint32)
    for i, p in enumerate(packets):
        if rw.HEADROOM + len(p) > stride:
            raise ValueError(f"packet {i} ({len(p)} bytes) does not fit a row of {stride}")
        buf[i, rw.HEADROOM:rw.HEADROOM + len(p)] = np.frombuffer(p, dtype=np.uint8)
        lens[i] = len(p)
    if marks is not None:
        mk[:n] = np.asarray(marks, dtype=np.uint32)
    return Batch(buf, off, lens, mk, n)


def packet_bytes(batch: Batch, i: int) -> bytes:
    """Packet ``i`` as it stands now (after ``process``: as rewritten)."""
    start = int(batch.off[i])
    return bytes(batch.buf[i, start:start + int(batch.lens[i])])


class Counters(NamedTuple):
    """The engine's counters; keep one per worker and pass it to every ``process``."""

    reasons: np.ndarray  # int64[N_REASONS], REASON_NAMES
    svc: np.ndarray  # int64[n_services, 5], STAT_NAMES, indexed like tables.svc
    dest: np.ndarray  # int64[R, 5], STAT_NAMES, indexed like tables.dest
    ip_id: np.ndarray  # uint64[1]: the next outer IP id for IPIP


def new_counters(tables: Tables) -> Counters:
    return Counters(
        reasons=np.zeros(N_REASONS, dtype=np.int64),
        svc=np.zeros((tables.svc.shape[0], len(STAT_NAMES)), dtype=np.int64),
        dest=np.zeros((tables.dest.shape[0], len(STAT_NAMES)), dtype=np.int64),
        ip_id=np.zeros(1, dtype=np.uint64),
    )


def adopt_counters(new: Tables, old: Counters) -> Counters:
    """Counters for ``new`` (compiled from the tables ``old`` counted on) carrying the
    reasons, the IPIP id and the statistics of every service and row that survived
    (``new.svc_map``/``new.row_map``).  Run it at the swap, with ``tables.adopt_counters``."""
    c = new_counters(new)
    carry_counters(c, new, old)
    return c


def carry_counters(c: Counters, new: Tables, old: Counters) -> None:
    """``adopt_counters`` into counters made ahead with ``new_counters(new)`` (a swap
    allocates outside the gate and copies inside it)."""
    if new.svc_map.shape[0] != old.svc.shape[0] or new.row_map.shape[0] != old.dest.shape[0]:
        raise ValueError("new was not compiled from the tables these counters are for")
    c.reasons[:] = old.reasons
    c.ip_id[:] = old.ip_id
    keep = new.svc_map >= 0
    c.svc[new.svc_map[keep]] = old.svc[keep]
    keep = new.row_map >= 0
    c.dest[new.row_map[keep]] = old.dest[keep]


# Tables.timeouts (ipvsadm --set tcp tcpfin udp, 0 = keep) -> conntab state names.
_SET_TIMEOUT_STATES = ("ESTABLISHED", "FIN_WAIT", "UDP")


def swap(ct: ctm.ConnTable, new: Tables, old: Tables) -> ctm.ConnTable:
    """Move a connection table from ``old`` to ``new`` (compiled with previous=old), at
    a moment no packet is being processed: counters carried (``tables.adopt_counters``),
    the lvs.cf timeouts applied, and the table pointed at ``new``'s identity maps.

    Entries name their real server by identity (``Tables.dest_id``), which a server keeps
    across generations however its row moves, so a swap costs O(rows), never O(entries).
    The one exception: entries a quiesce reset stopped counting (F_UNCOUNTED) are the
    only ones that may name a server whose identity this generation frees; while any
    exist and identities are freed, those entries are unbound here (a walk, rare)."""
    carry(ct, new, old)
    return attach(ct, new)


def carry(ct: ctm.ConnTable, new: Tables, old: Tables) -> None:
    """The part of ``swap`` that must see the last batch of ``old``: the counts carried
    over, quiesce-reset entries of freed identities unbound.  (``aim(ct, new)`` can be
    made before it: it writes nothing; ``apply_timeouts`` goes with it, under the gate.)"""
    if ct.dest is not old.dest:
        raise ValueError("the connection table does not count on `old`")
    _adopt_table_counters(new, old)
    if ct.meta[ctm.M_UNCOUNTED] > 0:
        freed = _freed_ids(old, new)
        if freed.size:
            e = ct.entries
            gone = (e["live"] == 1) & np.isin(e["dest_id"], freed)
            e["dest_id"][gone] = -1


def _freed_ids(old: Tables, new: Tables) -> np.ndarray:
    """Identities of ``old``'s servers whose rows ``new`` did not carry (``new`` may have
    given the number to another server already)."""
    return old.dest_id[(old.dest_id >= 0) & (new.row_map < 0)]


def attach(ct: ctm.ConnTable, tables: Tables) -> ctm.ConnTable:
    """The table counting on ``tables``' arrays, with the lvs.cf timeouts applied (for a
    fresh table; at a reconfiguration use ``swap``)."""
    out = aim(ct, tables)
    apply_timeouts(out, tables)
    return out


def aim(ct: ctm.ConnTable, tables: Tables) -> ctm.ConnTable:
    """A view of the table on ``tables``' arrays; writes nothing (a swap makes it ahead)."""
    return ctm.attach(ct, tables.dest, tables.persist, tables.id_row, tables.dest_id)


def apply_timeouts(ct: ctm.ConnTable, tables: Tables) -> None:
    """The lvs.cf timeouts (ipvsadm --set) into the table's timeout array (shared by every
    view of the table: a swap does it under the gate)."""
    for state, seconds in zip(_SET_TIMEOUT_STATES, tables.timeouts.tolist(), strict=True):
        if seconds > 0:
            ctm.set_timeouts(ct, **{state: seconds})


def reason_counts(counters: Counters) -> dict[str, int]:
    """Non-zero reason counters by name."""
    return {REASON_NAMES[k]: int(v) for k, v in enumerate(counters.reasons) if v}


class Verdicts(NamedTuple):
    verdict: np.ndarray  # uint8[n], V_*
    reason: np.ndarray  # int16[n], the counter slot the packet was counted in
    dest_row: np.ndarray  # int64[n], global dest row (DR: the RIP to resolve), -1 none
    off: np.ndarray  # uint32[n], where the (rewritten) packet starts (a view of batch.off)
    lens: np.ndarray  # uint32[n], its length (a view of batch.lens)
    rewrite: np.ndarray  # uint8[n], rewrite.RW_* result per packet


# =========================================================================================
# The kernel
# =========================================================================================
# All engine kernels are compiled with _nrt=False: they never allocate, and without the
# runtime's reference counting a call between numba functions does not pay an atomic
# incref/decref per array argument (and the ConnTable alone is 12 arrays).  Measured on
# 1024-packet batches of one established flow: 0.37 -> 1.1 M packets/s.


@njit(cache=True, error_model="numpy", _nrt=False, inline="always")
def _emit(ops, i, kind, addr, port, addr2, ip_id, flags):
    o = ops[i]
    o.kind = kind
    o.flags = flags
    o.port = port
    o.id = ip_id
    o.addr = addr
    o.addr2 = addr2


@njit(cache=True, error_model="numpy", _nrt=False)
def _next_ip_id(ip_id):
    v = ip_id[0]
    ip_id[0] = v + np.uint64(1)
    return np.uint16(v & np.uint64(U16))


@njit(cache=True, error_model="numpy", _nrt=False, inline="always")
def _forward_in(ct, n, i, ops, verdict, reason, dest_row, dest, tunnel_src, ip_id, icmp):
    """Transmit a client-side packet of entry ``n`` by the entry's method (ip_vs_*_xmit).

    ``icmp``: the packet is an ICMP error about a reply of the entry (ip_vs_in_icmp):
    NAT translates it, DR/TUN forward it as they would the connection's packets.
    """
    e = ct.entries[n]
    fwd = e.flags & F_FWD_MASK
    d = _dest_row(ct, e)
    dest_row[i] = d
    if fwd == FWD_MASQ:
        verdict[i] = V_NAT
        if icmp:
            _emit(ops, i, rw.OP_ICMP_NAT_IN, e.daddr, e.dport, 0, 0, 0)
            reason[i] = C_ICMP_NAT_IN
        else:
            _emit(ops, i, rw.OP_NAT_IN, e.daddr, e.dport, 0, 0, 0)
            reason[i] = C_NAT_IN
    elif fwd == FWD_TUNNEL:
        verdict[i] = V_TUNNEL
        # pmtu_disc = 1 (reference 7.7 default): DF copied to the outer header.
        _emit(ops, i, rw.OP_TUNNEL, e.daddr, 0, tunnel_src, _next_ip_id(ip_id), rw.FLAG_COPY_DF)
        reason[i] = C_ICMP_TUNNEL if icmp else C_TUNNEL
    elif fwd == FWD_LOCALNODE:
        # ip_vs_null_xmit: the director is the real server; the packet goes on, unchanged,
        # to its own stack (a socket on the VIP's port answers, from the VIP).
        verdict[i] = V_PASS
        reason[i] = C_ICMP_LOCAL if icmp else C_LOCAL
    else:
        # FWD_DROUTE: the adapter sends the packet unchanged to the real server's MAC
        # (dest_row -> RIP).
        verdict[i] = V_DR
        reason[i] = C_ICMP_DR if icmp else C_DR


@njit(cache=True, error_model="numpy", _nrt=False, inline="always")
def _count_in(svc_stats, dest_stats, dest_svc, d, nbytes, new_conn):
    if d < 0:
        return
    dest_stats[d, S_INPKTS] += 1
    dest_stats[d, S_INBYTES] += nbytes
    if new_conn:
        dest_stats[d, S_CONNS] += 1
    s = dest_svc[d]
    if s >= 0:
        svc_stats[s, S_INPKTS] += 1
        svc_stats[s, S_INBYTES] += nbytes
        if new_conn:
            svc_stats[s, S_CONNS] += 1


@njit(cache=True, error_model="numpy", _nrt=False, inline="always")
def _count_out(svc_stats, dest_stats, dest_svc, d, nbytes):
    if d < 0:
        return
    dest_stats[d, S_OUTPKTS] += 1
    dest_stats[d, S_OUTBYTES] += nbytes
    s = dest_svc[d]
    if s >= 0:
        svc_stats[s, S_OUTPKTS] += 1
        svc_stats[s, S_OUTBYTES] += nbytes


@njit(cache=True, error_model="numpy", _nrt=False, inline="always")
def _state_step(ct, n, proto, direction, tcp_flags, now):
    """The protocol's state machine for one packet: TCP transitions, UDP a timer restart."""
    if proto == IPPROTO_TCP:
        _tcp_transition(ct, n, direction, tcp_flags, now)
    else:
        _touch(ct, n, now)


@njit(cache=True, error_model="numpy", _nrt=False, inline="always")
def _icmp_error(icmp_type):
    """The ICMP types IPVS translates (ip_vs_out_icmp): unreachable, source quench, time
    exceeded; any other ICMP is nobody's connection."""
    return icmp_type == 3 or icmp_type == 4 or icmp_type == 11


@njit(cache=True, error_model="numpy", _nrt=False, inline="always")
def _quoted_out(ct, f, now):
    """The NAT entry an ICMP error from a real server is about: its quote is the client's
    packet as the server received it (client -> RIP); -1 when none."""
    return _lookup_out(ct, f[F_IN_PROTO], f[F_IN_DADDR], f[F_IN_DPORT], f[F_IN_SADDR], f[F_IN_SPORT], now)


@njit(cache=True, error_model="numpy", _nrt=False, inline="always")
def _handle_icmp(f, i, ct, now, ops, verdict, reason, dest_row, dest, dest_svc,
                 svc_stats, dest_stats, tunnel_src, ip_id):  # fmt: skip
    """ICMP (ip_vs_out_icmp, then ip_vs_in_icmp): translate errors about our connections."""
    if not _icmp_error(f[F_ICMP_TYPE]):
        verdict[i] = V_PASS
        reason[i] = C_ICMP_OTHER
        return
    q_proto = f[F_IN_PROTO]
    if q_proto < 0:  # the quote is too short to key: not ours
        verdict[i] = V_PASS
        reason[i] = C_ICMP_UNMATCHED
        return
    nbytes = f[F_TOTAL]
    n = _quoted_out(ct, f, now)
    if n >= 0:
        e = ct.entries[n]
        verdict[i] = V_NAT
        reason[i] = C_ICMP_NAT_OUT
        d = _dest_row(ct, e)
        dest_row[i] = d
        _emit(ops, i, rw.OP_ICMP_NAT_OUT, e.vaddr, e.vport, 0, 0, 0)
        _count_out(svc_stats, dest_stats, dest_svc, d, nbytes)
        return
    # From the client side about a reply: the quote is VIP -> client.
    n = _lookup_in(ct, q_proto, f[F_IN_DADDR], f[F_IN_DPORT], f[F_IN_SADDR], f[F_IN_SPORT], now)
    if n >= 0:
        _forward_in(ct, n, i, ops, verdict, reason, dest_row, dest, tunnel_src, ip_id, True)
        _count_in(svc_stats, dest_stats, dest_svc, _dest_row(ct, ct.entries[n]), nbytes, False)
        return
    verdict[i] = V_PASS
    reason[i] = C_ICMP_UNMATCHED


@njit(cache=True, error_model="numpy", _nrt=False, inline="always")
def _handle_existing(f, i, n, ct, now, opts, ops, verdict, reason, dest_row, dest, dest_svc,
                     svc_stats, dest_stats, tunnel_src, ip_id, buf, off, lens):  # fmt: skip
    """ip_vs_in for a packet of entry ``n`` (reference 7.8 steps 6-7)."""
    e = ct.entries[n]
    d = _dest_row(ct, e)
    if d >= 0 and (dest[d, FLAGS] & F_AVAILABLE) == 0:
        # The server was deleted (kept in the trash while counted): drop, as the kernel.
        dest_row[i] = d
        verdict[i] = V_DROP
        reason[i] = C_NODEST
        if opts & OPT_EXPIRE_NODEST_CONN:
            if e.n_control > 0:
                e.expires = now  # an FTP control connection: its data connections keep it a while
            else:
                _release(ct, n)
        return
    _state_step(ct, n, f[F_PROTO], DIR_INPUT, f[F_TCP_FLAGS], now)
    e.in_pkts += 1
    if e.control >= 0:
        _touch(ct, e.control, now)  # the template lives while its connections do
    _count_in(svc_stats, dest_stats, dest_svc, d, f[F_TOTAL], False)
    full = (e.flags & F_APP_FTP) != 0 and _ftp_in(ct, n, buf[i], np.int64(off[i]), f, now)
    _forward_in(ct, n, i, ops, verdict, reason, dest_row, dest, tunnel_src, ip_id, False)
    if full:
        ops[i].flags |= rw.FLAG_FULL_CSUM


# --- the FTP helper's glue (pylvs.dataplane.ftp: the parsers and the byte work) -----------


@njit(cache=True, error_model="numpy", _nrt=False, inline="always")
def _tcp_payload(row, ip, f):
    """(TCP header, payload start, packet end) of the packet at ``ip``; a data offset
    below the 20-byte header (a broken segment) reads as no options."""
    tcp = ip + f[F_IHL]
    return tcp, tcp + max(np.int64(row[tcp + 12]) >> 4, np.int64(5)) * 4, ip + f[F_TOTAL]


@njit(cache=True, error_model="numpy", _nrt=False)
def _ftp_data_entry(ct, ctl, cport, vport, dport, flags, now):
    """The data connection's entry, controlled by control connection ``ctl``, in LISTEN
    (ip_vs_tcp_conn_listen); an entry an identical earlier command or reply made is
    reused.  -1 when the table is full."""
    c = ct.entries[ctl]
    m = _lookup_in(ct, IPPROTO_TCP, c.caddr, cport, c.vaddr, vport, now)
    if m < 0:
        m = _new(ct, IPPROTO_TCP, c.caddr, cport, c.vaddr, vport, c.daddr, dport,
                 (c.flags & F_FWD_MASK) | flags, _dest_row(ct, c), ctl, now, 0.0)
        if m < 0:
            return m
    e = ct.entries[m]
    e.state = ctm.S_LISTEN
    e.timeout = ct.timeouts[ctm.S_LISTEN]
    e.expires = now + e.timeout
    return m


@njit(cache=True, error_model="numpy", _nrt=False)
def _ftp_in(ct, n, row, ip, f, now):
    """ip_vs_app_pkt_in + ip_vs_ftp_in on a client -> server packet of control connection
    ``n``: the acknowledgement taken back by the reply rewrites so far, then PASV / EPSV
    remembered, PORT / EPRT naming the client given their data entry.  True when bytes
    changed (the NAT op then recomputes the checksums)."""
    e = ct.entries[n]
    tcp, pay, end = _tcp_payload(row, ip, f)
    changed = False
    if e.flags & F_OUT_SEQ:
        ftp.fix_ack(row, tcp, np.int64(e.seq_init), np.int64(e.seq_delta), np.int64(e.seq_prev))
        changed = True
    if e.state != ctm.S_ESTABLISHED or pay >= end:
        return changed
    kind, addr, port = ftp._command(row, pay, end)
    if kind == ftp.K_PASV:
        e.app = ftp.APP_PASV
    elif kind == ftp.K_EPSV:
        e.app = ftp.APP_EPSV
    elif (kind == ftp.K_PORT or kind == ftp.K_EPRT) and addr == e.caddr and e.vport > 1 and e.dport > 1:
        # the server connects from the port below its control port (20 for 21)
        _ftp_data_entry(ct, n, port, np.int64(e.vport) - 1, np.int64(e.dport) - 1, 0, now)
    return changed


@njit(cache=True, error_model="numpy", _nrt=False)
def _ftp_out(ct, n, row, ip, lens, i, f, now):
    """ip_vs_app_pkt_out + ip_vs_ftp_out on a server -> client packet of control
    connection ``n``: the sequence number moved by the rewrites so far, then the 227 /
    229 reply to the client's PASV / EPSV: its data entry, and the 227's address made the
    VIP (the length difference recorded for the packets after it).  True when bytes
    changed."""
    e = ct.entries[n]
    tcp, pay, end = _tcp_payload(row, ip, f)
    seq = ftp._load32(row, tcp + 4)  # the server's own number: vs_seq_update keys on it
    changed = False
    if e.flags & F_OUT_SEQ:
        ftp.fix_seq(row, tcp, np.int64(e.seq_init), np.int64(e.seq_delta), np.int64(e.seq_prev))
        changed = True
    if e.state != ctm.S_ESTABLISHED or e.app == ftp.APP_ACTIVE or pay >= end:
        return changed
    kind, addr, port, start, stop = ftp._reply(row, pay, end)
    if kind == ftp.K_227 and e.app == ftp.APP_PASV:
        # Only a reply naming the real server itself: one that names the VIP already
        # (pasv_address) or another host is the server's business.
        if addr != e.daddr or _ftp_data_entry(ct, n, 0, port, port, F_NO_CPORT, now) < 0:
            return changed
        done, diff = ftp.rewrite_227(row, ip, end, start, stop, np.int64(e.vaddr), port)
        if done:
            changed = True
            lens[i] = np.uint32(np.int64(lens[i]) + diff)
            if diff != 0 and ((e.flags & F_OUT_SEQ) == 0 or ftp._after(seq, np.int64(e.seq_init))):
                # vs_seq_update
                e.seq_prev = e.seq_delta
                e.seq_delta = np.int64(e.seq_delta) + diff
                e.seq_init = seq
                e.flags |= F_OUT_SEQ
                # pylvs: the backups need the new adjustment before the next reply; send
                # the entry again at the next collection (THE DUE RULE: a changed state)
                e.sync_state = ctm.SYNC_NEVER
        e.app = ftp.APP_ACTIVE
    elif kind == ftp.K_229 and e.app == ftp.APP_EPSV:
        _ftp_data_entry(ct, n, 0, port, port, F_NO_CPORT, now)
        e.app = ftp.APP_ACTIVE
    return changed


@njit(cache=True, error_model="numpy", _nrt=False, inline="always")
def _schedule(s, dest, state, caddr, cport, daddr, dport, now_ms):
    """ip_vs_schedule's scheduler call on the service's block: global row or -1."""
    off = s.dest_off
    so = s.state_off
    local = schedule_kernel(s.alg_id, dest[off:off + s.dest_cap], state[so:so + s.state_len],
                            caddr, cport, daddr, dport, now_ms)
    if local < 0:
        return np.int64(-1)
    return off + local


@njit(cache=True, error_model="numpy", _nrt=False, inline="always")
def _sched_persist(s, ct, f, now, now_ms, opts, dest, state):
    """ip_vs_sched_persist: (global dest row, template entry) or (-1, -1) when no
    server, (-2, -1) when the table is full."""
    saddr = f[F_SADDR]
    snet = saddr & np.int64(s.pmask)
    # Template key (reference 7.6).
    if s.fwmark != 0:
        tproto = np.int64(IPPROTO_IP)
        tvaddr = np.int64(s.fwmark)
        tvport = np.int64(0)
    elif s.vport == 0 or s.vport == FTP_CONTROL_PORT:  # FTP's templates cover its data ports
        tproto = f[F_PROTO]
        tvaddr = f[F_DADDR]
        tvport = np.int64(0)
    else:
        tproto = f[F_PROTO]
        tvaddr = f[F_DADDR]
        tvport = np.int64(s.vport)
    t = _lookup_template(ct, tproto, snet, tvaddr, tvport, now)
    if t >= 0:
        d = _dest_row(ct, ct.entries[t])
        usable = d >= 0 and (dest[d, FLAGS] & F_AVAILABLE) != 0
        if usable and (opts & OPT_EXPIRE_QUIESCENT_TEMPLATE) and dest[d, W] == 0:
            usable = False
        if usable:
            _touch(ct, t, now)
            return d, t
        _invalidate_template(ct, t)
    d = _schedule(s, dest, state, saddr, f[F_SPORT], f[F_DADDR], f[F_DPORT], now_ms)
    if d < 0:
        return np.int64(-1), np.int64(-1)
    tdport = np.int64(0) if tvport == 0 else dest[d, PORT]
    # The template takes its dest's forwarding method (ip_vs_bind_dest: dest->conn_flags).
    t = _new(ct, tproto, snet, 0, tvaddr, tvport, dest[d, ADDR], tdport,
             F_TEMPLATE | dest[d, FWD], d, -1, now, np.float64(s.timeout))
    if t < 0:
        return np.int64(-2), np.int64(-1)
    return d, t


@njit(cache=True, error_model="numpy", _nrt=False, inline="always")
def _todrop(ct):
    """ip_vs_todrop: while drop_packet is engaged, every ``rate``-th new connection."""
    rate = ct.meta[M_DROP_RATE]
    return rate != 0 and _countdown(ct.meta, M_DROP_COUNTER, rate)


@njit(cache=True, error_model="numpy", _nrt=False, inline="always")
def _handle_new(f, i, mark, ct, now, now_ms, opts, ops, verdict, reason, dest_row, svc, dest, state,
                dest_svc, svc_keys, svc_keys_idx, fwm_keys, fwm_idx, svc_stats, dest_stats,
                tunnel_src, ip_id):  # fmt: skip
    """No entry: schedule a new connection (ip_vs_in step 4-5, ip_vs_schedule)."""
    proto = f[F_PROTO]
    k = _lookup_kernel(svc_keys, svc_keys_idx, fwm_keys, fwm_idx, proto, f[F_DADDR], f[F_DPORT], mark)
    if k < 0:
        verdict[i] = V_PASS
        reason[i] = C_NO_SERVICE
        return
    if proto == IPPROTO_TCP and ((f[F_TCP_FLAGS] & TCP_SYN) == 0 or (f[F_TCP_FLAGS] & TCP_RST) != 0):
        # Only a SYN opens a TCP connection; the rest goes to the local stack.
        verdict[i] = V_PASS
        reason[i] = C_NOT_SYN
        return
    if _todrop(ct):  # tcp_conn_schedule / udp_conn_schedule: "we are very loaded"
        verdict[i] = V_DROP
        reason[i] = C_DROP_PACKET
        return
    s = svc[k]
    if s.flags & SVC_F_PERSISTENT:
        d, t = _sched_persist(s, ct, f, now, now_ms, opts, dest, state)
    else:
        d = _schedule(s, dest, state, f[F_SADDR], f[F_SPORT], f[F_DADDR], f[F_DPORT], now_ms)
        t = np.int64(-1)
    if d == -2:
        verdict[i] = V_DROP
        reason[i] = C_TABLE_FULL
        return
    if d < 0:  # ip_vs_leave: ICMP port unreachable to the client, TCP included
        verdict[i] = V_REJECT
        reason[i] = C_NO_DEST
        _emit(ops, i, rw.OP_ICMP_UNREACH, 0, 0, 0, _next_ip_id(ip_id), 0)
        return
    # The real port: the server's when the packet hit the service port; else (port-0
    # and firewall-mark services bundle ports) the packet's own.
    if s.fwmark == 0 and f[F_DPORT] == s.vport:
        rport = dest[d, PORT]
    else:
        rport = f[F_DPORT]
    # The forwarding method is the chosen dest's (ip_vs_bind_dest: "connections inherit
    # forwarding method from dest"; one service may mix Masq, Route and Tunnel servers).
    fwd = dest[d, FWD]
    flags = fwd
    if fwd != FWD_MASQ:
        flags |= F_NOOUTPUT
    elif ftp.binds(proto, s.fwmark, s.vport, f[F_DPORT]):
        flags |= F_APP_FTP
    n = _new_hashed(ct, np.uint64(f[F_HASH_IN]), proto, f[F_SADDR], f[F_SPORT], f[F_DADDR], f[F_DPORT],
                    dest[d, ADDR], rport, flags, d, t, now, 0.0)
    if n < 0:
        verdict[i] = V_DROP
        reason[i] = C_TABLE_FULL
        return
    e = ct.entries[n]
    _state_step(ct, n, proto, DIR_INPUT, f[F_TCP_FLAGS], now)
    e.in_pkts += 1
    _count_in(svc_stats, dest_stats, dest_svc, d, f[F_TOTAL], True)
    _forward_in(ct, n, i, ops, verdict, reason, dest_row, dest, tunnel_src, ip_id, False)


@njit(cache=True, error_model="numpy", _nrt=False)
def _drain_touched(ct, svc, dest, state, dest_svc):
    """Refresh the schedulers over rows whose counters changed (the lc-family trees).

    When more rows changed than ``touched`` remembers (only a large sweep gets there:
    one packet touches a handful of rows, see PACKET_TOUCH_MAX), every tree is rebuilt
    from its counters instead."""
    k = ct.meta[M_TOUCHED]
    ct.meta[M_TOUCHED] = 0
    if k > TOUCHED_CAP:
        _refresh_trees_kernel(svc, dest, state)
        return
    for j in range(k):
        r = ct.touched[j]
        if r < 0 or r >= dest_svc.shape[0]:
            continue
        sv = dest_svc[r]
        if sv < 0:
            continue
        s = svc[sv]
        if s.active == 0:
            continue
        off = s.dest_off
        so = s.state_off
        update_kernel(s.alg_id, dest[off:off + s.dest_cap], state[so:so + s.state_len], r - off)


@njit(cache=True, error_model="numpy", _nrt=False)
def _refresh_trees_kernel(svc, dest, state):
    """Rebuild every tree-backed scheduler from its counters (after a large sweep).

    The other algorithms keep nothing derived from the counters, and wrr's config would
    reset its cursor, so only these are rebuilt (the six share one tree rebuild)."""
    for k in range(svc.shape[0]):
        s = svc[k]
        if s.active != 0 and _is_tree(s.alg_id):
            off = s.dest_off
            so = s.state_off
            _tree_config_kernel(dest[off:off + s.dest_cap], state[so:so + s.state_len])


@njit(cache=True, error_model="numpy", _nrt=False, inline="always")
def _is_tree(alg_id):
    for a in _TREE_ALG_IDS:
        if alg_id == a:
            return True
    return False


def _refresh_trees(tables: Tables) -> None:
    """``_refresh_trees_kernel`` over ``tables`` (the control thread, under the gate)."""
    _refresh_trees_kernel(tables.svc, tables.dest, tables.state)


@njit(cache=True, error_model="numpy", _nrt=False, inline="always")
def _handle_packet(f, i, mark, ct, now, now_ms, opts, ops, verdict, reason, dest_row, svc, dest,
                   state, dest_svc, svc_keys, svc_keys_idx, fwm_keys, fwm_idx, svc_stats,
                   dest_stats, tunnel_src, ip_id, buf, off, lens):  # fmt: skip
    r = f[F_REASON]
    if r != R_OK:
        # Not IPv4 TCP/UDP/ICMP at all: someone else's; broken: dropped, counted.
        verdict[i] = V_PASS if r == R_OTHER_PROTO else V_DROP
        reason[i] = C_FRAGMENT if r == hd.R_FRAGMENT else C_PARSE_BASE + r
        return
    if f[F_FRAG] != FRAG_NONE:
        verdict[i] = V_DROP
        reason[i] = C_FRAGMENT
        return
    proto = f[F_PROTO]
    if proto == IPPROTO_ICMP:
        _handle_icmp(f, i, ct, now, ops, verdict, reason, dest_row, dest, dest_svc,
                     svc_stats, dest_stats, tunnel_src, ip_id)
        return
    # ip_vs_in: the client's side of an entry.
    n = _lookup_in_hashed(ct, np.uint64(f[F_HASH_IN]), proto, f[F_SADDR], f[F_SPORT], f[F_DADDR], f[F_DPORT], now)
    if n >= 0 and proto == IPPROTO_TCP and (f[F_TCP_FLAGS] & TCP_SYN) != 0 and _reuse_resched(ct, n, dest, opts):
        _release(ct, n)  # ip_vs_conn_expire_now: the SYN starts a new connection below
        n = -1
    if n < 0 and proto == IPPROTO_TCP:
        # ip_vs_conn_in_get's second try: an FTP data entry awaiting its client's port
        n = _lookup_no_cport(ct, proto, f[F_SADDR], f[F_DADDR], f[F_DPORT], now)
        if n >= 0:
            _fill_cport(ct, n, f[F_SPORT])
    if n >= 0:
        _handle_existing(f, i, n, ct, now, opts, ops, verdict, reason, dest_row, dest, dest_svc,
                         svc_stats, dest_stats, tunnel_src, ip_id, buf, off, lens)
        return
    # ip_vs_out: a real server's reply on a NAT entry.
    n = _lookup_out_hashed(ct, np.uint64(f[F_HASH_OUT]), proto, f[F_SADDR], f[F_SPORT], f[F_DADDR], f[F_DPORT],
                           now)  # fmt: skip
    if n >= 0:
        e = ct.entries[n]
        _state_step(ct, n, proto, DIR_OUTPUT, f[F_TCP_FLAGS], now)
        d = _dest_row(ct, e)
        dest_row[i] = d
        verdict[i] = V_NAT
        reason[i] = C_NAT_OUT
        full = (e.flags & F_APP_FTP) != 0 and _ftp_out(ct, n, buf[i], np.int64(off[i]), lens, i, f, now)
        _emit(ops, i, rw.OP_NAT_OUT, e.vaddr, e.vport, 0, 0, rw.FLAG_FULL_CSUM if full else 0)
        _count_out(svc_stats, dest_stats, dest_svc, d, f[F_TOTAL])
        return
    _handle_new(f, i, mark, ct, now, now_ms, opts, ops, verdict, reason, dest_row, svc, dest, state,
                dest_svc, svc_keys, svc_keys_idx, fwm_keys, fwm_idx, svc_stats, dest_stats,
                tunnel_src, ip_id)


@njit(cache=True, error_model="numpy", _nrt=False, inline="always")
def _reuse_resched(ct, n, dest, opts):
    """ip_vs_in's conn_reuse_mode test for a SYN that found entry ``n`` (kernel 5.9+,
    no conntrack): reschedule when the old connection is over (is_new_conn_expected),
    or, with expire_nodest_conn, when its server now has weight 0.  Entries under a
    template or controlling others are kept, as the kernel keeps them."""
    mode = opts >> OPT_CONN_REUSE_SHIFT
    e = ct.entries[n]
    if mode == 0 or e.n_control > 0:
        return False
    d = _dest_row(ct, e)
    if (opts & OPT_EXPIRE_NODEST_CONN) and d >= 0 and dest[d, W] == 0:
        return True
    if e.control >= 0:
        return False
    st = e.state
    return st == ctm.S_TIME_WAIT or st == ctm.S_CLOSE or (
        (mode & CONN_REUSE_FIN_WAIT) != 0 and st == ctm.S_FIN_WAIT and (e.flags & F_NOOUTPUT) != 0)


@njit(cache=True, error_model="numpy", _nrt=False)
def _process_kernel(buf, off, lens, marks, n, fields, now, now_ms, opts, sweep_budget, ct,
                    svc, dest, state, dest_svc, svc_keys, svc_keys_idx, fwm_keys, fwm_idx,
                    reasons, svc_stats, dest_stats, ip_id, tunnel_src,
                    ops, verdict, reason, dest_row):  # fmt: skip
    """The whole batch in one dispatch: the bounded sweep, then every packet.  Returns
    how many rewrite ops it emitted.  Both entry points call it: ``process`` from Python
    and ``engine_cfunc.ENGINE`` from the C loop, so it must never raise (error_model
    "numpy": a division by zero gives 0; every index is in range by construction)."""
    _sweep(ct, now, sweep_budget)
    _drain_touched(ct, svc, dest, state, dest_svc)
    # Parse the whole batch first (nothing in it depends on the connection table) and ask
    # for every packet's index slots, then decide: the misses of the batch overlap.
    opening = 0  # packets that may open a connection: a SYN (without ACK), or UDP
    for i in range(n):
        f = fields[i]
        hd._parse_one(buf[i], np.int64(off[i]), np.int64(lens[i]), f)
        if f[F_REASON] == R_OK and f[F_FRAG] == FRAG_NONE and f[F_PROTO] != IPPROTO_ICMP:
            h_in, h_out = _packet_hashes(ct, f[F_PROTO], f[F_SADDR], f[F_SPORT], f[F_DADDR], f[F_DPORT])
            f[F_HASH_IN] = np.int64(h_in)
            f[F_HASH_OUT] = np.int64(h_out)
            _prefetch_keys(ct, h_in, h_out)
            if f[F_PROTO] != IPPROTO_TCP or (f[F_TCP_FLAGS] & (TCP_SYN | TCP_ACK)) == TCP_SYN:
                opening += 1
    _prefetch_free(ct, opening)
    n_ops = 0
    for i in range(n):
        ops[i].kind = rw.OP_NONE
        ops[i].flags = 0
        ops[i].port = 0
        ops[i].id = 0
        ops[i].reserved = 0
        ops[i].addr = 0
        ops[i].addr2 = 0
        dest_row[i] = -1
        verdict[i] = V_DROP
        f = fields[i]
        _handle_packet(f, i, np.int64(marks[i]), ct, now, now_ms, opts, ops, verdict, reason,
                       dest_row, svc, dest, state, dest_svc, svc_keys, svc_keys_idx, fwm_keys,
                       fwm_idx, svc_stats, dest_stats, tunnel_src, ip_id, buf, off, lens)
        reasons[reason[i]] += 1
        if ops[i].kind != rw.OP_NONE:
            n_ops += 1
        # After every packet, so the next decision sees the new counts (as the kernel's).
        _drain_touched(ct, svc, dest, state, dest_svc)
    return n_ops


@njit(cache=True, error_model="numpy", _nrt=False)
def _classify_kernel(buf, off, lens, n, fields, ct, now, verdict):
    """The classify pass (docs/netctl.md): which of a real server's packets belong to a
    connection of ours (V_NAT) and which are its own traffic (V_PASS), by the reply-side
    lookups ``_handle_packet`` and ``_handle_icmp`` make, and nothing else: no state
    step, no counter (a lookup may reap an expired entry, as the engine's would)."""
    for i in range(n):
        f = fields[i]
        hd._parse_one(buf[i], np.int64(off[i]), np.int64(lens[i]), f)
        verdict[i] = V_PASS
        if f[F_REASON] != R_OK or f[F_FRAG] != FRAG_NONE:
            continue  # not ours to judge: the kernel's (conntrack reassembles fragments)
        proto = f[F_PROTO]
        if proto == IPPROTO_ICMP:
            if _icmp_error(f[F_ICMP_TYPE]) and f[F_IN_PROTO] >= 0 and _quoted_out(ct, f, now) >= 0:
                verdict[i] = V_NAT
        elif _lookup_out(ct, proto, f[F_SADDR], f[F_SPORT], f[F_DADDR], f[F_DPORT], now) >= 0:
            verdict[i] = V_NAT


# =========================================================================================
# Python entry point
# =========================================================================================


class _Scratch(threading.local):
    """Per-thread arrays and arguments ``process`` reuses between batches: the parse
    fields and rewrite ops (never handed out), and the argument tuple of the last
    (tables, ct, counters), checked once when they change."""

    def __init__(self) -> None:
        self.key: tuple = ()
        self.rest: tuple = ()
        self.objects: tuple = ()
        self._grow(SCRATCH_ROWS)
        self.batch_arrays: tuple = ()
        self.batch_ptrs: tuple = ()

    def _grow(self, rows: int) -> None:
        self.fields = hd.new_fields(rows)
        self.ops = np.zeros(rows, dtype=rw.OP_DTYPE)
        self.results = np.zeros(rows, dtype=np.uint8)
        self.ops_c = rw.pointer(self.ops, rw.OP_CTYPE)
        self.results_c = rw.pointer(self.results, rw.U8_CTYPE)

    def arrays(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        if n > self.ops.shape[0]:
            self._grow(n)
        return self.fields, self.ops

    def pointers(self, batch: Batch) -> tuple:
        """C pointers to the batch's buf, off and lens; adapters reuse their arrays, so
        they are made once per array set."""
        arrays = (batch.buf, batch.off, batch.lens)
        if len(self.batch_arrays) != 3 or any(a is not b for a, b in zip(arrays, self.batch_arrays, strict=True)):
            self.batch_arrays = arrays
            self.batch_ptrs = (rw.pointer(batch.buf, rw.U8_CTYPE), rw.pointer(batch.off, rw.U32_CTYPE),
                               rw.pointer(batch.lens, rw.U32_CTYPE))  # fmt: skip
        return self.batch_ptrs


_SCRATCH = _Scratch()  # threading.local: each thread sees its own attributes


def _check_state(tables: Tables, ct: ctm.ConnTable, counters: Counters) -> None:
    if (ct.dest is not tables.dest or ct.persist is not tables.persist or ct.drow is not tables.id_row
            or ct.rid is not tables.dest_id):  # fmt: skip
        raise ValueError("the connection table counts on other arrays: engine.attach(ct, tables)")
    if counters.svc.shape[0] != tables.svc.shape[0] or counters.dest.shape[0] != tables.dest.shape[0]:
        raise ValueError("counters are sized for other tables: new_counters(tables)")


def batch_sweep_budget(n: int) -> int:
    """Slots the per-batch sweep visits for a batch of ``n`` (the C loop computes the same
    from SWEEP_PER_PACKET and SWEEP_BASE in struct pl_fwd)."""
    return SWEEP_PER_PACKET * n + SWEEP_BASE


def options(expire_nodest_conn: bool = False, expire_quiescent_template: bool = False,
            conn_reuse_mode: int = CONN_REUSE_MODE_DEFAULT) -> int:
    """The kernel's option bits (OPT_*) for these sysctls."""
    return ((OPT_EXPIRE_NODEST_CONN if expire_nodest_conn else 0)
            | (OPT_EXPIRE_QUIESCENT_TEMPLATE if expire_quiescent_template else 0)
            | (conn_reuse_mode & 3) << OPT_CONN_REUSE_SHIFT)


@njit(cache=True, error_model="numpy", _nrt=False)
def _expire_kernel(ct, now, budget, svc, dest, state, dest_svc):
    removed = _sweep(ct, now, budget)
    _drain_touched(ct, svc, dest, state, dest_svc)
    return removed


def expire(ct: ctm.ConnTable, now: float, budget: int, tables: Tables) -> int:
    """Sweep ``budget`` slots for dead entries with no packet in sight (the control
    thread's clock-driven expiry, under the forwarder's gate), then refresh the
    schedulers over the rows whose counts changed.  Returns the entries removed."""
    return int(_expire_kernel(ct, float(now), int(budget), tables.svc, tables.dest, tables.state, tables.dest_svc))


def process(batch: Batch, now: float, tables: Tables, ct: ctm.ConnTable, counters: Counters, *,
            tunnel_src: int = 0, expire_nodest_conn: bool = False,
            expire_quiescent_template: bool = False,
            conn_reuse_mode: int = CONN_REUSE_MODE_DEFAULT) -> Verdicts:  # fmt: skip
    """Decide, rewrite and count one batch.  ``now``: seconds (float).

    ``ct`` must count on ``tables``' arrays (``attach(ct, tables)``) and ``counters``
    must be sized for ``tables`` (``new_counters``); mismatches are programming errors
    (ValueError).  Packet bytes never raise.
    ``batch.off``/``batch.lens`` are updated in place (the Verdicts hold views of them).
    """
    n = int(batch.n)
    buf = batch.buf
    key = (id(tables), id(ct), id(counters))
    scratch = _SCRATCH
    if scratch.key != key:  # a new (tables, ct, counters): check them once, keep the arguments
        _check_state(tables, ct, counters)
        scratch.key = key
        scratch.rest = (ct, tables.svc, tables.dest, tables.state, tables.dest_svc, tables.svc_keys,
                        tables.svc_keys_idx, tables.fwm_keys, tables.fwm_idx, counters.reasons, counters.svc,
                        counters.dest, counters.ip_id)  # fmt: skip
        scratch.objects = (tables, ct, counters)  # keeps the ids meaningful
    if buf.dtype != np.uint8 or buf.ndim != 2 or not buf.flags.c_contiguous:
        raise ValueError("batch.buf must be a C-contiguous uint8 array of shape (rows, stride)")
    if not 0 <= n <= buf.shape[0]:
        raise ValueError(f"batch.n={n} does not fit {buf.shape[0]} rows")
    for a in (batch.off, batch.lens, batch.marks):
        if a.dtype != np.uint32 or a.ndim != 1 or a.shape[0] < n:
            raise ValueError(f"batch.off, .lens and .marks must be uint32 with at least {n} entries")
    opts = options(expire_nodest_conn, expire_quiescent_template, conn_reuse_mode)
    fields, ops = scratch.arrays(n)
    # The kernel writes every packet's verdict, reason and dest row: no need to clear them.
    verdict = np.empty(n, dtype=np.uint8)
    reason = np.empty(n, dtype=np.int16)
    dest_row = np.empty(n, dtype=np.int64)
    off = batch.off[:n]
    lens = batch.lens[:n]
    args = (buf, off, lens, batch.marks[:n], n, fields, float(now), int(now * 1000), opts)
    rest = scratch.rest + (np.int64(tunnel_src), ops, verdict, reason, dest_row)
    n_ops = _process_kernel(*args, batch_sweep_budget(n), *rest)
    # The arrays were checked above, so the C call goes without apply()'s checks.  Only
    # when it rewrote fewer packets than there were ops did one fail: that packet is
    # dropped under the rewrite's reason.  A batch without ops (pass, drop, DR) skips it.
    results = scratch.results[:n]
    results[:] = rw.RW_OK
    if n_ops:
        buf_c, off_c, lens_c = scratch.pointers(batch)
        done = rw._apply_pointers(buf_c, n, buf.shape[1], off_c, lens_c, scratch.ops_c, scratch.results_c)
    if n_ops and done != n_ops:
        bad = (results != rw.RW_OK) & (ops[:n]["kind"] != rw.OP_NONE)
        if bad.any():
            np.subtract.at(counters.reasons, reason[bad].astype(np.int64), 1)
            new_reason = (C_REWRITE_BASE + results[bad].astype(np.int64))
            np.add.at(counters.reasons, new_reason, 1)
            reason[bad] = new_reason
            verdict[bad] = V_DROP
    return Verdicts(verdict, reason, dest_row, off, lens, results.copy())


def classify(batch: Batch, now: float, ct: ctm.ConnTable) -> np.ndarray:
    """The classify pass from Python (the twin of ``engine_cfunc.CLASSIFY``): per packet,
    True when it is a real server's packet of one of our connections."""
    n = int(batch.n)
    fields, _ops = _SCRATCH.arrays(n)
    verdict = np.empty(n, dtype=np.uint8)
    _classify_kernel(batch.buf, batch.off[:n], batch.lens[:n], n, fields, ct, float(now), verdict)
    return verdict == V_NAT
