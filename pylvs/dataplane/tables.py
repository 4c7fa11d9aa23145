"""Compile a checked lvs.cf ``Config`` plus health state into forwarding ``Tables``.

    from pylvs.dataplane.tables import compile, HealthState
    t1 = compile(config)                                  # generation 1
    t2 = compile(config, health={key: HealthState(up=False)}, previous=t1)
    adopt_counters(t2, t1)                                # at swap time, then swap

ARCHITECTURE rule 1 (compile, then swap) and rule 3 (flat arrays); anchors.md
"What pylvs should absorb" item 3 (seesaw: expand into desired-state maps keyed by
service key and destination key, diff against the running state, build new arrays).
Pure code: no I/O, no clock, no logging.  ``compile`` never edits ``previous``.

Layout
------
* ``svc``: one structured row per service (``SVC_DTYPE``).  ``dest_off``/``dest_cap``
  name the service's block of rows in the global ``dest``; ``state_off``/``state_len``
  its block of the global ``state``.  ``dest[off:off+cap]`` is exactly the ``dest``
  array the ``pylvs.sched`` kernels take (a C-contiguous view; row 0 of the block is
  the list head, rows are filled from the end towards 0 as the kernel's ``list_add``),
  and ``state[soff:soff+slen]`` its scheduler state.
* ``dest``: ``int64[R, NFIELDS]`` in the sched layout.  The connection table's
  counters live in ``dest[:, ACT]``, ``dest[:, INACT]`` and ``persist[R]``.  Each row's
  ``FWD`` is its server's forwarding method (conntab ``FWD_*``): the kernel keeps it per
  real server (ipvsadm -m/-g/-i), and a new connection or template takes its dest's
  (ip_vs_bind_dest).  ``svc["fwd"]`` is only the file's ``network`` (the default of the
  servers that name none, and the sorry server's); nothing on the packet path reads it.
* ``dest_svc[R]``: the service owning the block a row is in, -1 outside every block.
* Lookup: ``svc_keys`` (sorted int64 ``proto << 48 | vaddr << 16 | vport`` of the
  active port services) with ``svc_keys_idx``, and ``fwm_keys``/``fwm_idx`` for the
  active firewall-mark services; binary search (``find_service``/``find_fwmark``,
  ``_lookup_kernel`` in reference 7.8 step 4 order).
* ``row_map[R_prev]``: previous global row -> new global row (-1: the row is gone);
  ``svc_map[n_prev]``: previous service index -> new index (-1: dropped).
* ``dest_id[R]`` / ``id_row[I]``: each occupied row's *identity*, a number its server
  keeps for as long as it keeps a row (moved, trashed, reclaimed), and the way back.
  Connection entries hold the identity, not the row, so a new generation never has to
  touch them (engine.swap).  A new server takes the identity equal to its row when that
  number is free (so a first compile has identity == row), else the lowest free one.

Row life cycle (the kernel's destination trash, reference 4.5 / 7.7)
--------------------------------------------------------------------
A row is *occupied* when it is in the list (``F_AVAILABLE``) or still counted by
connections (ACT + INACT + persist > 0).  A removed server loses ``F_AVAILABLE`` and
keeps its row, identity and counters (trash).  A row that was out of the list *and*
counter-free in ``previous`` is free in the new generation (zeroed), so a row is never
reused in the same compile that removes its server: connections made between compile
and swap still find their server.  A server that comes back while its row still holds
its identity takes that row back (as the kernel takes a dest back from its trash,
counters kept; unlike the kernel it keeps its list position instead of moving to the
head).  New servers take the free rows just below the list head; when there are none
the block moves (``_block_cap``), occupied rows packed at the end in list order.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
from numba import njit

from pylvs.addr import ip_int
from pylvs.config.check import PORT_FORCING_METHODS, SCHED_FLAGS_MAX, forward_methods, server_forward
from pylvs.config.model import ANY_ADDRESS, Config, RealServer, VirtualServer
from pylvs.dataplane.conntab import FWD_DROUTE, FWD_LOCALNODE, FWD_MASQ, FWD_TUNNEL, IPPROTO_TCP, IPPROTO_UDP
from pylvs.sched import (
    ACT,
    ADDR,
    ALGORITHMS,
    F_AVAILABLE,
    FLAGS,
    FWD,
    INACT,
    LTHR,
    NFIELDS,
    PORT,
    UTHR,
    WEIGHT_MAX,
    W,
    set_dest_row,
)
from pylvs.sched._dispatch import ALG_ID, NAMES
from pylvs.sched._dispatch import update_kernel as _update_any

# --- Constants and where they come from ------------------------------------------------
SVC_F_PERSISTENT = 0x0001  # IP_VS_SVC_F_PERSISTENT (include/uapi/linux/ip_vs.h), reference 7.6
PMASK_DEFAULT = 0xFFFFFFFF  # ipvsadm -M default: a single client address (reference 9.2)
SORRY_WEIGHT = 1  # lvsd adds the sorry server with -w 1 (reference 3.4)
BLOCK_MIN = 16  # smallest dest block: room to add servers without moving the block
BLOCK_SLACK = 2  # a block holds at least this many times its servers
PROTO_BY_NAME = {"tcp": IPPROTO_TCP, "udp": IPPROTO_UDP}
FWD_BY_NETWORK = {"nat": FWD_MASQ, "direct": FWD_DROUTE, "tunnel": FWD_TUNNEL}  # lvs.cf network, RealServer.forward
# ipvsadm -g / -i force the real port to the virtual port (config.check does the same).
PORT_FORCING_NETWORKS = PORT_FORCING_METHODS
# ipvsadm -b bits (VirtualServer.sched_flags) the sh and mh states take as options.
SCHED_FLAG_FALLBACK = 0x1  # sh-fallback / mh-fallback (IP_VS_SVC_F_SCHED1)
SCHED_FLAG_PORT = 0x2  # sh-port / mh-port (IP_VS_SVC_F_SCHED2)
FLAG_SCHEDULERS = ("sh", "mh")  # the others ignore the flags (kept for display)
NO_TIMEOUT_CHANGE = 0  # lvs.cf tcp_timeout etc.: 0 = keep the current value (ipvsadm --set)
# Schedulers whose _config_kernel result depends on the history of changes, not only on
# the final dest list (wrr keeps cw across ip_vs_wrr_dest_changed and resets its cursor).
PATH_DEPENDENT = ("wrr",)
TIMEOUT_NAMES = ("tcp", "tcpfin", "udp")  # order of Tables.timeouts (ipvsadm --set order)

SVC_DTYPE = np.dtype([
    ("proto", "<i4"),       # 6 tcp, 17 udp; 0 for a firewall-mark service
    ("l4proto", "<i4"),     # the lvs.cf protocol (also for fwmark services: health checks)
    ("vaddr", "<u4"),       # VIP, host order
    ("vport", "<i4"),       # virtual port (0 = any port, persistent services only)
    ("fwmark", "<u4"),      # 0 = not a firewall-mark service
    ("flags", "<i4"),       # SVC_F_PERSISTENT
    ("timeout", "<i8"),     # persistence timeout, seconds (0 = none)
    ("pmask", "<u4"),       # persistence netmask, host order
    ("alg_id", "<i4"),      # pylvs.sched._dispatch.ALG_ID
    ("fwd", "<i4"),         # the file's network as conntab FWD_*: a default only (see dest FWD)
    ("sched_flags", "<i4"),  # ipvsadm -b bits (sh/mh read them at state build; kept for display)
    ("dest_off", "<i8"),
    ("dest_cap", "<i8"),
    ("state_off", "<i8"),
    ("state_len", "<i8"),
    ("active", "<i4"),      # 1: findable and schedulable; 0: kept only while connections drain
])


class HealthState(NamedTuple):
    """What the health monitor says about one real server.  ``weight`` overrides the
    configured weight while up (slow start, load feedback); None = the configured one."""

    up: bool = True
    weight: int | None = None


class Tables(NamedTuple):
    generation: int
    svc: np.ndarray           # SVC_DTYPE[n]
    dest: np.ndarray          # int64[R, NFIELDS]
    state: np.ndarray         # int64[S]
    dest_svc: np.ndarray      # int32[R]
    persist: np.ndarray       # int64[R]: PersistConn (templates) per row
    svc_keys: np.ndarray      # int64[k] sorted
    svc_keys_idx: np.ndarray  # int32[k]
    fwm_keys: np.ndarray      # int64[m] sorted
    fwm_idx: np.ndarray       # int32[m]
    timeouts: np.ndarray      # int64[3]: tcp, tcpfin, udp seconds (0 = unchanged)
    row_map: np.ndarray       # int64[R_prev]
    svc_map: np.ndarray       # int64[n_prev]
    dest_id: np.ndarray       # int64[R]: the identity of the server in each row (-1: a free row)
    id_row: np.ndarray        # int64[I]: identity -> row (-1: not in use)

    def block(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Service i's (dest, state) views, as the sched kernels take them."""
        s = self.svc[i]
        off, cap = int(s["dest_off"]), int(s["dest_cap"])
        so, sl = int(s["state_off"]), int(s["state_len"])
        return self.dest[off:off + cap], self.state[so:so + sl]


# --- Keys -------------------------------------------------------------------------------

def service_key(v: VirtualServer) -> tuple:
    """A virtual's identity, as config.check spells it: ("fwmark", mark) or
    (protocol, VIP, port)."""
    return ("fwmark", v.fwmark) if v.fwmark else (v.protocol, v.vip, v.port)


def dest_port(config: Config, v: VirtualServer, s: RealServer) -> int:
    """The real port a server is added with (ipvsadm forces the virtual port for -g/-i):
    by the server's own forwarding method (``server_forward``)."""
    return v.port if server_forward(config, s) in PORT_FORCING_NETWORKS else v.server_port(s)


def needs_next_hops(config: Config) -> bool:
    """Some active real server is reached by direct routing or tunnelling, so the
    director resolves next hops (MAC addresses) for the dest rows."""
    return bool(forward_methods(config) & {"direct", "tunnel"})


def uses_tunnel(config: Config) -> bool:
    """Some active real server is reached through an IPIP tunnel (the director needs a
    tunnel source address, the VIP devices accept_local)."""
    return "tunnel" in forward_methods(config)


def uses_nat(config: Config) -> bool:
    """Some active real server (or sorry server) is reached by NAT: its replies come back
    through the director."""
    return "nat" in forward_methods(config)


def _state_options(alg: str, sched_flags: int) -> dict:
    """``new_state`` keywords for the scheduler flags: sh and mh take fallback/port."""
    if alg not in FLAG_SCHEDULERS:
        return {}
    return {"fallback": bool(sched_flags & SCHED_FLAG_FALLBACK), "port": bool(sched_flags & SCHED_FLAG_PORT)}


def health_key(config: Config, v: VirtualServer, s: RealServer) -> tuple:
    """The key of ``s`` in a health mapping: (service key, RIP, port)."""
    return (service_key(v), s.address, dest_port(config, v, s))


def _norm_skey(key: tuple) -> tuple:
    """Internal service key: ("fwmark", mark) or (proto number, vaddr int, vport)."""
    if key[0] == "fwmark":
        return ("fwmark", int(key[1]))
    proto = PROTO_BY_NAME.get(key[0], key[0]) if isinstance(key[0], str) else int(key[0])
    if not isinstance(proto, int):
        raise ValueError(f"unknown protocol in service key {key!r}")
    return (proto, ip_int(key[1]), int(key[2]))


def _norm_health(health: Mapping | None) -> dict[tuple, HealthState]:
    out: dict[tuple, HealthState] = {}
    for (skey, rip, port), h in (health or {}).items():
        out[(_norm_skey(skey), ip_int(rip), int(port))] = h
    return out


def _pack_key(proto: int, vaddr: int, vport: int) -> int:
    return (int(proto) << 48) | (int(vaddr) << 16) | int(vport)


def _block_cap(n: int) -> int:
    """Capacity for a block of n servers: a power of two >= BLOCK_MIN and >= 2n."""
    need = max(BLOCK_MIN, BLOCK_SLACK * n)
    return 1 << (need - 1).bit_length()


# --- Lookup kernels -------------------------------------------------------------------

@njit(cache=True, error_model="numpy", _nrt=False)
def _bsearch(keys, k):
    lo = 0
    hi = keys.shape[0]
    while lo < hi:
        mid = (lo + hi) >> 1
        if keys[mid] < k:
            lo = mid + 1
        else:
            hi = mid
    if lo < keys.shape[0] and keys[lo] == k:
        return lo
    return -1


@njit(cache=True, error_model="numpy", _nrt=False)
def find_service(svc_keys, svc_keys_idx, proto, vaddr, vport):
    """Active port service (proto, vaddr, vport) -> service index, -1 when absent."""
    k = (np.int64(proto) << 48) | (np.int64(vaddr) << 16) | np.int64(vport)
    j = _bsearch(svc_keys, k)
    return np.int64(svc_keys_idx[j]) if j >= 0 else np.int64(-1)


@njit(cache=True, error_model="numpy", _nrt=False)
def find_fwmark(fwm_keys, fwm_idx, mark):
    """Active firewall-mark service -> service index, -1 when absent."""
    j = _bsearch(fwm_keys, np.int64(mark))
    return np.int64(fwm_idx[j]) if j >= 0 else np.int64(-1)


FTP_CONTROL_PORT = 21  # ip_vs_ctl.c FTPPORT
FTP_DATA_PORT = 20  # ip_vs_ctl.c FTPDATA
# net.ipv4.ip_unprivileged_port_start default: ports below it need bind rights
# (inet_port_requires_bind_service), so a passive FTP data port is at or above it.
UNPRIVILEGED_PORT_START = 1024


@njit(cache=True, error_model="numpy", _nrt=False)
def _lookup_kernel(svc_keys, svc_keys_idx, fwm_keys, fwm_idx, proto, vaddr, vport, mark):
    """Service for a new connection, reference 7.8 step 4 (ip_vs_service_find): the
    fwmark service if the packet has a mark, then exact (proto, VIP, port), then for TCP
    to port 20 or an unprivileged port the VIP's port-21 service (the packet may be an
    FTP data connection; with persistence its port-0 template keeps it on the control
    connection's server), then the VIP's port-0 service (compile refuses a port-0
    service that is not persistent, as ipvsadm)."""
    if mark != 0:
        i = find_fwmark(fwm_keys, fwm_idx, mark)
        if i >= 0:
            return i
    i = find_service(svc_keys, svc_keys_idx, proto, vaddr, vport)
    if i >= 0 or vport == 0:
        return i
    if proto == IPPROTO_TCP and (vport == FTP_DATA_PORT or vport >= UNPRIVILEGED_PORT_START):
        i = find_service(svc_keys, svc_keys_idx, proto, vaddr, FTP_CONTROL_PORT)
        if i >= 0:
            return i
    return find_service(svc_keys, svc_keys_idx, proto, vaddr, 0)


def lookup_service(tables: Tables, proto: int, vaddr: int, vport: int, mark: int = 0) -> int:
    """Python wrapper of ``_lookup_kernel``: service index or -1."""
    return int(_lookup_kernel(tables.svc_keys, tables.svc_keys_idx, tables.fwm_keys, tables.fwm_idx,
                              int(proto), ip_int(vaddr), int(vport), int(mark)))


def service_index(tables: Tables, key: tuple) -> int:
    """Index of the service with this key (active or draining), -1 when absent."""
    k = _norm_skey(key)
    for i in range(tables.svc.shape[0]):
        if _row_skey(tables.svc[i]) == k:
            return i
    return -1


def list_rows(tables: Tables, i: int) -> list[int]:
    """Service i's rows in the list (global row numbers), list order (head first)."""
    s = tables.svc[i]
    off, cap = int(s["dest_off"]), int(s["dest_cap"])
    rel = np.flatnonzero(tables.dest[off:off + cap, FLAGS] & F_AVAILABLE)
    return [off + int(r) for r in rel]


# --- Counters at swap time --------------------------------------------------------------

@njit(cache=True, error_model="numpy")
def _adopt_kernel(row_map, old_dest, old_persist, new_dest, new_persist, dest_svc,
                  alg_id, dest_off, dest_cap, state_off, state_len, active, state):
    for r in range(row_map.shape[0]):
        m = row_map[r]
        if m < 0:
            continue
        if (new_dest[m, ACT] == old_dest[r, ACT] and new_dest[m, INACT] == old_dest[r, INACT]
                and new_persist[m] == old_persist[r]):
            continue
        new_dest[m, ACT] = old_dest[r, ACT]
        new_dest[m, INACT] = old_dest[r, INACT]
        new_persist[m] = old_persist[r]
        i = dest_svc[m]
        if i >= 0 and active[i] != 0:
            off = dest_off[i]
            so = state_off[i]
            _update_any(alg_id[i], new_dest[off:off + dest_cap[i]],
                        state[so:so + state_len[i]], m - off)


def adopt_counters(new: Tables, old: Tables) -> None:
    """Copy ACT/INACT/persist of every mapped row of ``old`` into ``new`` (via
    ``new.row_map``), and update the lc-family trees of the rows that changed.  Run it
    at swap time, when the engine no longer writes ``old``.  Flags are not copied."""
    if new.row_map.shape[0] != old.dest.shape[0]:
        raise ValueError("new.row_map does not match old: was new compiled from old?")
    s = new.svc
    _adopt_kernel(new.row_map, old.dest, old.persist, new.dest, new.persist, new.dest_svc,
                  np.ascontiguousarray(s["alg_id"]), np.ascontiguousarray(s["dest_off"]),
                  np.ascontiguousarray(s["dest_cap"]), np.ascontiguousarray(s["state_off"]),
                  np.ascontiguousarray(s["state_len"]), np.ascontiguousarray(s["active"]), new.state)


# --- Compile ------------------------------------------------------------------------------

def _row_skey(row) -> tuple:
    if int(row["fwmark"]):
        return ("fwmark", int(row["fwmark"]))
    return (int(row["proto"]), int(row["vaddr"]), int(row["vport"]))


class _DestWant(NamedTuple):
    """What a listed real server should be: weight, forwarding method (conntab FWD_*)
    and connection thresholds (ipvsadm -w, -m/-g/-i, -x, -y)."""

    weight: int
    fwd: int
    uthr: int = 0
    lthr: int = 0


_GONE = _DestWant(0, 0)  # a trashed row's want (its row is kept as it is)


class _Want(NamedTuple):
    """One active virtual, expanded: its svc fields and wanted list (ident -> _DestWant),
    in configuration order (each add goes to the list head)."""

    key: tuple
    fields: dict
    alg: str
    dests: dict  # (addr, port) -> _DestWant


def _expand(config: Config, health: dict, local: frozenset[int] = frozenset()) -> list[_Want]:
    if config.network not in FWD_BY_NETWORK:
        raise ValueError(f"unknown network {config.network!r}")
    fwd = FWD_BY_NETWORK[config.network]
    wants: list[_Want] = []
    seen: set[tuple] = set()
    for v in config.virtuals:
        if not v.active:
            continue
        if v.scheduler not in ALG_ID or v.scheduler not in ALGORITHMS:
            raise ValueError(f"virtual {v.name!r}: unknown scheduler {v.scheduler!r}")
        if v.protocol not in PROTO_BY_NAME:
            raise ValueError(f"virtual {v.name!r}: unknown protocol {v.protocol!r}")
        if v.vip is None and not v.fwmark:
            raise ValueError(f"virtual {v.name!r} has no address (was the config checked?)")
        if v.port == 0 and not v.fwmark and v.persistent <= 0:
            raise ValueError(f"virtual {v.name!r}: port 0 only in persistent services (reference 7.6)")
        if not 0 <= v.sched_flags <= SCHED_FLAGS_MAX:
            raise ValueError(f"virtual {v.name!r}: scheduler flags {v.sched_flags!r} out of 0..{SCHED_FLAGS_MAX}")
        key = _norm_skey(("fwmark", v.fwmark) if v.fwmark else (v.protocol, v.vip, v.port))
        if key in seen:
            raise ValueError(f"virtual {v.name!r}: service {key!r} defined twice (was the config checked?)")
        seen.add(key)
        l4 = PROTO_BY_NAME[v.protocol]
        fields = {
            "proto": 0 if v.fwmark else l4,
            "l4proto": l4,
            "vaddr": ip_int(v.vip) if v.vip is not None else 0,
            "vport": v.port,
            "fwmark": v.fwmark,
            "flags": SVC_F_PERSISTENT if v.persistent > 0 else 0,
            "timeout": max(v.persistent, 0),
            "pmask": PMASK_DEFAULT if v.pmask == ANY_ADDRESS else ip_int(v.pmask),
            "alg_id": ALG_ID[v.scheduler],
            "fwd": fwd,
            "sched_flags": v.sched_flags,
            "active": 1,
        }
        dests: dict[tuple, _DestWant] = {}
        any_up = False
        for s in v.servers:
            if not s.active:
                continue
            if s.address is None:
                raise ValueError(f"virtual {v.name!r}, server {s.name!r}: active without an address")
            method = server_forward(config, s)
            if method not in FWD_BY_NETWORK:
                raise ValueError(f"virtual {v.name!r}, server {s.name!r}: unknown forwarding method {method!r}")
            if s.u_threshold < 0 or s.l_threshold < 0:
                raise ValueError(f"virtual {v.name!r}, server {s.name!r}: negative connection threshold")
            ident = (ip_int(s.address), dest_port(config, v, s))
            if ident in dests:
                raise ValueError(f"virtual {v.name!r}: destination {ident!r} twice (was the config checked?)")
            h = health.get((key, ident[0], ident[1]))
            if h is None or h.up:
                any_up = True
                w = s.weight if h is None or h.weight is None else int(h.weight)
                if not 0 <= w <= WEIGHT_MAX:
                    raise ValueError(f"virtual {v.name!r}, server {s.name!r}: weight {w} out of 0..{WEIGHT_MAX}")
            elif v.quiesce_server:
                w = 0  # nanny -q: ipvsadm -e ... -w 0 (reference 4.5)
            else:
                continue
            # A server at one of the director's own addresses is the director itself,
            # whatever its method (the kernel's __ip_vs_update_dest: LOCALNODE).
            fwd_method = FWD_LOCALNODE if ident[0] in local else FWD_BY_NETWORK[method]
            dests[ident] = _DestWant(w, fwd_method, s.u_threshold, s.l_threshold)
        if not any_up and v.sorry_server is not None:
            ident = (ip_int(v.sorry_server), v.port)  # lvsd: SORRY:VPORT -w 1 (reference 3.4)
            sorry_fwd = FWD_LOCALNODE if ident[0] in local else fwd  # the director's method, or itself
            dests.setdefault(ident, _DestWant(SORRY_WEIGHT, sorry_fwd))
        wants.append(_Want(key, fields, v.scheduler, dests))
    return wants


class _Plan:
    """A service of the new generation before placement."""

    __slots__ = ("key", "fields", "alg", "cap", "rows", "prev", "off", "fixed", "changed", "moved")

    def __init__(self, key, fields, alg, cap, prev, fixed):
        self.key, self.fields, self.alg, self.cap = key, fields, alg, cap
        self.rows: list[tuple] = []  # (new rel row, prev rel row or -1, action, ident, weight)
        self.prev = prev  # previous service index or -1
        self.fixed = fixed  # keeps its previous block
        self.off = -1
        self.changed = True
        self.moved: dict[int, int] = {}  # prev rel row -> new rel row (for relocated blocks)


def _plan_service(key, fields, alg, dests: dict | None, prev: Tables | None, p: int,
                  counts: np.ndarray | None) -> _Plan | None:
    """Rows of one service: ``dests`` None = removed from the config (drain)."""
    if p < 0:
        cap = _block_cap(len(dests))
        plan = _Plan(key, fields, alg, cap, -1, False)
        for k, (ident, want) in enumerate(dests.items()):
            plan.rows.append((cap - 1 - k, -1, "add", ident, want))
        return plan
    ps = prev.svc[p]
    off, cap = int(ps["dest_off"]), int(ps["dest_cap"])
    blk = prev.dest[off:off + cap]
    cnt = counts[off:off + cap]
    avail = (blk[:, FLAGS] & F_AVAILABLE) != 0
    if dests is None:
        if not ps["active"] and not cnt.any():
            return None  # drained: drop the service
        fields = {n: ps[n].item() for n in SVC_DTYPE.names}
        fields["active"] = 0
        alg = NAMES[int(ps["alg_id"])]
        dests = {}
    plan = _Plan(key, fields, alg, cap, p, True)
    plan.changed = (alg != NAMES[int(ps["alg_id"])] or not ps["active"] or not fields["active"]
                    or fields["sched_flags"] != int(ps["sched_flags"]))
    kept: list[tuple] = []  # (prev rel, action, ident, _DestWant), occupied rows
    taken: set[tuple] = set()
    for r in range(cap):
        ident = (int(blk[r, ADDR]), int(blk[r, PORT]))
        if ident != (0, 0) and ident in dests and ident not in taken:
            taken.add(ident)
            want = dests[ident]
            if avail[r]:
                kept.append((r, "keep", ident, want))
                if (blk[r, W] != want.weight or blk[r, UTHR] != want.uthr or blk[r, LTHR] != want.lthr
                        or blk[r, FWD] != want.fwd):
                    plan.changed = True  # ipvsadm -e: the kernel's upd_dest runs for any edit
            else:
                kept.append((r, "reclaim", ident, want))  # back from the trash, counters kept
                plan.changed = True
        elif avail[r]:
            kept.append((r, "trash", ident, _GONE))  # removed now: keeps its row this generation
            plan.changed = True
        elif cnt[r] > 0:
            kept.append((r, "trash", ident, _GONE))  # still counted by connections
        # else: a free row (or trash whose counters drained): zeroed, the list is unchanged
    new = [(ident, want) for ident, want in dests.items() if ident not in taken]
    head = kept[0][0] if kept else cap
    if new:
        plan.changed = True
    if len(new) > head:  # no room at the head: move to a larger block, list order kept
        ncap = _block_cap(len(kept) + len(new))
        plan.cap, plan.fixed = ncap, False
        base = ncap - len(kept)
        for k, (r, action, ident, want) in enumerate(kept):
            plan.rows.append((base + k, r, action, ident, want))
            plan.moved[r] = base + k
        head = base
    else:
        for r, action, ident, want in kept:
            plan.rows.append((r, r, action, ident, want))
    for k, (ident, want) in enumerate(new):
        plan.rows.append((head - 1 - k, -1, "add", ident, want))
    return plan


def _place(plans: list[_Plan]) -> int:
    """Offsets: fixed blocks stay, the others go first-fit into the gaps, else at the end."""
    used = sorted((p.off, p.off + p.cap) for p in plans if p.fixed)
    for p in plans:
        if p.fixed:
            continue
        start = 0
        for a, b in used:
            if a - start >= p.cap:
                break
            start = max(start, b)
        p.off = start
        used.append((start, start + p.cap))
        used.sort()
    end = max((b for _, b in used), default=0)
    return end


def _carry_state(mod, alg: str, plan: _Plan, block: np.ndarray, prev: Tables | None) -> np.ndarray:
    """Scheduler state of a planned service (before its _config_kernel run)."""
    opts = _state_options(alg, int(plan.fields["sched_flags"]))
    if plan.prev < 0 or prev is None:
        return mod.new_state(block, **opts)
    ps = prev.svc[plan.prev]
    if NAMES[int(ps["alg_id"])] != alg:
        return mod.new_state(block, **opts)  # algorithm changed: a fresh state
    if opts and int(ps["sched_flags"]) != int(plan.fields["sched_flags"]):
        return mod.new_state(block, **opts)  # sh/mh flags changed: rebuilt with the new ones
    so, sl = int(ps["state_off"]), int(ps["state_len"])
    old = prev.state[so:so + sl]
    if plan.fixed:
        return old.copy()
    # The block moved: row numbers changed.  wrr's state is row-free (its cursor goes
    # back to the head on any change); rr's cursor is remapped to the nearest kept row
    # at or before it; the others (trees, hash tables, lblc caches) start afresh.
    if alg == "wrr":
        return old.copy()
    st = mod.new_state(block, **opts)
    if alg == "rr" and old[0] >= 0:
        before = [r for r in plan.moved if r <= old[0]]
        st[0] = plan.moved[max(before)] if before else -1
    return st


def compile(config: Config, health: Mapping | None = None, previous: Tables | None = None,  # noqa: A001
            local: frozenset[str] = frozenset()) -> Tables:  # fmt: skip
    """Checked ``config`` + ``health`` (+ the running ``previous`` tables) -> new Tables.

    ``health`` maps (service key, RIP, port) (see ``health_key``) to a HealthState;
    absent = up with the configured weight.  ``local``: the director's own addresses
    (a real server at one is served by the local stack, LOCALNODE).  Raises ValueError
    only for broken invariants (a config that cannot have passed check)."""
    wants = _expand(config, _norm_health(health), frozenset(ip_int(a) for a in local))
    prev_by_key: dict[tuple, int] = {}
    counts = None
    if previous is not None:
        for p in range(previous.svc.shape[0]):
            prev_by_key[_row_skey(previous.svc[p])] = p
        counts = previous.dest[:, ACT] + previous.dest[:, INACT] + previous.persist
    plans: list[_Plan] = []
    wanted = set()
    for w in wants:
        wanted.add(w.key)
        plans.append(_plan_service(w.key, w.fields, w.alg, w.dests, previous,
                                   prev_by_key.get(w.key, -1), counts))
    for key, p in prev_by_key.items():  # removed services drain, then go
        if key not in wanted:
            plan = _plan_service(key, None, None, None, previous, p, counts)
            if plan is not None:
                plans.append(plan)
    for p in plans:
        if p.fixed:
            p.off = int(previous.svc[p.prev]["dest_off"])
    n_rows = _place(plans)

    dest = np.zeros((n_rows, NFIELDS), dtype=np.int64)
    persist = np.zeros(n_rows, dtype=np.int64)
    dest_svc = np.full(n_rows, -1, dtype=np.int32)
    row_map = np.full(0 if previous is None else previous.dest.shape[0], -1, dtype=np.int64)
    dest_id = np.full(n_rows, -1, dtype=np.int64)
    added_rows: list[int] = []
    svc_map = np.full(0 if previous is None else previous.svc.shape[0], -1, dtype=np.int64)
    svc = np.zeros(len(plans), dtype=SVC_DTYPE)
    states: list[np.ndarray] = []
    state_off = 0
    for i, plan in enumerate(plans):
        block = dest[plan.off:plan.off + plan.cap]
        dest_svc[plan.off:plan.off + plan.cap] = i
        poff = int(previous.svc[plan.prev]["dest_off"]) if plan.prev >= 0 else 0
        if plan.prev >= 0:
            svc_map[plan.prev] = i
        adds = []
        for new_rel, prev_rel, action, ident, want in plan.rows:
            if action == "add":
                adds.append((new_rel, ident, want))
                continue
            g_old, g_new = poff + prev_rel, plan.off + new_rel
            block[new_rel] = previous.dest[g_old]
            persist[g_new] = previous.persist[g_old]
            row_map[g_old] = g_new
            dest_id[g_new] = previous.dest_id[g_old]
            if action == "trash":
                block[new_rel, FLAGS] &= ~F_AVAILABLE
                continue
            if action == "reclaim":
                block[new_rel, FLAGS] |= F_AVAILABLE
            d = block[new_rel]
            set_dest_row(block, new_rel, None if d[W] == want.weight else want.weight,
                         None if d[UTHR] == want.uthr else want.uthr, None if d[LTHR] == want.lthr else want.lthr,
                         fwd=want.fwd)
        added_rows += [plan.off + new_rel for new_rel, _, _ in adds]
        mod = ALGORITHMS[plan.alg]
        if plan.alg in PATH_DEPENDENT:
            # wrr's state depends on the order of changes (ip_vs_wrr_dest_changed keeps
            # cw): replay the adds one by one, as lvsd's one `ipvsadm -a` per server.
            st = np.ascontiguousarray(_carry_state(mod, plan.alg, plan, block, previous), dtype=np.int64)
            if plan.fields["active"] and (plan.changed or not plan.fixed) and (not adds or plan.prev >= 0):
                mod._config_kernel(block, st)  # edits and removals first
            for new_rel, ident, want in adds:
                set_dest_row(block, new_rel, want.weight, want.uthr, want.lthr, add=True, addr=ident[0],
                             port=ident[1], fwd=want.fwd)
                if plan.fields["active"]:
                    mod._config_kernel(block, st)
        else:
            for new_rel, ident, want in adds:
                set_dest_row(block, new_rel, want.weight, want.uthr, want.lthr, add=True, addr=ident[0],
                             port=ident[1], fwd=want.fwd)
            st = np.ascontiguousarray(_carry_state(mod, plan.alg, plan, block, previous), dtype=np.int64)
            if plan.fields["active"]:
                # After adds/edits/removals; also for an unchanged block: the tree and
                # hash rebuilds are idempotent and make the trees match the counters.
                mod._config_kernel(block, st)
        for name in SVC_DTYPE.names:
            if name in plan.fields:
                svc[name][i] = plan.fields[name]
        svc["dest_off"][i], svc["dest_cap"][i] = plan.off, plan.cap
        svc["state_off"][i], svc["state_len"][i] = state_off, st.shape[0]
        states.append(st)
        state_off += st.shape[0]
    state = np.concatenate(states) if states else np.zeros(0, dtype=np.int64)
    id_row = _assign_ids(dest_id, added_rows)

    port_svcs = [(_pack_key(s["proto"], s["vaddr"], s["vport"]), i)
                 for i, s in enumerate(svc) if s["active"] and not s["fwmark"]]
    mark_svcs = [(int(s["fwmark"]), i) for i, s in enumerate(svc) if s["active"] and s["fwmark"]]
    port_svcs.sort()
    mark_svcs.sort()
    return Tables(
        generation=1 if previous is None else previous.generation + 1,
        svc=svc, dest=dest, state=state, dest_svc=dest_svc, persist=persist,
        svc_keys=np.array([k for k, _ in port_svcs], dtype=np.int64),
        svc_keys_idx=np.array([i for _, i in port_svcs], dtype=np.int32),
        fwm_keys=np.array([k for k, _ in mark_svcs], dtype=np.int64),
        fwm_idx=np.array([i for _, i in mark_svcs], dtype=np.int32),
        timeouts=np.array([config.tcp_timeout, config.tcpfin_timeout, config.udp_timeout], dtype=np.int64),
        row_map=row_map, svc_map=svc_map, dest_id=dest_id, id_row=id_row,
    )


def _assign_ids(dest_id: np.ndarray, added_rows: list[int]) -> np.ndarray:
    """Identities for the new servers' rows (in place), then the identity -> row map."""
    used = set(dest_id[dest_id >= 0].tolist())
    free = (i for i in itertools.count() if i not in used)
    for r in added_rows:
        ident = r if r not in used else next(free)
        used.add(ident)
        dest_id[r] = ident
    id_row = np.full(max(used) + 1 if used else 1, -1, dtype=np.int64)  # never empty: one C slot
    rows = np.flatnonzero(dest_id >= 0)
    id_row[dest_id[rows]] = rows
    return id_row
