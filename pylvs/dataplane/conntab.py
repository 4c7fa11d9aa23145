"""The connection table: IPVS connection entries on flat, fixed-capacity arrays.

This follows the kernel's connection table (reference section 7, ``ip_vs_conn.c``,
``ip_vs_proto_tcp.c``, ``ip_vs_core.c``) with one deliberate change of shape: instead of
hash chains of allocated structures it is an entry pool (a numpy record array) plus two
open-addressing indexes of entry numbers, so numba code can use it and it never grows.

Rules of this module:

* An entry is keyed as IPVS keys it.  The *in* index holds every entry under
  (protocol, client address, client port, virtual address, virtual port, template bit);
  persistence templates use client port 0 and the masked client address, and
  firewall-mark templates use protocol 0 (IPPROTO_IP) and the mark as the virtual
  address (reference 7.6).  The *out* index holds NAT entries only, under (protocol,
  real address, real port, client address, client port): the key of a real server's
  reply (reference 7.1).
* Every time is in seconds as float64, and ``now`` always comes from the caller:
  nothing here reads a clock.
* An entry whose ``expires`` has passed is dead even before the sweep reaches it: a
  lookup that finds it removes it (a template that still controls connections is
  postponed by 60 s instead, as the kernel does).  ``expire_step`` removes dead entries a
  bounded number of slots at a time.
* Per real server ("dest") the active, inactive and persistent connection counts are
  kept exactly as the kernel keeps them (reference 7.5), in the schedulers' own arrays:
  ``dest`` is the ``int64[rows, NFIELDS]`` array of ``pylvs.sched`` (its ``ACT`` and
  ``INACT`` columns, with the OVERLOAD rule of ``_bind_kernel``/``_unbind_kernel``) and
  ``persist`` holds PersistConn.  The engine points a table at the current generation's
  arrays with ``attach``.  Every counter change appends its row to ``touched`` so the
  engine can refresh the schedulers that keep a tree over the counters (lc, wlc, ...).
* A full table is a counted condition: a new entry first tries to reclaim dead entries
  (a bounded scan), then is refused with ``C_FULL_DROPS`` counted.  Nothing raises on
  the packet path.
"""

from __future__ import annotations

import collections
import secrets
from typing import NamedTuple

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from pylvs.sched._common import (
    ACT,
    F_OVERLOAD,
    FLAGS,
    INACT,
    _bind_kernel,
    _set_active_kernel,
    _sip13_finish,
    _sip_init,
    _sipround,
    _unbind_kernel,
    new_dests,
)

# --- Connection flags: uapi values, reference 7.2 (include/uapi/linux/ip_vs.h) -------
F_FWD_MASK = 0x0007
FWD_MASQ = 0  # NAT
FWD_LOCALNODE = 1
FWD_TUNNEL = 2
FWD_DROUTE = 3
F_SYNC = 0x0020
F_NOOUTPUT = 0x0080  # DR/TUN: no reply traffic is seen, so INPUT_ONLY transitions apply
F_INACTIVE = 0x0100
F_OUT_SEQ = 0x0200  # the FTP helper resized a server -> client segment: seq/ack adjusted
F_IN_SEQ = 0x0400  # ... a client -> server one (ip_vs_ftp never does; kept for sync)
F_SEQ_MASK = F_OUT_SEQ | F_IN_SEQ
F_NO_CPORT = 0x0800  # a passive FTP data entry: the client's port comes with its first packet
F_TEMPLATE = 0x1000
F_ONE_PACKET = 0x2000
# pylvs's own bit (unused by the uapi, and outside IP_VS_CONN_F_BACKUP_MASK, so never
# synced): an entry counted before a quiesce_server reset of its server's ActiveConn /
# InActConn (reset_counts); it no longer moves those counters.
F_UNCOUNTED = 0x8000
# pylvs's own bit as well: the FTP helper reads this connection (pylvs.dataplane.ftp).  The
# kernel binds its helper to the connection (cp->app) by port and method; a backup here
# binds it the same way when it creates the entry from a sync message.
F_APP_FTP = 0x4000

IPPROTO_IP = 0  # firewall-mark templates (reference 7.6)
IPPROTO_TCP = 6
IPPROTO_UDP = 17

# --- States and default timeouts, reference 7.3 ------------------------------------
TCP_STATE_NAMES = (
    "NONE", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT", "TIME_WAIT",
    "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "SYNACK",
)  # fmt: skip
(S_NONE, S_ESTABLISHED, S_SYN_SENT, S_SYN_RECV, S_FIN_WAIT, S_TIME_WAIT,
 S_CLOSE, S_CLOSE_WAIT, S_LAST_ACK, S_LISTEN, S_SYNACK) = range(11)  # fmt: skip
S_UDP = 11  # UDP's single state, given its own slot in the timeout table
STATE_NAMES = TCP_STATE_NAMES + ("UDP",)

# Seconds per state: the kernel's tcp_timeouts[] and udp_timeouts[] (reference 7.3).
DEFAULT_TIMEOUTS = {
    "NONE": 2, "ESTABLISHED": 900, "SYN_SENT": 120, "SYN_RECV": 60, "FIN_WAIT": 120,
    "TIME_WAIT": 120, "CLOSE": 10, "CLOSE_WAIT": 60, "LAST_ACK": 30, "LISTEN": 120,
    "SYNACK": 120, "UDP": 300,
}  # fmt: skip
TEMPLATE_POSTPONE = 60.0  # a template that fires while it controls entries waits 60 s more

# --- TCP transitions, reference 7.4 (ip_vs_proto_tcp.c tcp_states[]) -----------------
# Next state for each current state, columns in the order of TCP_STATE_NAMES.
# INPUT is client -> server, OUTPUT server -> client (seen by NAT only), INPUT_ONLY is
# used while an entry has F_NOOUTPUT (DR and tunnelling).  A packet with none of
# RST/SYN/FIN/ACK moves the entry to CLOSE.  Event priority: RST, SYN, FIN, ACK.
_ABBREV = ("NO", "ES", "SS", "SR", "FW", "TW", "CL", "CW", "LA", "LI", "SA")
TCP_TRANSITIONS = {
    "INPUT": {
        "syn": "SR ES ES SR SR SR SR SR SR SR SR",
        "fin": "CL CW SS TW TW TW CL CW LA LI TW",
        "ack": "ES ES SS ES FW TW CL CW CL LI ES",
        "rst": "CL CL CL SR CL CL CL CL LA LI SR",
    },
    "OUTPUT": {
        "syn": "SS ES SS SR SS SS SS SS SS LI SR",
        "fin": "TW FW SS TW FW TW CL TW LA LI TW",
        "ack": "ES ES SS ES FW TW CL CW LA ES ES",
        "rst": "CL CL SS CL CL TW CL CL CL CL CL",
    },
    "INPUT_ONLY": {
        "syn": "SR ES ES SR SR SR SR SR SR SR SR",
        "fin": "CL FW SS TW FW TW CL CW LA LI TW",
        "ack": "ES ES SS ES FW TW CL CW CL LI ES",
        "rst": "CL CL CL SR CL CL CL CL LA LI CL",
    },
}
# secure_tcp's stricter table (ip_vs_proto_tcp.c tcp_states_dos[], the vintage of the
# table above): through NAT the client's ACKs move nothing; the server's SYN+ACK makes the
# entry SYNACK and only the server's next ACK makes it ESTABLISHED, so a spoofed handshake
# never counts as an active connection.
TCP_TRANSITIONS_DOS = {
    "INPUT": {
        "syn": "SR ES ES SR SR SR SR SR SR SR SA",
        "fin": "CL CW SS TW TW TW CL CW LA LI SA",
        "ack": "ES ES SS SR FW TW CL CW CL LI SA",
        "rst": "CL CL CL SR CL CL CL CL LA LI CL",
    },
    "OUTPUT": {
        "syn": "SS ES SS SA SS SS SS SS SS LI SA",
        "fin": "TW FW SS TW FW TW CL TW LA LI TW",
        "ack": "ES ES SS ES FW TW CL CW LA ES ES",
        "rst": "CL CL SS CL CL TW CL CL CL CL CL",
    },
    "INPUT_ONLY": {
        "syn": "SA ES ES SR SA SA SA SA SA SA SA",
        "fin": "CL FW SS TW FW TW CL CW LA LI TW",
        "ack": "ES ES SS ES FW TW CL CW CL LI ES",
        "rst": "CL CL CL SR CL CL CL CL LA LI CL",
    },
}
# While secure_tcp is engaged the half-open states (SYN_RECV, SYNACK) end after this many
# seconds: the SYN_RECV value of the 2.4 kernel's DoS timeout table
# (vs_timeout_table_dos).  Later kernels kept only the state table, so a flood's entries
# stayed 60-120 s; pylvs keeps the short timeout, which is what lets the table recover.
SECURE_HALF_OPEN_TIMEOUT = 10.0
DIR_INPUT, DIR_OUTPUT, DIR_INPUT_ONLY = 0, 1, 2
EV_SYN, EV_FIN, EV_ACK, EV_RST = 0, 1, 2, 3
TCP_FIN, TCP_SYN, TCP_RST, TCP_ACK = 0x01, 0x02, 0x04, 0x10  # RFC 793 flag bits


def _transition_array(transitions: dict) -> np.ndarray:
    table = np.zeros((3, 4, len(TCP_STATE_NAMES)), dtype=np.int8)
    for d, direction in enumerate(("INPUT", "OUTPUT", "INPUT_ONLY")):
        for e, event in enumerate(("syn", "fin", "ack", "rst")):
            row = transitions[direction][event].split()
            table[d, e, :] = [_ABBREV.index(cell) for cell in row]
    return table


TRANSITIONS = _transition_array(TCP_TRANSITIONS)
TRANSITIONS_DOS = _transition_array(TCP_TRANSITIONS_DOS)

# --- Storage -----------------------------------------------------------------------
ENTRY_DTYPE = np.dtype(
    [
        ("caddr", "<u4"), ("vaddr", "<u4"), ("daddr", "<u4"),
        ("cport", "<u2"), ("vport", "<u2"), ("dport", "<u2"), ("flags", "<u2"),
        ("proto", "u1"), ("state", "u1"), ("live", "u1"),
        ("sync_state", "u1"),  # state last sent to the backups (SYNC_NEVER: not yet); templates: unused
        ("dest_id", "<i4"),    # the real server's identity (drow: its row now), -1 when unbound
        ("control", "<i4"),    # entry number of the controlling template, -1 if none
        ("n_control", "<i4"),  # entries this template controls
        ("in_pkts", "<u4"),
        ("timeout", "<f4"),    # templates: the persistence timeout; others: their timer's last setting
        ("sync_pkts", "<u4"),  # in_pkts when last sent; templates: the collect call that last sent it
        ("expires", "<f8"),
        # The FTP helper's sequence adjustment (ip_vs_app.c struct ip_vs_seq, out_seq: the
        # server's side; F_OUT_SEQ says it is in use) and what the client asked (ftp.APP_*).
        ("seq_init", "<u4"), ("seq_delta", "<i4"), ("seq_prev", "<i4"), ("app", "u1"),
    ],
    align=True,
)  # fmt: skip
INDEX_LOAD = 2  # index slots per entry: linear probing stays short below 50 % load
EMPTY = 0  # index slots hold entry number + 1
SYNC_NEVER = 0xFF  # sync_state of an entry never sent to the backups (no state has this number)
EVICT_SCAN = 64  # slots a full table scans for a dead entry before refusing a new one

TOUCHED_CAP = 4096  # rows remembered between two drains; past it, "refresh every row"

# Counter slots (``ConnTable.counters``), one named reason each.  ``drop_entry``:
# entries the drop_entry defence removed (the periodic scan or a full table's eviction).
C_CREATED, C_EXPIRED, C_FULL_DROPS, C_EVICTED, C_DROP_ENTRY = range(5)
COUNTER_NAMES = ("created", "expired", "full_drops", "evicted", "drop_entry")
# Meta slots: entries in use, free-list head, sweep cursor, rows in ``touched``, the
# sync collector's cursor and call serial (collect_sync); then the defences' state, set
# once a second by ``defense.update`` (the kernel's update_defense_level): drop_entry
# engaged, drop_packet's rate and countdown (ip_vs_todrop), secure_tcp engaged; entries
# marked F_UNCOUNTED (reset_counts); then todrop_entry's countdown per in_pkts 1..8 (the
# kernel's dropentry_counters).
(M_COUNT, M_FREE, M_CURSOR, M_TOUCHED, M_SYNC_CURSOR, M_SYNC_CALL,
 M_DROPENTRY, M_DROP_RATE, M_DROP_COUNTER, M_SECURE, M_UNCOUNTED, M_NO_CPORT, M_TODROP) = range(13)  # fmt: skip
TODROP_PKTS = 8  # todrop_entry: only entries with 1..8 incoming packets are candidates
N_META = M_TODROP + TODROP_PKTS
TODROP_IDLE = 60.0  # todrop_entry: an ESTABLISHED entry is a candidate after 60 s idle


class ConnTable(NamedTuple):
    """All state of one connection table, as arrays numba functions take directly."""

    entries: np.ndarray  # ENTRY_DTYPE[capacity]
    next_free: np.ndarray  # int32[capacity], free-list links
    in_index: np.ndarray  # int32[capacity * INDEX_LOAD]
    out_index: np.ndarray  # int32[capacity * INDEX_LOAD]
    meta: np.ndarray  # int64[N_META]: the M_* slots
    counters: np.ndarray  # int64[len(COUNTER_NAMES)]
    dest: np.ndarray  # int64[rows, sched NFIELDS]: ActiveConn/InActConn in ACT/INACT
    persist: np.ndarray  # int64[rows]: PersistConn (templates)
    touched: np.ndarray  # int64[TOUCHED_CAP]: rows whose counters changed since the drain
    timeouts: np.ndarray  # float64[len(STATE_NAMES)], seconds
    key: np.ndarray  # uint64[2]: the SipHash key of both indexes, random per table (new_key)
    drow: np.ndarray  # int64[ids]: a real server's identity -> its row in ``dest`` now (-1: gone)
    rid: np.ndarray  # int64[rows]: a row -> the identity of the server in it (-1: a free row)


def new_key() -> np.ndarray:
    """A random index key: 128 bits from the OS, as the kernel seeds its connection hash
    at boot (ip_vs_conn_init: get_random_bytes), so no sender can choose tuples that share
    a probe run."""
    return np.frombuffer(secrets.token_bytes(16), dtype=np.uint64).copy()


def create(capacity: int, n_dests: int, timeouts: dict[str, float] | None = None,
           key: np.ndarray | None = None) -> ConnTable:  # fmt: skip
    """A new, empty table for ``capacity`` entries (a power of two), counting on a fresh
    dest array of ``n_dests`` rows (``attach`` points it at a Tables' arrays instead).
    ``key``: the index key (tests fix it; by default a random one)."""
    if capacity < 2 or capacity & (capacity - 1):
        raise ValueError(f"capacity must be a power of two >= 2, got {capacity}")
    if n_dests < 1:
        raise ValueError(f"n_dests must be at least 1, got {n_dests}")
    next_free = np.arange(1, capacity + 1, dtype=np.int32)
    next_free[-1] = -1
    table = ConnTable(
        entries=np.zeros(capacity, dtype=ENTRY_DTYPE),
        next_free=next_free,
        in_index=np.zeros(capacity * INDEX_LOAD, dtype=np.int32),
        out_index=np.zeros(capacity * INDEX_LOAD, dtype=np.int32),
        meta=np.zeros(N_META, dtype=np.int64),
        counters=np.zeros(len(COUNTER_NAMES), dtype=np.int64),
        dest=new_dests(n_dests),
        persist=np.zeros(n_dests, dtype=np.int64),
        touched=np.zeros(TOUCHED_CAP, dtype=np.int64),
        timeouts=np.array([DEFAULT_TIMEOUTS[name] for name in STATE_NAMES], dtype=np.float64),
        key=new_key() if key is None else np.array(key, dtype=np.uint64).reshape(2),
        drow=np.arange(n_dests, dtype=np.int64),
        rid=np.arange(n_dests, dtype=np.int64),
    )
    set_timeouts(table, **(timeouts or {}))
    return table


def attach(table: ConnTable, dest: np.ndarray, persist: np.ndarray, drow: np.ndarray | None = None,
           rid: np.ndarray | None = None) -> ConnTable:  # fmt: skip
    """The same table counting on another generation's ``dest`` and ``persist`` arrays,
    with its identity maps (``drow``: identity -> row, ``rid``: row -> identity; by
    default every row is its own identity).

    Entries keep their real server's identity, not its row, so a new generation never
    has to touch them: the caller (the engine, at a swap) has carried the counts over;
    this checks shapes and swaps the references.
    """
    if dest.dtype != np.int64 or dest.ndim != 2 or dest.shape[1] != table.dest.shape[1]:
        raise ValueError(f"dest must be int64 of shape (rows, {table.dest.shape[1]})")
    if persist.dtype != np.int64 or persist.shape != (dest.shape[0],):
        raise ValueError(f"persist must be int64 of shape ({dest.shape[0]},)")
    rows = dest.shape[0]
    drow = np.arange(rows, dtype=np.int64) if drow is None else drow
    rid = np.arange(rows, dtype=np.int64) if rid is None else rid
    if drow.dtype != np.int64 or rid.dtype != np.int64 or rid.shape != (rows,) or drow.ndim != 1:
        raise ValueError(f"drow and rid must be int64, rid of shape ({rows},)")
    return table._replace(dest=dest, persist=persist, drow=drow, rid=rid)


def set_timeouts(table: ConnTable, **seconds: float) -> None:
    """Change state timeouts by state name, e.g. ``ESTABLISHED=600`` (``ipvsadm --set``)."""
    for name, value in seconds.items():
        if name not in STATE_NAMES:
            raise ValueError(f"unknown state {name!r}; states are {', '.join(STATE_NAMES)}")
        if value <= 0:
            raise ValueError(f"timeout for {name} must be positive, got {value}")
        table.timeouts[STATE_NAMES.index(name)] = value


def memory_per_entry(table: ConnTable) -> float:
    """Bytes of table storage per entry of capacity (entries, free list and both indexes)."""
    capacity = len(table.entries)
    total = table.entries.nbytes + table.next_free.nbytes
    total += table.in_index.nbytes + table.out_index.nbytes
    return total / capacity


# --- Hashing -----------------------------------------------------------------------


@njit(cache=True, error_model="numpy", inline="always")
def _siphash13(key, m0, m1) -> np.uint64:
    """SipHash-1-3 of the 16-byte message (m0, m1) (little-endian words) under ``key``:
    the kernel's hsiphash on 64-bit machines, which it keys its own tables with.  The
    unkeyed murmur finaliser this replaces is invertible: anyone could compute tuples
    that fill one probe run (tests/unit/test_conntab_hash.py builds 50,000 of them)."""
    v0, v1, v2, v3 = _sip_init(key[0], key[1])
    v3 ^= m0
    v0, v1, v2, v3 = _sipround(v0, v1, v2, v3)
    v0 ^= m0
    v3 ^= m1
    v0, v1, v2, v3 = _sipround(v0, v1, v2, v3)
    v0 ^= m1
    return _sip13_finish(v0, v1, v2, v3, np.uint64(16) << np.uint64(56))  # 16 bytes, no tail


@njit(cache=True, error_model="numpy", inline="always")
def _hash5(key, proto, addr1, port1, addr2, port2, extra) -> np.uint64:
    a = (np.uint64(addr1) << np.uint64(32)) | np.uint64(addr2)
    b = (
        (np.uint64(port1) << np.uint64(32))
        | (np.uint64(port2) << np.uint64(16))
        | (np.uint64(proto) << np.uint64(8))
        | np.uint64(extra)
    )
    return _siphash13(key, a, b)


@njit(cache=True, error_model="numpy", inline="always")
def _in_hash(key, e) -> np.uint64:
    template = np.uint64(1) if e.flags & F_TEMPLATE else np.uint64(0)
    return _hash5(key, e.proto, e.caddr, e.cport, e.vaddr, e.vport, template)


@njit(cache=True, error_model="numpy", inline="always")
def _out_hash(key, e) -> np.uint64:
    return _hash5(key, e.proto, e.daddr, e.dport, e.caddr, e.cport, np.uint64(2))


@njit(cache=True, error_model="numpy", inline="always")
def _out_indexed(e) -> bool:
    return (e.flags & F_TEMPLATE) == 0 and (e.flags & F_FWD_MASK) == FWD_MASQ


@intrinsic
def _prefetch(typingctx, arr, idx):
    """``llvm.prefetch`` of ``arr[idx]`` (read, high locality): a hint, never a fault."""
    if not isinstance(arr, types.Array) or not isinstance(idx, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        aryty = sig.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]], wraparound=False)
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.none(arr, idx), codegen


@njit(cache=True, error_model="numpy", inline="always")
def _prefetch_keys(t, h_in, h_out):
    """Ask for the index slots a packet's lookups will read first (its in-key, and its
    out-key as a real server's reply: ``_packet_hashes``), so a batch's cache misses
    overlap instead of coming one after the other."""
    _prefetch(t.in_index, np.int64(h_in & np.uint64(len(t.in_index) - 1)))
    _prefetch(t.out_index, np.int64(h_out & np.uint64(len(t.out_index) - 1)))


@njit(cache=True, error_model="numpy", inline="always")
def _prefetch_free(t, k):
    """Ask for the next ``k`` free entries (the ones the batch's new connections will
    fill, in free-list order), so their first writes do not each wait for memory."""
    n = t.meta[M_FREE]
    while k > 0 and n >= 0:
        _prefetch(t.entries, n)
        n = t.next_free[n]
        k -= 1


# --- Index maintenance (linear probing, backward-shift deletion) ---------------------


@njit(cache=True, error_model="numpy")
def _index_insert(index, h, entry):
    mask = len(index) - 1
    i = np.int64(h & np.uint64(mask))
    while index[i] != EMPTY:
        i = (i + 1) & mask
    index[i] = entry + 1


@njit(cache=True, error_model="numpy")
def _index_delete(key, entries, index, h, entry, out_side):
    """Remove ``entry`` from ``index``, shifting later members of its probe run back."""
    mask = len(index) - 1
    i = np.int64(h & np.uint64(mask))
    while index[i] != entry + 1:
        if index[i] == EMPTY:
            return  # not present: nothing to do (invariant says this cannot happen)
        i = (i + 1) & mask
    j = i
    while True:
        j = (j + 1) & mask
        if index[j] == EMPTY:
            break
        other = entries[index[j] - 1]
        oh = _out_hash(key, other) if out_side else _in_hash(key, other)
        home = np.int64(oh & np.uint64(mask))
        # Leave the member where it is when its home lies cyclically in (i, j].
        if i <= j:
            stays = i < home <= j
        else:
            stays = home > i or home <= j
        if stays:
            continue
        index[i] = index[j]
        i = j
    index[i] = EMPTY


# --- Counting on the real servers --------------------------------------------------------


@njit(cache=True, error_model="numpy", inline="always")
def _touch_row(t, d):
    k = t.meta[M_TOUCHED]
    if k < TOUCHED_CAP:
        t.touched[k] = d
    t.meta[M_TOUCHED] = k + 1  # past TOUCHED_CAP: the drainer refreshes every row


@njit(cache=True, error_model="numpy", inline="always")
def _dest_row(t, e):
    """The row of an entry's real server in the current generation, -1 when it has none."""
    i = np.int64(e.dest_id)
    if i < 0 or i >= len(t.drow):
        return np.int64(-1)
    return t.drow[i]


# --- Entry life cycle ------------------------------------------------------------------


@njit(cache=True, error_model="numpy")
def _release(t, n):
    """Unlink entry ``n`` from both indexes, its counters and its template; free it."""
    e = t.entries[n]
    _index_delete(t.key, t.entries, t.in_index, _in_hash(t.key, e), n, False)
    if _out_indexed(e):
        _index_delete(t.key, t.entries, t.out_index, _out_hash(t.key, e), n, True)
    d = _dest_row(t, e)
    if d >= 0:
        if e.flags & F_TEMPLATE:
            t.persist[d] -= 1
        elif not (e.flags & F_UNCOUNTED):
            _unbind_kernel(t.dest, d, (e.flags & F_INACTIVE) == 0)
        _touch_row(t, d)
    if e.flags & F_UNCOUNTED:
        t.meta[M_UNCOUNTED] -= 1
    if e.flags & F_NO_CPORT:
        t.meta[M_NO_CPORT] -= 1
    if e.control >= 0:
        t.entries[e.control].n_control -= 1
    e.live = 0
    e.control = -1
    e.n_control = 0
    t.next_free[n] = t.meta[M_FREE]
    t.meta[M_FREE] = n
    t.meta[M_COUNT] -= 1


@njit(cache=True, error_model="numpy")
def _reap(t, n, now):
    """Handle a dead entry found at ``n``: True when it was removed.

    A template that still controls entries is postponed instead (kernel: the timer
    fires, the template is busy, it is re-armed for 60 s).
    """
    e = t.entries[n]
    if e.n_control > 0:
        e.expires = now + TEMPLATE_POSTPONE
        return False
    _release(t, n)
    t.counters[C_EXPIRED] += 1
    return True


@njit(cache=True, error_model="numpy")
def _sweep(t, now, budget):
    """Visit ``budget`` pool slots from the cursor, reaping dead entries; returns the count removed."""
    capacity = len(t.entries)
    removed = 0
    cursor = t.meta[M_CURSOR]
    for _ in range(min(budget, capacity)):
        e = t.entries[cursor]
        if e.live and e.expires <= now:
            if _reap(t, cursor, now):
                removed += 1
        cursor += 1
        if cursor == capacity:
            cursor = 0
    t.meta[M_CURSOR] = cursor
    return removed


# --- The drop_entry defence (ip_vs_conn.c ip_vs_random_dropentry, todrop_entry) -----------


@njit(cache=True, error_model="numpy", inline="always")
def _countdown(meta, slot, every):
    """True once in ``every`` calls: the kernel's drop countdowns (ip_vs_todrop,
    todrop_entry) count down a counter and reload it when it runs out."""
    meta[slot] -= 1
    if meta[slot] > 0:
        return False
    meta[slot] = every
    return True


@njit(cache=True, error_model="numpy")
def _todrop_entry(t, e, now):
    """todrop_entry: an entry idle for TODROP_IDLE seconds with 1..8 incoming packets is
    dropped every k-th time it is considered (k = its in_pkts): the fewer packets, the
    sooner it goes."""
    if now - (e.expires - e.timeout) < TODROP_IDLE:  # the kernel: cp->timeout, as last set
        return False
    k = np.int64(e.in_pkts)
    if k < 1 or k > TODROP_PKTS:
        return False
    return _countdown(t.meta, M_TODROP + k - 1, k)


@njit(cache=True, error_model="numpy", inline="always")
def _half_open(e):
    """A TCP connection that never completed its handshake (what a SYN flood leaves)."""
    return (e.flags & F_TEMPLATE) == 0 and e.proto == IPPROTO_TCP and (
        e.state == S_SYN_RECV or e.state == S_SYNACK)


@njit(cache=True, error_model="numpy")
def _dropentry_victim(t, n, now):
    """ip_vs_random_dropentry's choice for entry ``n``: never a template or an entry that
    controls others; a TCP entry in SYN_RECV or SYNACK always, an ESTABLISHED one (and
    any UDP one) by todrop_entry; nothing else."""
    e = t.entries[n]
    if e.live == 0 or e.n_control > 0 or (e.flags & F_TEMPLATE) != 0:
        return False
    if _half_open(e):
        return True
    if e.proto == IPPROTO_TCP and e.state != S_ESTABLISHED:
        return False
    return _todrop_entry(t, e, now)


@njit(cache=True, error_model="numpy")
def _random_dropentry(t, now, start):
    """The once-a-second scan while drop_entry is engaged: 1/32 of the pool from
    ``start`` (the caller's random slot), dropping what ``_dropentry_victim`` picks.
    Returns the entries dropped."""
    capacity = len(t.entries)
    dropped = 0
    for k in range(max(capacity >> 5, 1)):
        n = (start + k) % capacity
        if _dropentry_victim(t, n, now):
            _release(t, n)
            t.counters[C_DROP_ENTRY] += 1
            dropped += 1
    return dropped


@njit(cache=True, error_model="numpy")
def _evict_half_open(t):
    """A full table with drop_entry engaged makes room at once: the first half-open entry
    among the next EVICT_SCAN slots from the sweep cursor goes (pylvs's addition: the
    kernel's table has no fixed size, so it only has the periodic scan)."""
    capacity = len(t.entries)
    cursor = t.meta[M_CURSOR]
    for _ in range(min(EVICT_SCAN, capacity)):
        n = cursor
        cursor += 1
        if cursor == capacity:
            cursor = 0
        e = t.entries[n]
        if e.live and e.n_control == 0 and _half_open(e):
            t.meta[M_CURSOR] = cursor
            _release(t, n)
            t.counters[C_DROP_ENTRY] += 1
            return True
    t.meta[M_CURSOR] = cursor
    return False


@njit(cache=True, error_model="numpy")
def _new(t, proto, caddr, cport, vaddr, vport, daddr, dport, flags, dest, control, now, timeout):
    """Add an entry and return its number, or -1 when the table is full (counted)."""
    h_in = _hash5(t.key, proto, caddr, cport, vaddr, vport, np.uint64(1) if flags & F_TEMPLATE else np.uint64(0))
    return _new_hashed(t, h_in, proto, caddr, cport, vaddr, vport, daddr, dport, flags, dest, control, now, timeout)


@njit(cache=True, error_model="numpy")
def _new_hashed(t, h_in, proto, caddr, cport, vaddr, vport, daddr, dport, flags, dest, control, now, timeout):
    """``_new`` with the in-key's hash ``h_in`` already known.  The reply key's slot is
    asked for first, so its likely cache miss overlaps the entry's writes."""
    out_h = _hash5(t.key, proto, daddr, dport, caddr, cport, np.uint64(2))
    _prefetch(t.out_index, np.int64(out_h & np.uint64(len(t.out_index) - 1)))
    if t.meta[M_FREE] < 0:
        if _sweep(t, now, EVICT_SCAN) > 0:
            t.counters[C_EVICTED] += 1
        elif t.meta[M_DROPENTRY] == 0 or not _evict_half_open(t):
            t.counters[C_FULL_DROPS] += 1
            return -1
    n = t.meta[M_FREE]
    t.meta[M_FREE] = t.next_free[n]
    t.meta[M_COUNT] += 1
    e = t.entries[n]
    e.proto = proto
    e.caddr = caddr
    e.cport = cport
    e.vaddr = vaddr
    e.vport = vport
    e.daddr = daddr
    e.dport = dport
    e.dest_id = t.rid[dest] if dest >= 0 else -1
    e.control = control
    e.n_control = 0
    e.in_pkts = 0
    e.sync_state = SYNC_NEVER
    e.sync_pkts = 0
    e.seq_init = 0
    e.seq_delta = 0
    e.seq_prev = 0
    e.app = 0
    if flags & F_NO_CPORT:
        t.meta[M_NO_CPORT] += 1
    # Templates show NONE whatever their protocol (reference 9.4, ipvsadm -L -c).
    e.state = S_UDP if proto == IPPROTO_UDP and not (flags & F_TEMPLATE) else S_NONE
    e.live = 1
    e.timeout = timeout
    if flags & F_TEMPLATE:
        e.flags = flags
        e.expires = now + timeout
        if dest >= 0:
            t.persist[dest] += 1
            _touch_row(t, dest)
    else:
        # A new connection is bound inactive (reference 7.5); the first state
        # transition of the packet that made it sets the real timeout.
        e.flags = flags | F_INACTIVE
        e.timeout = t.timeouts[e.state]
        e.expires = now + e.timeout
        if dest >= 0:
            _bind_kernel(t.dest, dest)
            _touch_row(t, dest)
    if control >= 0:
        t.entries[control].n_control += 1
    _index_insert(t.in_index, h_in, n)
    if _out_indexed(e):
        _index_insert(t.out_index, out_h, n)
    t.counters[C_CREATED] += 1
    return n


@njit(cache=True, error_model="numpy", inline="always")
def _lookup(t, index, out_side, proto, addr1, port1, addr2, port2, template, now):
    """Find a live entry by its in-key (or out-key when ``out_side``); -1 when absent."""
    h = _hash5(t.key, proto, addr1, port1, addr2, port2, np.uint64(2) if out_side else np.uint64(template))
    return _lookup_hashed(t, index, out_side, h, proto, addr1, port1, addr2, port2, template, now)


@njit(cache=True, error_model="numpy", inline="always")
def _lookup_hashed(t, index, out_side, h, proto, addr1, port1, addr2, port2, template, now):
    """``_lookup`` with the key's hash ``h`` already known (the engine hashes each packet
    once: SipHash is most of a lookup's arithmetic)."""
    mask = len(index) - 1
    i = np.int64(h & np.uint64(mask))
    while index[i] != EMPTY:
        n = index[i] - 1
        e = t.entries[n]
        if out_side:
            match = (
                e.proto == proto and e.daddr == addr1 and e.dport == port1
                and e.caddr == addr2 and e.cport == port2
            )  # fmt: skip
        else:
            is_template = (e.flags & F_TEMPLATE) != 0
            match = (
                e.proto == proto and e.caddr == addr1 and e.cport == port1
                and e.vaddr == addr2 and e.vport == port2 and is_template == (template == 1)
            )  # fmt: skip
        if match:
            if e.expires <= now and _reap(t, n, now):
                # Backward shift moved the next member of the run into slot i: look again.
                # (Reply keys can repeat, so a live twin may follow the dead entry.)
                continue
            return n
        i = (i + 1) & mask
    return -1


@njit(cache=True, error_model="numpy", inline="always")
def _lookup_in(t, proto, caddr, cport, vaddr, vport, now):
    return _lookup(t, t.in_index, False, proto, caddr, cport, vaddr, vport, 0, now)


@njit(cache=True, error_model="numpy", inline="always")
def _lookup_template(t, proto, snet, vaddr, vport, now):
    return _lookup(t, t.in_index, False, proto, snet, 0, vaddr, vport, 1, now)


@njit(cache=True, error_model="numpy", inline="always")
def _lookup_out(t, proto, daddr, dport, caddr, cport, now):
    return _lookup(t, t.out_index, True, proto, daddr, dport, caddr, cport, 0, now)


@njit(cache=True, error_model="numpy", inline="always")
def _packet_hashes(t, proto, saddr, sport, daddr, dport):
    """A packet's key hashed as its in-key and as a real server's reply (out-key), in
    that order: what ``_lookup_in_hashed`` / ``_lookup_out_hashed`` / ``_new_hashed`` take."""
    return (_hash5(t.key, proto, saddr, sport, daddr, dport, np.uint64(0)),
            _hash5(t.key, proto, saddr, sport, daddr, dport, np.uint64(2)))


@njit(cache=True, error_model="numpy", inline="always")
def _lookup_in_hashed(t, h, proto, caddr, cport, vaddr, vport, now):
    return _lookup_hashed(t, t.in_index, False, h, proto, caddr, cport, vaddr, vport, 0, now)


@njit(cache=True, error_model="numpy", inline="always")
def _lookup_out_hashed(t, h, proto, daddr, dport, caddr, cport, now):
    return _lookup_hashed(t, t.out_index, True, h, proto, daddr, dport, caddr, cport, 0, now)


@njit(cache=True, error_model="numpy", inline="always")
def _tcp_event(tcp_flags):
    if tcp_flags & TCP_RST:
        return EV_RST
    if tcp_flags & TCP_SYN:
        return EV_SYN
    if tcp_flags & TCP_FIN:
        return EV_FIN
    if tcp_flags & TCP_ACK:
        return EV_ACK
    return -1


@njit(cache=True, error_model="numpy", inline="always")
def _tcp_transition(t, n, direction, tcp_flags, now):
    """Run the TCP state machine for one packet of entry ``n`` (kernel set_tcp_state)."""
    e = t.entries[n]
    table_dir = direction
    if e.flags & F_NOOUTPUT:
        if direction == DIR_OUTPUT:
            e.flags &= ~F_NOOUTPUT  # replies seen after all: use the full tables
        else:
            table_dir = DIR_INPUT_ONLY
    event = _tcp_event(tcp_flags)
    secure = t.meta[M_SECURE] != 0
    if event < 0:
        new_state = S_CLOSE
    elif secure:
        new_state = TRANSITIONS_DOS[table_dir, event, e.state]
    else:
        new_state = TRANSITIONS[table_dir, event, e.state]
    d = _dest_row(t, e)
    if new_state != e.state and d >= 0:
        counted = (e.flags & F_UNCOUNTED) == 0
        if not (e.flags & F_INACTIVE) and new_state != S_ESTABLISHED:
            if counted:
                _set_active_kernel(t.dest, d, False)
            e.flags |= F_INACTIVE
            _touch_row(t, d)
        elif (e.flags & F_INACTIVE) and new_state == S_ESTABLISHED:
            if counted:
                _set_active_kernel(t.dest, d, True)
            e.flags &= ~F_INACTIVE
            _touch_row(t, d)
    e.state = new_state
    timeout = t.timeouts[new_state]
    if secure and (new_state == S_SYN_RECV or new_state == S_SYNACK):
        timeout = min(timeout, SECURE_HALF_OPEN_TIMEOUT)
    e.timeout = timeout
    e.expires = now + timeout
    return new_state


@njit(cache=True, error_model="numpy", inline="always")
def _touch(t, n, now):
    """Restart an entry's timer without a state change (UDP packets, template use)."""
    e = t.entries[n]
    if e.flags & F_TEMPLATE:
        e.expires = now + e.timeout
    else:
        e.timeout = t.timeouts[e.state]
        e.expires = now + e.timeout


TEMPLATE_INVALID_PORT = 0xFFFF  # ip_vs_sched_persist re-hashes a dead template to this port


@njit(cache=True, error_model="numpy")
def _invalidate_template(t, n):
    """ip_vs_sched_persist on a template whose server is gone: re-file it under port
    0xffff so no lookup finds it and it just ages out (its controlled entries keep it)."""
    e = t.entries[n]
    _index_delete(t.key, t.entries, t.in_index, _in_hash(t.key, e), n, False)
    e.vport = TEMPLATE_INVALID_PORT
    e.dport = TEMPLATE_INVALID_PORT
    _index_insert(t.in_index, _in_hash(t.key, e), n)


@njit(cache=True, error_model="numpy")
def _fill_cport(t, n, cport):
    """ip_vs_conn_fill_cport: a passive FTP data entry (F_NO_CPORT, filed under client
    port 0) takes the port of the client's first packet and is filed again under it."""
    e = t.entries[n]
    _index_delete(t.key, t.entries, t.in_index, _in_hash(t.key, e), n, False)
    if _out_indexed(e):
        _index_delete(t.key, t.entries, t.out_index, _out_hash(t.key, e), n, True)
    e.cport = cport
    e.flags &= ~F_NO_CPORT
    t.meta[M_NO_CPORT] -= 1
    _index_insert(t.in_index, _in_hash(t.key, e), n)
    if _out_indexed(e):
        _index_insert(t.out_index, _out_hash(t.key, e), n)


@njit(cache=True, error_model="numpy", inline="always")
def _lookup_no_cport(t, proto, caddr, vaddr, vport, now):
    """A passive FTP data entry waiting for this client's first packet (its in-key with
    client port 0); -1 when none (and at once when the table holds none)."""
    if t.meta[M_NO_CPORT] <= 0:
        return np.int64(-1)
    n = _lookup(t, t.in_index, False, proto, caddr, 0, vaddr, vport, 0, now)
    if n >= 0 and (t.entries[n].flags & F_NO_CPORT) == 0:
        return np.int64(-1)
    return n


# --- Python-facing wrappers (tests, control plane); the engine calls the kernels ---------


def new(t: ConnTable, proto: int, caddr: int, cport: int, vaddr: int, vport: int,
        daddr: int, dport: int, *, flags: int = 0, dest: int = -1, control: int = -1,
        now: float, timeout: float = 0.0) -> int:  # fmt: skip
    """Add a connection (or, with ``F_TEMPLATE`` in ``flags``, a template); -1 when full."""
    if dest >= t.dest.shape[0]:
        raise ValueError(f"dest {dest} out of range for {t.dest.shape[0]} real-server rows")
    if dest >= 0 and t.rid[dest] < 0:
        raise ValueError(f"dest row {dest} holds no real server in this generation")
    if flags & F_TEMPLATE and timeout <= 0:
        raise ValueError("a persistence template needs a positive timeout")
    return _new(t, proto, caddr, cport, vaddr, vport, daddr, dport, flags, dest, control, now, timeout)


def lookup_in(t: ConnTable, proto: int, caddr: int, cport: int, vaddr: int, vport: int, now: float) -> int:
    return _lookup_in(t, proto, caddr, cport, vaddr, vport, now)


def lookup_template(t: ConnTable, proto: int, snet: int, vaddr: int, vport: int, now: float) -> int:
    return _lookup_template(t, proto, snet, vaddr, vport, now)


def lookup_out(t: ConnTable, proto: int, daddr: int, dport: int, caddr: int, cport: int, now: float) -> int:
    return _lookup_out(t, proto, daddr, dport, caddr, cport, now)


def tcp_transition(t: ConnTable, n: int, direction: int, tcp_flags: int, now: float) -> int:
    return int(_tcp_transition(t, n, direction, tcp_flags, now))


def touch(t: ConnTable, n: int, now: float) -> None:
    _touch(t, n, now)


def remove(t: ConnTable, n: int) -> None:
    if not t.entries[n]["live"]:
        raise ValueError(f"entry {n} is not in use")
    if t.entries[n]["n_control"] > 0:  # its controlled entries point at it
        raise ValueError(f"entry {n} controls {t.entries[n]['n_control']} entries")
    _release(t, n)


def expire_step(t: ConnTable, now: float, budget: int) -> int:
    """Reap dead entries among the next ``budget`` pool slots; returns how many were removed."""
    return int(_sweep(t, now, budget))


def random_dropentry(t: ConnTable, now: float, start: int) -> int:
    """One run of the drop_entry scan from pool slot ``start``; entries dropped."""
    return int(_random_dropentry(t, now, int(start) % len(t.entries)))


def dest_row(t: ConnTable, n: int) -> int:
    """The current row of entry ``n``'s real server (-1: unbound, or its server is gone)."""
    i = int(t.entries["dest_id"][n])
    return int(t.drow[i]) if 0 <= i < len(t.drow) else -1


def count(t: ConnTable) -> int:
    return int(t.meta[M_COUNT])


def reset_counts(t: ConnTable, rows: np.ndarray) -> int:
    """Zero ActiveConn/InActConn of dest ``rows`` (the least-connection table reset of
    lvs.cf ``quiesce_server`` when a server comes back, reference 1.7): their live
    connections stay and are forwarded as before, but no longer move the counters.
    The caller refreshes the schedulers' trees.  Returns how many entries it marked."""
    e = t.entries
    rows = np.asarray(rows, dtype=np.int64)
    ids = t.rid[rows]
    hit = ((e["live"] == 1) & ((e["flags"] & F_TEMPLATE) == 0) & ((e["flags"] & F_UNCOUNTED) == 0)
           & np.isin(e["dest_id"], ids[ids >= 0]))  # fmt: skip
    e["flags"][hit] |= F_UNCOUNTED
    t.meta[M_UNCOUNTED] += int(hit.sum())
    t.dest[rows, ACT] = 0
    t.dest[rows, INACT] = 0
    t.dest[rows, FLAGS] &= ~F_OVERLOAD  # no connections: under any threshold again
    return int(hit.sum())


def drain_touched(t: ConnTable) -> np.ndarray | None:
    """Rows whose counters changed since the last drain (deduplicated), or None when more
    than TOUCHED_CAP changes happened and every row must be refreshed."""
    k = int(t.meta[M_TOUCHED])
    t.meta[M_TOUCHED] = 0
    if k > TOUCHED_CAP:
        return None
    return np.unique(t.touched[:k])


def conns(t: ConnTable, row: int) -> tuple[int, int, int]:
    """(ActiveConn, InActConn, PersistConn) of a real-server row."""
    return int(t.dest[row, ACT]), int(t.dest[row, INACT]), int(t.persist[row])


def counters(t: ConnTable) -> dict[str, int]:
    return {name: int(t.counters[i]) for i, name in enumerate(COUNTER_NAMES)}


# ``dest``: the row of the entry's real server now (-1: none).
ConnView = collections.namedtuple(
    "ConnView", "index proto caddr cport vaddr vport daddr dport state flags dest expires control n_control"
)


def live_entries(t: ConnTable) -> list[ConnView]:
    """Every entry in use, for listings (``ipvsadm -L -c``) and tests; not for the packet path."""
    rows = []
    for n in np.flatnonzero(t.entries["live"]):
        e = t.entries[n]
        rows.append(
            ConnView(
                int(n), int(e["proto"]), int(e["caddr"]), int(e["cport"]), int(e["vaddr"]),
                int(e["vport"]), int(e["daddr"]), int(e["dport"]), STATE_NAMES[e["state"]],
                int(e["flags"]), dest_row(t, int(n)), float(e["expires"]), int(e["control"]),
                int(e["n_control"]),
            )  # fmt: skip
        )
    return rows
