"""Connection synchronisation on the connection table: what the IPVS sync daemon reads
on the master (``collect_sync``) and writes on the backup (``apply_sync``).

Split from ``conntab`` so the table does not import the compiled tables (``apply_sync``
finds each record's service and real server in them, and ``tables`` imports the table's
constants): the dependency now runs one way, conntab <- tables <- connsync.  The wire
format is ``pylvs.ha.sync``, the daemon ``pylvs.ha.syncd``; the forwarder calls these
under its gate.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from pylvs.dataplane import ftp
from pylvs.dataplane import tables as _tables
from pylvs.dataplane.conntab import (
    F_APP_FTP,
    F_FWD_MASK,
    F_INACTIVE,
    F_NO_CPORT,
    F_NOOUTPUT,
    F_ONE_PACKET,
    F_SEQ_MASK,
    F_SYNC,
    F_TEMPLATE,
    F_UNCOUNTED,
    FWD_MASQ,
    IPPROTO_IP,
    IPPROTO_TCP,
    M_SYNC_CALL,
    M_SYNC_CURSOR,
    S_CLOSE,
    S_CLOSE_WAIT,
    S_ESTABLISHED,
    S_FIN_WAIT,
    S_LAST_ACK,
    S_TIME_WAIT,
    SYNC_NEVER,
    ConnTable,
    _dest_row,
    _lookup,
    _new,
    _touch_row,
)
from pylvs.sched._common import ADDR, F_AVAILABLE, FLAGS, FWD, PORT, _set_active_kernel

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
IP_VS_CONN_F_BACKUP_MASK = F_FWD_MASK | F_NOOUTPUT | F_INACTIVE | F_SEQ_MASK | F_NO_CPORT | F_TEMPLATE
IP_VS_CONN_F_BACKUP_UPD_MASK = F_INACTIVE | F_SEQ_MASK
assert IP_VS_CONN_F_BACKUP_MASK == 0x1F87
# ip_vs_proc_conn: an entry synced without a timeout (version 0 messages) gets its
# state's timeout, and a template 3 minutes.
SYNC_TEMPLATE_TIMEOUT = 180.0

SYNC_DTYPE = np.dtype(
    [
        ("caddr", "<u4"), ("vaddr", "<u4"), ("daddr", "<u4"),
        ("fwmark", "<u4"),   # 0 unless the service is a firewall-mark service
        ("timeout", "<u4"),  # seconds: a connection's state timeout, a template's persistence
        ("flags", "<u4"),    # masked with IP_VS_CONN_F_BACKUP_MASK
        ("cport", "<u2"), ("vport", "<u2"), ("dport", "<u2"),
        ("state", "<u2"),    # STATE_NAMES index (UDP connections: S_UDP)
        ("proto", "u1"),     # 6, 17; 0 for a firewall-mark template
        # The FTP helper's out_seq (the SEQ_DATA option; meaningful with F_OUT_SEQ)
        ("seq_init", "<u4"), ("seq_delta", "<i4"), ("seq_prev", "<i4"),
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
    o.seq_init = e.seq_init
    o.seq_delta = e.seq_delta
    o.seq_prev = e.seq_prev
    if e.flags & F_TEMPLATE:
        o.timeout = np.uint32(e.timeout + 0.5)
        # A firewall-mark template holds the mark as its virtual address (7.6).
        o.fwmark = e.vaddr if e.proto == IPPROTO_IP else 0
    else:
        o.timeout = np.uint32(t.timeouts[e.state] + 0.5)
        fw = np.uint32(0)
        d = _dest_row(t, e)
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
    if s.fwmark != 0 or s.vport == 0 or s.vport == _tables.FTP_CONTROL_PORT:  # FTP: data connections' own ports
        for r in range(off, end):
            if dest[r, FLAGS] & F_AVAILABLE and dest[r, ADDR] == daddr:
                return r
    return -1


@njit(cache=True, error_model="numpy", inline="always")
def _take_seq(e, r, flags):
    """ip_vs_proc_conn: the SEQ_DATA option replaces the entry's sequence adjustment."""
    if flags & F_SEQ_MASK:
        e.seq_init = r.seq_init
        e.seq_delta = r.seq_delta
        e.seq_prev = r.seq_prev


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
            d = _dest_row(t, e)
            if not is_tpl and d >= 0 and ((np.int64(e.flags) ^ flags) & F_INACTIVE) != 0:
                # The master's active/inactive status wins (reference 7.5).
                if (e.flags & F_UNCOUNTED) == 0:
                    _set_active_kernel(t.dest, d, (flags & F_INACTIVE) == 0)
                _touch_row(t, d)
            e.flags = (flags & IP_VS_CONN_F_BACKUP_UPD_MASK) | (np.int64(e.flags) & ~IP_VS_CONN_F_BACKUP_UPD_MASK)
            _take_seq(e, r, flags)
            e.state = r.state
            e.expires = now + timeout
            e.timeout = timeout
            if not is_tpl:
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
                                     np.int64(_tables.FTP_CONTROL_PORT))  # a port-21 service's templates
        if k < 0:
            counts[A_NO_SERVICE] += 1
            continue
        s = svc[k]
        row = _sync_dest_row(s, dest, np.int64(r.daddr), np.int64(r.dport))
        if row < 0:
            counts[A_NO_DEST] += 1
            continue
        # The forwarding method is this director's server's (ip_vs_bind_dest: "connections
        # inherit forwarding method from dest"); the master's active/inactive status is kept.
        fwd = dest[row, FWD]
        nflags = (flags & ~(F_FWD_MASK | F_NOOUTPUT)) | fwd | F_SYNC
        if is_tpl:
            nflags &= ~F_INACTIVE
        elif fwd != FWD_MASQ:
            nflags |= F_NOOUTPUT
        elif ftp.binds(r.proto, s.fwmark, s.vport, r.vport):
            nflags |= F_APP_FTP  # ip_vs_proc_conn -> ip_vs_bind_app, as the engine binds it
        n = _new(t, r.proto, r.caddr, r.cport, r.vaddr, r.vport, r.daddr, r.dport, nflags, row, -1, now,
                 timeout if is_tpl else 0.0)
        if n < 0:
            counts[A_TABLE_FULL] += 1
            continue
        e = t.entries[n]
        _take_seq(e, r, flags)
        if not is_tpl:
            e.state = r.state
            if (flags & F_INACTIVE) == 0:  # _new bound it inactive
                _set_active_kernel(t.dest, row, True)
                e.flags &= ~F_INACTIVE
                _touch_row(t, row)
            e.expires = now + timeout
            e.timeout = timeout
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
