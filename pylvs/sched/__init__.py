"""IPVS schedulers as numba kernels over flat arrays, registered by ipvsadm name.

    >>> from pylvs.sched import Scheduler
    >>> s = Scheduler("rr", capacity=3)
    >>> [s.add_dest(w) for w in (1, 1, 0)]   # each add goes to the list head
    [2, 1, 0]
    >>> [s.pick(0, 0, 0, 0, 0) for _ in range(4)]   # row 0 is quiesced (weight 0)
    [1, 2, 1, 2]

Names: rr wrr lc wlc (default) sed nq lblc lblcr dh sh mh fo ovf.  Each module's
docstring names the kernel file it follows; ``docs/schedulers.md`` summarises them.

Data (see ``_common``)
----------------------
* ``dest``: ``int64[rows, NFIELDS]``, one row per real server, columns ``W ACT
  INACT FLAGS UTHR LTHR LASTW ADDR PORT FWD``.  Row order is the kernel's list order
  (row 0 = head); a row without ``F_AVAILABLE`` is not in the list.  The
  connection table owns ``ACT``/``INACT``; the config compiler owns the rest.
  ``FWD`` (the server's forwarding method, conntab ``FWD_*``) is read by the
  forwarding engine only, never by a scheduler.
* ``state``: one ``int64[k]`` array per service and algorithm, laid out by the
  algorithm's module (rr cursor, wrr marks, the lc-family tree, dh/sh/mh tables,
  the lblc/lblcr cache).  Build it once with ``mod.new_state(dest, **options)``.

Kernel-level calling convention (for numba code such as the forwarding core)
---------------------------------------------------------------------------
Every module ``m = pylvs.sched.ALGORITHMS[name]`` exports these ``@njit`` functions;
call them directly from your own ``@njit`` code (all integers are int64-compatible,
addresses and ports in host order, ``now`` in milliseconds):

* ``m._schedule_kernel(dest, state, caddr, cport, daddr, dport, now) -> row``
  one decision; -1 = no server (answer ICMP port unreachable).  It does NOT count
  the new connection: do that with ``_bind_kernel``.
* ``m._batch_kernel(dest, state, caddr, cport, daddr, dport, now, bind, out)``
  decisions for arrays of keys into ``out`` (int64); ``bind`` is a ``BIND_*`` mode:
  0 decide only, 1 charge each chosen server a new (inactive) connection before
  the next decision, 2 the same but counted active (benchmark stress for sed/nq).
* ``_common._bind_kernel(dest, row)``, ``_unbind_kernel(dest, row, was_active)``,
  ``_set_active_kernel(dest, row, active)``: connection counters and the OVERLOAD
  flag (ip_vs_conn.c rules).  After ANY change to a row's counters, weight or
  flags call ``m._update_kernel(dest, state, row)`` (O(log n) for lc/wlc/sed/nq,
  a no-op for the rest).
* ``m._config_kernel(dest, state)`` after a dest is added, deleted or edited
  (weight, thresholds): wrr marks, dh/sh/mh tables, the lc-family tree.
* ``m._gc_kernel(dest, state, now)`` (lblc, lblcr only) every
  ``_loctab.CHECK_EXPIRE_INTERVAL_MS`` (the kernel's 60 s timer).
* ``_dispatch`` has the same functions switched on ``ALG_ID[name]`` for code that
  holds services of several algorithms.
* All kernels are ``cache=True``; numba re-validates a cached function only against
  its own file, so after editing ``_common``/``_tree``/``_loctab`` delete
  ``pylvs/sched/__pycache__/*.nb[ic]``.

Python entry points: ``Scheduler(name, capacity, **options)`` with ``pick`` (one
decision, all five key arguments positional, no checks: the fast path) or
``decide`` (keywords, checked), ``pick_batch`` (arrays in, rows out), ``bind``/``unbind``/``set_active``,
``add_dest``/``edit_dest``/``remove_dest``, ``gc``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from types import ModuleType

import numpy as np

from pylvs import kernel_cache  # noqa: F401 - stale numba caches go before a kernel loads

from . import dh, fo, lblc, lblcr, lc, mh, nq, ovf, rr, sed, sh, wlc, wrr
from ._common import (
    ACT,
    ADDR,
    BIND_ACTIVE,
    BIND_NEW,
    BIND_NONE,
    F_AVAILABLE,
    F_OVERLOAD,
    FLAGS,
    FWD,
    INACT,
    LASTW,
    LTHR,
    NFIELDS,
    PORT,
    UTHR,
    WEIGHT_MAX,
    W,
    _bind_kernel,
    _set_active_kernel,
    _unbind_kernel,
    check_dests,
    new_dests,
)

ALGORITHMS: dict[str, ModuleType] = {
    m.NAME: m for m in (rr, wrr, lc, wlc, sed, nq, lblc, lblcr, dh, sh, mh, fo, ovf)
}
DEFAULT = "wlc"  # ipvsadm's default scheduler

__all__ = [
    "ACT",
    "ADDR",
    "ALGORITHMS",
    "DEFAULT",
    "FLAGS",
    "FWD",
    "F_AVAILABLE",
    "F_OVERLOAD",
    "INACT",
    "LASTW",
    "LTHR",
    "NFIELDS",
    "PORT",
    "UTHR",
    "Scheduler",
    "W",
    "WEIGHT_MAX",
    "check_dests",
    "get",
    "new_dests",
    "set_dest_row",
]


def get(name: str) -> ModuleType:
    """The scheduler module registered under the ipvsadm name ``name``."""
    try:
        return ALGORITHMS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown scheduler {name!r}; choose one of {', '.join(ALGORITHMS)}"
        ) from None


def set_dest_row(dest: np.ndarray, row: int, weight: int | None, u_threshold: int | None = None,
                 l_threshold: int | None = None, *, add: bool = False, addr: int = 0, port: int = 0,
                 fwd: int | None = None) -> None:
    """The per-row part of ``ipvsadm -a`` (``add=True``) or ``ipvsadm -e`` on ``dest[row]``,
    with ``__ip_vs_update_dest`` rules; no checks and no ``_config_kernel`` call (the
    caller runs it once after all its edits).  ``None`` leaves a field unchanged (edit).
    ``fwd``: the forwarding method (conntab ``FWD_*``) of new connections to the row;
    connections already made keep theirs, as the kernel's keep their flags.

    * add: the row is cleared (counters too), ``LASTW = weight``, ``F_AVAILABLE`` set,
      ``FWD = fwd`` (None: 0, Masq).
    * edit: ``LASTW`` keeps the last non-zero weight; a new upper threshold of 0 or
      above the old one clears ``F_OVERLOAD``; counters are not touched."""
    d = dest[row]
    if add:
        d[:] = 0
        d[W] = 0 if weight is None else weight
        d[LASTW] = d[W]  # __ip_vs_update_dest: on add last_weight = weight
        d[UTHR] = 0 if u_threshold is None else u_threshold
        d[LTHR] = 0 if l_threshold is None else l_threshold
        d[ADDR] = addr
        d[PORT] = port
        d[FWD] = 0 if fwd is None else fwd
        d[FLAGS] = F_AVAILABLE
        return
    if fwd is not None:
        d[FWD] = fwd
    if weight is not None:
        if weight != 0:
            d[LASTW] = weight  # keep the last non-zero weight
        d[W] = weight
    new_u = d[UTHR] if u_threshold is None else u_threshold
    if new_u == 0 or new_u > d[UTHR]:
        d[FLAGS] &= ~F_OVERLOAD
    d[UTHR] = new_u
    if l_threshold is not None:
        d[LTHR] = l_threshold


def _as_keys(a, dtype, n: int, what: str) -> np.ndarray:
    if a is None:
        return np.zeros(n, dtype=dtype)
    a = np.asarray(a)
    if a.ndim != 1 or a.shape[0] != n:
        raise ValueError(f"{what} must be 1-D with the same length as caddr ({n}), got shape {a.shape}")
    if a.dtype != dtype:
        if a.size and (a.min() < 0 or a.max() > np.iinfo(dtype).max):
            raise ValueError(f"{what} values must fit {np.dtype(dtype).name}")
        a = a.astype(dtype)
    return np.ascontiguousarray(a)


class Scheduler:
    """One service's scheduler: the dest array, the state array and thin calls
    into the numba kernels.  ``dest``/``state`` are public so a caller can hand
    them to its own numba code."""

    def __init__(self, name: str, capacity: int | None = None, dest: np.ndarray | None = None, **options) -> None:
        self.module = get(name)
        self.name = self.module.NAME
        if dest is None:
            if capacity is None:
                raise ValueError("give capacity (max real servers) or a dest array")
            dest = new_dests(capacity)
        check_dests(dest)
        self.dest = dest
        in_list = np.flatnonzero(dest[:, FLAGS] & F_AVAILABLE)
        # rows are filled from the end: the kernel adds at the list head
        self._head = int(in_list[0]) if in_list.size else dest.shape[0]
        try:
            self.state = self.module.new_state(dest, **options)
        except TypeError as e:
            raise ValueError(f"bad options for scheduler {self.name!r}: {e}") from None
        m = self.module
        self._schedule = m._schedule_kernel
        self._batch = m._batch_kernel
        self._update = m._update_kernel
        self._config = m._config_kernel
        self.pick = functools.partial(m._schedule_kernel, dest, self.state)

    # -- decisions -----------------------------------------------------------
    # ``pick(caddr, cport, daddr, dport, now)`` is bound in __init__ as a
    # functools.partial straight onto the numba dispatcher: the thinnest call
    # Python has (all five arguments positional, ints).  ``decide`` is the
    # friendly, checked version.
    pick: Callable[[int, int, int, int, int], int]

    def decide(self, caddr: int = 0, cport: int = 0, daddr: int = 0, dport: int = 0, now: int = 0) -> int:
        """One decision: the chosen row, or -1.  Does not count a connection."""
        for what, v, hi in (("caddr", caddr, 0xFFFFFFFF), ("cport", cport, 0xFFFF),
                            ("daddr", daddr, 0xFFFFFFFF), ("dport", dport, 0xFFFF)):
            if not isinstance(v, (int, np.integer)) or not 0 <= v <= hi:
                raise ValueError(f"{what} must be an int in 0..{hi} (host order), got {v!r}")
        return self._schedule(self.dest, self.state, int(caddr), int(cport), int(daddr), int(dport), int(now))

    def pick_batch(self, caddr, cport=None, daddr=None, dport=None, now: int = 0,
                   bind: int = BIND_NEW, out: np.ndarray | None = None) -> np.ndarray:
        """Decisions for arrays of keys (addresses uint32, ports uint16, host order).
        ``bind``: BIND_NONE decide only; BIND_NEW (default) every chosen server
        gets a new (inactive) connection before the next decision, as a burst of
        new connections would; BIND_ACTIVE counts it active at once."""
        if bind not in (BIND_NONE, BIND_NEW, BIND_ACTIVE):
            raise ValueError("bind must be BIND_NONE (0), BIND_NEW (1) or BIND_ACTIVE (2)")
        caddr = np.asarray(caddr)
        if caddr.ndim != 1:
            raise ValueError(f"caddr must be 1-D, got shape {caddr.shape}")
        n = caddr.shape[0]
        caddr = _as_keys(caddr, np.uint32, n, "caddr")
        cport = _as_keys(cport, np.uint16, n, "cport")
        daddr = _as_keys(daddr, np.uint32, n, "daddr")
        dport = _as_keys(dport, np.uint16, n, "dport")
        if out is None:
            out = np.empty(n, dtype=np.int64)
        elif out.dtype != np.int64 or out.shape != (n,):
            raise ValueError(f"out must be int64 of shape ({n},)")
        self._batch(self.dest, self.state, caddr, cport, daddr, dport, int(now), int(bind), out)
        return out

    # -- connection counters -------------------------------------------------
    def _row(self, row: int) -> int:
        if not isinstance(row, (int, np.integer)) or not 0 <= row < self.dest.shape[0]:
            raise ValueError(f"row must be an int in 0..{self.dest.shape[0] - 1}, got {row!r}")
        return int(row)

    def bind(self, row: int) -> None:
        """A new connection on ``row`` (counted inactive until ESTABLISHED)."""
        row = self._row(row)
        _bind_kernel(self.dest, row)
        self._update(self.dest, self.state, row)

    def unbind(self, row: int, active: bool) -> None:
        """A connection on ``row`` expired; ``active`` = it was counted active."""
        row = self._row(row)
        if self.dest[row, ACT if active else INACT] <= 0:
            raise ValueError(f"row {row} has no {'active' if active else 'inactive'} connection to end")
        _unbind_kernel(self.dest, row, bool(active))
        self._update(self.dest, self.state, row)

    def set_active(self, row: int, active: bool) -> None:
        """A connection on ``row`` entered (True) or left (False) ESTABLISHED."""
        row = self._row(row)
        if self.dest[row, INACT if active else ACT] <= 0:
            raise ValueError(f"row {row} has no connection to move")
        _set_active_kernel(self.dest, row, bool(active))
        self._update(self.dest, self.state, row)

    # -- configuration ----------------------------------------------------------
    @staticmethod
    def _check_dest_args(weight, u_threshold, l_threshold) -> None:
        if weight is not None and not (isinstance(weight, (int, np.integer)) and 0 <= weight <= WEIGHT_MAX):
            raise ValueError(f"weight must be an int in 0..{WEIGHT_MAX}, got {weight!r}")
        for what, v in (("u_threshold", u_threshold), ("l_threshold", l_threshold)):
            if v is not None and not (isinstance(v, (int, np.integer)) and v >= 0):
                raise ValueError(f"{what} must be an int >= 0 (0 = none), got {v!r}")

    def add_dest(self, weight: int = 1, addr: int = 0, port: int = 0,
                 u_threshold: int = 0, l_threshold: int = 0) -> int:
        """Add a real server at the list head (as the kernel does); returns its row."""
        self._check_dest_args(weight, u_threshold, l_threshold)
        if not 0 <= addr <= 0xFFFFFFFF or not 0 <= port <= 0xFFFF:
            raise ValueError("addr must be a u32 and port a u16 (host order)")
        if self._head == 0:
            raise ValueError(f"no free row: capacity {self.dest.shape[0]} reached; build a larger Scheduler")
        self._head -= 1
        row = self._head
        set_dest_row(self.dest, row, weight, u_threshold, l_threshold, add=True, addr=addr, port=port)
        self._config(self.dest, self.state)
        return row

    def edit_dest(self, row: int, weight: int | None = None, u_threshold: int | None = None,
                  l_threshold: int | None = None) -> None:
        """ipvsadm -e: new weight and/or thresholds (__ip_vs_update_dest rules)."""
        row = self._row(row)
        if not self.dest[row, FLAGS] & F_AVAILABLE:
            raise ValueError(f"row {row} is not a configured real server")
        self._check_dest_args(weight, u_threshold, l_threshold)
        set_dest_row(self.dest, row, weight, u_threshold, l_threshold)
        self._config(self.dest, self.state)

    def remove_dest(self, row: int) -> None:
        """ipvsadm -d: the row leaves the list; its counters stay until its
        connections end (the kernel's trash)."""
        row = self._row(row)
        if not self.dest[row, FLAGS] & F_AVAILABLE:
            raise ValueError(f"row {row} is not a configured real server")
        self.dest[row, FLAGS] &= ~F_AVAILABLE
        self._config(self.dest, self.state)

    def gc(self, now: int) -> None:
        """One run of the lblc/lblcr collector (the kernel's 60 s timer)."""
        gc = getattr(self.module, "_gc_kernel", None)
        if gc is None:
            raise ValueError(f"scheduler {self.name!r} has no cache to collect")
        gc(self.dest, self.state, int(now))
