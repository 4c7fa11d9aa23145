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
from typing import NamedTuple

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from pylvs.sched._common import (
    ACT,
    ADDR,
    F_AVAILABLE,
    F_OVERLOAD,
    FLAGS,
    INACT,
    PORT,
    _bind_kernel,
    _set_active_kernel,
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
F_TEMPLATE = 0x1000
F_ONE_PACKET = 0x2000
# pylvs's own bit (unused by the uapi, and outside IP_VS_CONN_F_BACKUP_MASK, so never
# synced): an entry counted before a quiesce_server reset of its server's ActiveConn /
# InActConn (reset_counts); it no longer moves those counters.
F_UNCOUNTED = 0x8000

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
DIR_INPUT, DIR_OUTPUT, DIR_INPUT_ONLY = 0, 1, 2
EV_SYN, EV_FIN, EV_ACK, EV_RST = 0, 1, 2, 3
TCP_FIN, TCP_SYN, TCP_RST, TCP_ACK = 0x01, 0x02, 0x04, 0x10  # RFC 793 flag bits


def _transition_array() -> np.ndarray:
    table = np.zeros((3, 4, len(TCP_STATE_NAMES)), dtype=np.int8)
    for d, direction in enumerate(("INPUT", "OUTPUT", "INPUT_ONLY")):
        for e, event in enumerate(("syn", "fin", "ack", "rst")):
            row = TCP_TRANSITIONS[direction][event].split()
            table[d, e, :] = [_ABBREV.index(cell) for cell in row]
    return table


TRANSITIONS = _transition_array()

# --- Storage -----------------------------------------------------------------------
ENTRY_DTYPE = np.dtype(
    [
        ("caddr", "<u4"), ("vaddr", "<u4"), ("daddr", "<u4"),
        ("cport", "<u2"), ("vport", "<u2"), ("dport", "<u2"), ("flags", "<u2"),
        ("proto", "u1"), ("state", "u1"), ("live", "u1"),
        ("sync_state", "u1"),  # state last sent to the backups (SYNC_NEVER: not yet); templates: unused
        ("dest", "<i4"),       # real-server slot, -1 when unbound
        ("control", "<i4"),    # entry number of the controlling template, -1 if none
        ("n_control", "<i4"),  # entries this template controls
        ("in_pkts", "<u4"),
        ("timeout", "<f4"),    # templates: the persistence timeout; others: unused
        ("sync_pkts", "<u4"),  # in_pkts when last sent; templates: the collect call that last sent it
        ("expires", "<f8"),
    ],
    align=True,
)  # fmt: skip
INDEX_LOAD = 2  # index slots per entry: linear probing stays short below 50 % load
EMPTY = 0  # index slots hold entry number + 1
SYNC_NEVER = 0xFF  # sync_state of an entry never sent to the backups (no state has this number)
EVICT_SCAN = 64  # slots a full table scans for a dead entry before refusing a new one

TOUCHED_CAP = 4096  # rows remembered between two drains; past it, "refresh every row"

# Counter slots (``ConnTable.counters``), one named reason each.
C_CREATED, C_EXPIRED, C_FULL_DROPS, C_EVICTED = range(4)
COUNTER_NAMES = ("created", "expired", "full_drops", "evicted")
# Meta slots: entries in use, free-list head, sweep cursor, rows in ``touched``, the
# sync collector's cursor and call serial (collect_sync).
M_COUNT, M_FREE, M_CURSOR, M_TOUCHED, M_SYNC_CURSOR, M_SYNC_CALL = range(6)
N_META = 6


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


def create(capacity: int, n_dests: int, timeouts: dict[str, float] | None = None) -> ConnTable:
    """A new, empty table for ``capacity`` entries (a power of two), counting on a fresh
    dest array of ``n_dests`` rows (``attach`` points it at a Tables' arrays instead)."""
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
    )
    set_timeouts(table, **(timeouts or {}))
    return table


def attach(table: ConnTable, dest: np.ndarray, persist: np.ndarray) -> ConnTable:
    """The same table counting on another generation's ``dest`` and ``persist`` arrays.

    The caller (the engine, at a swap) has already carried the counts over and remapped
    the entries' rows; this only checks shapes and swaps the references.
    """
    if dest.dtype != np.int64 or dest.ndim != 2 or dest.shape[1] != table.dest.shape[1]:
        raise ValueError(f"dest must be int64 of shape (rows, {table.dest.shape[1]})")
    if persist.dtype != np.int64 or persist.shape != (dest.shape[0],):
        raise ValueError(f"persist must be int64 of shape ({dest.shape[0]},)")
    return table._replace(dest=dest, persist=persist)


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
def _fmix(h: np.uint64) -> np.uint64:
    # murmur3's 64-bit finaliser: every input bit reaches every output bit.
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return h


@njit(cache=True, error_model="numpy", inline="always")
def _hash5(proto, addr1, port1, addr2, port2, extra) -> np.uint64:
    a = (np.uint64(addr1) << np.uint64(32)) | np.uint64(addr2)
    b = (
        (np.uint64(port1) << np.uint64(32))
        | (np.uint64(port2) << np.uint64(16))
        | (np.uint64(proto) << np.uint64(8))
        | np.uint64(extra)
    )
    return _fmix(a ^ _fmix(b))


@njit(cache=True, error_model="numpy", inline="always")
def _in_hash(e) -> np.uint64:
    template = np.uint64(1) if e.flags & F_TEMPLATE else np.uint64(0)
    return _hash5(e.proto, e.caddr, e.cport, e.vaddr, e.vport, template)


@njit(cache=True, error_model="numpy", inline="always")
def _out_hash(e) -> np.uint64:
    return _hash5(e.proto, e.daddr, e.dport, e.caddr, e.cport, np.uint64(2))


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
def _prefetch_keys(t, proto, saddr, sport, daddr, dport):
    """Ask for the index slots a packet's lookups will read first (its in-key, and its
    out-key as a real server's reply), so a batch's cache misses overlap instead of
    coming one after the other."""
    mask = np.uint64(len(t.in_index) - 1)
    _prefetch(t.in_index, np.int64(_hash5(proto, saddr, sport, daddr, dport, np.uint64(0)) & mask))
    _prefetch(t.out_index, np.int64(_hash5(proto, saddr, sport, daddr, dport, np.uint64(2))
                                    & np.uint64(len(t.out_index) - 1)))


# --- Index maintenance (linear probing, backward-shift deletion) ---------------------


@njit(cache=True, error_model="numpy")
def _index_insert(index, h, entry):
    mask = len(index) - 1
    i = np.int64(h & np.uint64(mask))
    while index[i] != EMPTY:
        i = (i + 1) & mask
    index[i] = entry + 1


@njit(cache=True, error_model="numpy")
def _index_delete(entries, index, h, entry, out_side):
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
        oh = _out_hash(other) if out_side else _in_hash(other)
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


# --- Entry life cycle ------------------------------------------------------------------


@njit(cache=True, error_model="numpy")
def _release(t, n):
    """Unlink entry ``n`` from both indexes, its counters and its template; free it."""
    e = t.entries[n]
    _index_delete(t.entries, t.in_index, _in_hash(e), n, False)
    if _out_indexed(e):
        _index_delete(t.entries, t.out_index, _out_hash(e), n, True)
    d = e.dest
    if d >= 0:
        if e.flags & F_TEMPLATE:
            t.persist[d] -= 1
        elif not (e.flags & F_UNCOUNTED):
            _unbind_kernel(t.dest, d, (e.flags & F_INACTIVE) == 0)
        _touch_row(t, d)
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


@njit(cache=True, error_model="numpy")
def _new(t, proto, caddr, cport, vaddr, vport, daddr, dport, flags, dest, control, now, timeout):
    """Add an entry and return its number, or -1 when the table is full (counted)."""
    if t.meta[M_FREE] < 0:
        if _sweep(t, now, EVICT_SCAN) == 0:
            t.counters[C_FULL_DROPS] += 1
            return -1
        t.counters[C_EVICTED] += 1
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
    e.dest = dest
    e.control = control
    e.n_control = 0
    e.in_pkts = 0
    e.sync_state = SYNC_NEVER
    e.sync_pkts = 0
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
        e.expires = now + t.timeouts[e.state]
        if dest >= 0:
            _bind_kernel(t.dest, dest)
            _touch_row(t, dest)
    if control >= 0:
        t.entries[control].n_control += 1
    _index_insert(t.in_index, _in_hash(e), n)
    if _out_indexed(e):
        _index_insert(t.out_index, _out_hash(e), n)
    t.counters[C_CREATED] += 1
    return n


@njit(cache=True, error_model="numpy", inline="always")
def _lookup(t, index, out_side, proto, addr1, port1, addr2, port2, template, now):
    """Find a live entry by its in-key (or out-key when ``out_side``); -1 when absent."""
    h = _hash5(proto, addr1, port1, addr2, port2, np.uint64(2) if out_side else np.uint64(template))
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
    new_state = S_CLOSE if event < 0 else TRANSITIONS[table_dir, event, e.state]
    d = e.dest
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
    e.expires = now + t.timeouts[new_state]
    return new_state


@njit(cache=True, error_model="numpy", inline="always")
def _touch(t, n, now):
    """Restart an entry's timer without a state change (UDP packets, template use)."""
    e = t.entries[n]
    if e.flags & F_TEMPLATE:
        e.expires = now + e.timeout
    else:
        e.expires = now + t.timeouts[e.state]


TEMPLATE_INVALID_PORT = 0xFFFF  # ip_vs_sched_persist re-hashes a dead template to this port


@njit(cache=True, error_model="numpy")
def _invalidate_template(t, n):
    """ip_vs_sched_persist on a template whose server is gone: re-file it under port
    0xffff so no lookup finds it and it just ages out (its controlled entries keep it)."""
    e = t.entries[n]
    _index_delete(t.entries, t.in_index, _in_hash(e), n, False)
    e.vport = TEMPLATE_INVALID_PORT
    e.dport = TEMPLATE_INVALID_PORT
    _index_insert(t.in_index, _in_hash(e), n)


# --- Python-facing wrappers (tests, control plane); the engine calls the kernels ---------


def new(t: ConnTable, proto: int, caddr: int, cport: int, vaddr: int, vport: int,
        daddr: int, dport: int, *, flags: int = 0, dest: int = -1, control: int = -1,
        now: float, timeout: float = 0.0) -> int:  # fmt: skip
    """Add a connection (or, with ``F_TEMPLATE`` in ``flags``, a template); -1 when full."""
    if dest >= t.dest.shape[0]:
        raise ValueError(f"dest {dest} out of range for {t.dest.shape[0]} real-server rows")
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
    _release(t, n)


def expire_step(t: ConnTable, now: float, budget: int) -> int:
    """Reap dead entries among the next ``budget`` pool slots; returns how many were removed."""
    return int(_sweep(t, now, budget))


def count(t: ConnTable) -> int:
    return int(t.meta[M_COUNT])


def reset_counts(t: ConnTable, rows: np.ndarray) -> int:
    """Zero ActiveConn/InActConn of dest ``rows`` (the least-connection table reset of
    lvs.cf ``quiesce_server`` when a server comes back, reference 1.7): their live
    connections stay and are forwarded as before, but no longer move the counters.
    The caller refreshes the schedulers' trees.  Returns how many entries it marked."""
    e = t.entries
    rows = np.asarray(rows, dtype=np.int64)
    hit = (e["live"] == 1) & ((e["flags"] & F_TEMPLATE) == 0) & np.isin(e["dest"], rows)
    e["flags"][hit] |= F_UNCOUNTED
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
                int(e["flags"]), int(e["dest"]), float(e["expires"]), int(e["control"]),
                int(e["n_control"]),
            )  # fmt: skip
        )
    return rows


# --- Connection synchronisation (reference 10; net/netfilter/ipvs/ip_vs_sync.c) ----------
#
# The master side (``collect_sync``) and the backup side (``apply_sync``) of the IPVS sync
# daemon, on the table's arrays.  The wire format is pylvs.ha.sync; the daemon
# pylvs.ha.syncd.  Records are SYNC_DTYPE rows with this module's numbers: addresses
# host order, states as STATE_NAMES (a UDP connection is S_UDP here, 0 on the wire).
#
# THE DUE RULE (collect_sync), after ip_vs_sync_conn_needed() with the default sysctls
# sync_threshold = "3 50", sync_refresh_period = 0, sync_persist_mode = 0.  An entry is
# due when it is live (not yet expired), not a template, not F_ONE_PACKET, and
#   - TCP only: its state is one the kernel syncs in (ESTABLISHED, FIN_WAIT, CLOSE,
#     CLOSE_WAIT, TIME_WAIT) or LAST_ACK (pylvs adds it: the backup then ages a closing
#     connection out with the right timer); half-open states are never synced, and
#   (a) it has had at least SYNC_THRESHOLD packets in and its state differs from the state
#       last sent (never sent counts as different), or
#   (b) it was sent before and in_pkts has grown by SYNC_PERIOD since (a refresh, so
#       the backup's timer keeps up: the kernel's "pkts % sync_period == threshold"), or
#   (c) its state differs from the one last sent and is a closing one (FIN_WAIT, CLOSE,
#       CLOSE_WAIT, TIME_WAIT, LAST_ACK), whatever its packet count (kernel: "force").
# A due connection under a persistence template (``control`` >= 0) brings the template
# along, written just before it, at most once per call (kernel: ip_vs_sync_conn's
# "control:" loop sends the template with each synced connection).  Sending marks the
# entry (sync_state, sync_pkts); the scan resumes where the previous call stopped, so an
# output buffer that fills up leaves the rest due for the next call, in table order.
SYNC_THRESHOLD = 3  # sysctl sync_threshold, first value (reference 7.7 default "3 50")
SYNC_PERIOD = 50  # sysctl sync_threshold, second value (sync_period)
_TCP_SYNCED_STATES = (
    (1 << S_ESTABLISHED) | (1 << S_FIN_WAIT) | (1 << S_CLOSE) | (1 << S_CLOSE_WAIT)
    | (1 << S_TIME_WAIT) | (1 << S_LAST_ACK)
)  # fmt: skip
_CLOSING_STATES = (
    (1 << S_FIN_WAIT) | (1 << S_CLOSE) | (1 << S_CLOSE_WAIT) | (1 << S_TIME_WAIT) | (1 << S_LAST_ACK)
)  # fmt: skip

# Flags (include/uapi/linux/ip_vs.h): what a backup takes from a message, and what an
# update of an existing entry may change (IP_VS_CONN_F_BACKUP_MASK / _BACKUP_UPD_MASK).
F_SEQ_MASK = 0x0600  # IP_VS_CONN_F_OUT_SEQ | IP_VS_CONN_F_IN_SEQ
F_NO_CPORT = 0x0800  # IP_VS_CONN_F_NO_CPORT
IP_VS_CONN_F_BACKUP_MASK = F_FWD_MASK | F_NOOUTPUT | F_INACTIVE | F_SEQ_MASK | F_NO_CPORT | F_TEMPLATE
IP_VS_CONN_F_BACKUP_UPD_MASK = F_INACTIVE | F_SEQ_MASK
assert IP_VS_CONN_F_BACKUP_MASK == 0x1F87
# ip_vs_proc_conn: an entry synced without a timeout (version 0 messages) gets its
# state's timeout, and a template 3 minutes.
SYNC_TEMPLATE_TIMEOUT = 180.0
_FTP_CONTROL_PORT = 21  # a port-21 persistent service files its templates under port 0 (7.6)

SYNC_DTYPE = np.dtype(
    [
        ("caddr", "<u4"), ("vaddr", "<u4"), ("daddr", "<u4"),
        ("fwmark", "<u4"),   # 0 unless the service is a firewall-mark service
        ("timeout", "<u4"),  # seconds: a connection's state timeout, a template's persistence
        ("flags", "<u4"),    # masked with IP_VS_CONN_F_BACKUP_MASK
        ("cport", "<u2"), ("vport", "<u2"), ("dport", "<u2"),
        ("state", "<u2"),    # STATE_NAMES index (UDP connections: S_UDP)
        ("proto", "u1"),     # 6, 17; 0 for a firewall-mark template
    ],
    align=True,
)  # fmt: skip

# apply_sync counters, one named outcome per record.
(A_CREATED, A_UPDATED, A_NO_SERVICE, A_NO_DEST, A_TABLE_FULL, A_BAD_STATE) = range(6)
APPLY_COUNTER_NAMES = ("created", "updated", "no_service", "no_dest", "table_full", "bad_state")


@njit(cache=True, error_model="numpy", inline="always")
def _sync_due(e, now):
    """THE DUE RULE above, for one entry."""
    if e.live == 0 or e.expires <= now or (e.flags & (F_TEMPLATE | F_ONE_PACKET)) != 0:
        return False
    st = np.int64(e.state)
    if e.proto == IPPROTO_TCP and ((_TCP_SYNCED_STATES >> st) & 1) == 0:
        return False
    changed = np.int64(e.sync_state) != st
    if changed and (e.in_pkts >= SYNC_THRESHOLD or ((_CLOSING_STATES >> st) & 1) != 0):
        return True
    grown = (np.int64(e.in_pkts) - np.int64(e.sync_pkts)) & np.int64(0xFFFFFFFF)
    return e.sync_state != SYNC_NEVER and grown >= SYNC_PERIOD


@njit(cache=True, error_model="numpy", inline="always")
def _emit_sync(t, n, out, k, dest_svc, svc_fwmark):
    e = t.entries[n]
    o = out[k]
    o.proto = e.proto
    o.caddr = e.caddr
    o.cport = e.cport
    o.vaddr = e.vaddr
    o.vport = e.vport
    o.daddr = e.daddr
    o.dport = e.dport
    o.flags = e.flags & IP_VS_CONN_F_BACKUP_MASK
    o.state = e.state
    if e.flags & F_TEMPLATE:
        o.timeout = np.uint32(e.timeout + 0.5)
        # A firewall-mark template holds the mark as its virtual address (7.6).
        o.fwmark = e.vaddr if e.proto == IPPROTO_IP else 0
    else:
        o.timeout = np.uint32(t.timeouts[e.state] + 0.5)
        fw = np.uint32(0)
        d = e.dest
        if d >= 0 and d < dest_svc.shape[0]:
            sv = dest_svc[d]
            if sv >= 0:
                fw = svc_fwmark[sv]
        o.fwmark = fw


@njit(cache=True, error_model="numpy")
def _collect_sync(t, now, out, dest_svc, svc_fwmark):
    capacity = len(t.entries)
    room = out.shape[0]
    call = t.meta[M_SYNC_CALL] + 1
    if call > 0xFFFFFFFF:
        call = 1
    t.meta[M_SYNC_CALL] = call
    cursor = t.meta[M_SYNC_CURSOR]
    if cursor >= capacity:
        cursor = 0
    k = 0
    for _ in range(capacity):
        e = t.entries[cursor]
        if _sync_due(e, now):
            c = e.control
            with_tpl = c >= 0 and t.entries[c].live != 0 and np.int64(t.entries[c].sync_pkts) != call
            if k + (2 if with_tpl else 1) > room:
                break  # full: this entry is the first of the next call
            if with_tpl:
                _emit_sync(t, c, out, k, dest_svc, svc_fwmark)
                t.entries[c].sync_pkts = call
                k += 1
            _emit_sync(t, cursor, out, k, dest_svc, svc_fwmark)
            e.sync_state = e.state
            e.sync_pkts = e.in_pkts
            k += 1
        cursor += 1
        if cursor == capacity:
            cursor = 0
    t.meta[M_SYNC_CURSOR] = cursor
    return k


def collect_sync(t: ConnTable, now: float, out: np.ndarray, dest_svc: np.ndarray, svc_fwmark: np.ndarray) -> int:
    """Write the entries due for sync (THE DUE RULE) into ``out`` (SYNC_DTYPE, at least 2
    rows: a connection and its template), mark them sent, return how many were written.
    ``dest_svc`` is Tables.dest_svc and ``svc_fwmark`` the uint32 column
    ``tables.svc["fwmark"]`` (contiguous): a connection's record carries its service's mark."""
    if out.dtype != SYNC_DTYPE or out.ndim != 1 or out.shape[0] < 2:
        raise ValueError("out must be a SYNC_DTYPE array of at least 2 rows")
    return int(_collect_sync(t, float(now), out, dest_svc, np.ascontiguousarray(svc_fwmark, dtype=np.uint32)))


@njit(cache=True, error_model="numpy", inline="always")
def _sync_dest_row(s, dest, daddr, dport):
    """The listed real server of service ``s`` for a synced entry (ip_vs_find_dest):
    same address and port, else the address with port 0; services that bundle ports
    (firewall mark, port 0) keep a connection's own port, so there the address alone."""
    off = s.dest_off
    end = off + s.dest_cap
    for r in range(off, end):
        if dest[r, FLAGS] & F_AVAILABLE and dest[r, ADDR] == daddr and dest[r, PORT] == dport:
            return r
    for r in range(off, end):
        if dest[r, FLAGS] & F_AVAILABLE and dest[r, ADDR] == daddr and dest[r, PORT] == 0:
            return r
    if s.fwmark != 0 or s.vport == 0:
        for r in range(off, end):
            if dest[r, FLAGS] & F_AVAILABLE and dest[r, ADDR] == daddr:
                return r
    return -1


@njit(cache=True, error_model="numpy")
def _apply_sync(t, recs, now, svc, dest, svc_keys, svc_keys_idx, fwm_keys, fwm_idx, counts):
    """ip_vs_proc_conn for each record (see apply_sync)."""
    n_states = t.timeouts.shape[0]
    for j in range(recs.shape[0]):
        r = recs[j]
        if r.state >= n_states:
            counts[A_BAD_STATE] += 1
            continue
        is_tpl = (r.flags & F_TEMPLATE) != 0
        flags = np.int64(r.flags) & IP_VS_CONN_F_BACKUP_MASK
        timeout = np.float64(r.timeout)
        if timeout <= 0:
            timeout = SYNC_TEMPLATE_TIMEOUT if is_tpl else t.timeouts[r.state]
        n = _lookup(t, t.in_index, False, r.proto, r.caddr, r.cport, r.vaddr, r.vport,
                    np.int64(1) if is_tpl else np.int64(0), now)
        if n >= 0:
            e = t.entries[n]
            d = e.dest
            if not is_tpl and d >= 0 and ((np.int64(e.flags) ^ flags) & F_INACTIVE) != 0:
                # The master's active/inactive status wins (reference 7.5).
                if (e.flags & F_UNCOUNTED) == 0:
                    _set_active_kernel(t.dest, d, (flags & F_INACTIVE) == 0)
                _touch_row(t, d)
            e.flags = (flags & IP_VS_CONN_F_BACKUP_UPD_MASK) | (np.int64(e.flags) & ~IP_VS_CONN_F_BACKUP_UPD_MASK)
            e.state = r.state
            e.expires = now + timeout
            if is_tpl:
                e.timeout = timeout
            else:
                e.in_pkts = SYNC_THRESHOLD
                e.sync_state = e.state
                e.sync_pkts = e.in_pkts
            counts[A_UPDATED] += 1
            continue
        mark = np.int64(r.fwmark)
        if mark == 0 and is_tpl and r.proto == IPPROTO_IP:
            mark = np.int64(r.vaddr)  # a version-0 fwmark template: the mark is its vaddr
        k = _tables._lookup_kernel(svc_keys, svc_keys_idx, fwm_keys, fwm_idx,
                                   np.int64(r.proto), np.int64(r.vaddr), np.int64(r.vport), mark)
        if k < 0 and is_tpl and r.vport == 0 and r.proto != IPPROTO_IP:
            k = _tables.find_service(svc_keys, svc_keys_idx, np.int64(r.proto), np.int64(r.vaddr),
                                     np.int64(_FTP_CONTROL_PORT))
        if k < 0:
            counts[A_NO_SERVICE] += 1
            continue
        s = svc[k]
        row = _sync_dest_row(s, dest, np.int64(r.daddr), np.int64(r.dport))
        if row < 0:
            counts[A_NO_DEST] += 1
            continue
        # The forwarding method is this director's (ip_vs_bind_dest: "connections inherit
        # forwarding method from dest"); the master's active/inactive status is kept.
        nflags = (flags & ~(F_FWD_MASK | F_NOOUTPUT)) | np.int64(s.fwd) | F_SYNC
        if is_tpl:
            nflags &= ~F_INACTIVE
        elif s.fwd != FWD_MASQ:
            nflags |= F_NOOUTPUT
        n = _new(t, r.proto, r.caddr, r.cport, r.vaddr, r.vport, r.daddr, r.dport, nflags, row, -1, now,
                 timeout if is_tpl else 0.0)
        if n < 0:
            counts[A_TABLE_FULL] += 1
            continue
        e = t.entries[n]
        if not is_tpl:
            e.state = r.state
            if (flags & F_INACTIVE) == 0:  # _new bound it inactive
                _set_active_kernel(t.dest, row, True)
                e.flags &= ~F_INACTIVE
                _touch_row(t, row)
            e.expires = now + timeout
            e.in_pkts = SYNC_THRESHOLD  # ip_vs_proc_conn: in_pkts = sync_threshold
            e.sync_state = e.state  # kernel: old_state = state (not re-sent as new)
            e.sync_pkts = e.in_pkts
        counts[A_CREATED] += 1


def apply_sync(t: ConnTable, records: np.ndarray, now: float, tables) -> dict[str, int]:
    """The backup side (ip_vs_proc_conn): for each SYNC_DTYPE record find its entry by the
    in-key (templates by the template key) and update state, flags and timer, moving
    ActiveConn/InActConn when the master's INACTIVE bit changed; else create it with
    F_SYNC, bound to the listed real server of the same service (by fwmark, else
    (proto, vaddr, vport) in the packet path's lookup order) with the same address and
    port.  Records whose service or server is not here are skipped and counted (the
    kernel keeps such entries unbound; an unbound entry could not forward here).
    Returns APPLY_COUNTER_NAMES -> count.  The caller refreshes the schedulers' trees
    over the touched rows (the engine does it at its next batch)."""
    if records.dtype != SYNC_DTYPE:
        raise ValueError("records must be a SYNC_DTYPE array")
    counts = np.zeros(len(APPLY_COUNTER_NAMES), dtype=np.int64)
    _apply_sync(t, np.ascontiguousarray(records), float(now), tables.svc, tables.dest, tables.svc_keys,
                tables.svc_keys_idx, tables.fwm_keys, tables.fwm_idx, counts)
    return dict(zip(APPLY_COUNTER_NAMES, counts.tolist(), strict=True))


# Last: tables imports this module's constants (a cycle that only works from here on).
from pylvs.dataplane import tables as _tables  # noqa: E402
