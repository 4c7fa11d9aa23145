"""The IPVS defences against a full connection table: drop_entry, drop_packet, secure_tcp.

The kernel's ``update_defense_level`` (ip_vs_ctl.c) runs once a second and compares the
free memory with ``amemthresh`` pages; pylvs's table has a fixed capacity, so here the
measure is the table's fill level: *short of room* means fewer than ``amemthresh`` free
entries.  Each defence has the kernel's four modes (ipvs-sysctl.rst):

* 0: off;
* 1: automatic, off now: it engages (and the mode reads 2) when the table is short of room;
* 2: automatic, engaged: it disengages (and the mode reads 1) when there is room again;
* 3: always on.

What an engaged defence does (reference 7.7):

* ``drop_entry``: once a second, 1/32 of the table is scanned from a random slot and
  half-open TCP entries (SYN_RECV, SYNACK) are dropped, and established or UDP entries idle
  for 60 s with 1..8 incoming packets at a rate that favours the busiest (todrop_entry).
  pylvs adds one thing a fixed table needs: a new connection that finds the table full
  takes the place of a half-open entry instead of being refused.
* ``drop_packet``: one new connection in ``rate`` is dropped before scheduling
  (ip_vs_todrop), where ``rate = amemthresh / (amemthresh - free)`` in the automatic modes
  (every one when nothing is free) and ``am_droprate`` in mode 3.
* ``secure_tcp``: the stricter TCP state table (``conntab.TCP_TRANSITIONS_DOS``) and a
  short timeout for half-open entries (``conntab.SECURE_HALF_OPEN_TIMEOUT``).

Pure code over the table's meta slots: the forwarder calls ``tick`` under its gate.
"""

from __future__ import annotations

import dataclasses
import secrets

from pylvs.dataplane import conntab as ctm

AMEMTHRESH_DEFAULT = 1024  # the kernel's default (pages there, free entries here)
AM_DROPRATE_DEFAULT = 10  # the kernel's default: mode 3 of drop_packet drops 1 in 10
MODES = (0, 1, 2, 3)
DEFENSE_TIMER_PERIOD = 1.0  # seconds: ip_vs_ctl.c DEFENSE_TIMER_PERIOD (1*HZ)
KNOBS = ("drop_entry", "drop_packet", "secure_tcp")


@dataclasses.dataclass
class Defense:
    """The sysctls of the defences, as the kernel keeps them: the automatic modes move
    between 1 and 2 as the table fills and empties."""

    amemthresh: int = AMEMTHRESH_DEFAULT
    am_droprate: int = AM_DROPRATE_DEFAULT
    drop_entry: int = 0
    drop_packet: int = 0
    secure_tcp: int = 0

    def __post_init__(self) -> None:
        for name in KNOBS:
            if getattr(self, name) not in MODES:
                raise ValueError(f"{name} must be one of 0, 1, 2, 3, got {getattr(self, name)!r}")
        if self.amemthresh < 0:
            raise ValueError(f"amemthresh must be at least 0, got {self.amemthresh}")
        if self.am_droprate < 0:
            raise ValueError(f"am_droprate must be at least 0, got {self.am_droprate}")

    def argv(self) -> list[str]:
        """The ``pylvs lvs`` options that give a director these knobs (pulse hands them on)."""
        out: list[str] = []
        for name, default in (("amemthresh", AMEMTHRESH_DEFAULT), ("am_droprate", AM_DROPRATE_DEFAULT),
                              *((k, 0) for k in KNOBS)):  # fmt: skip
            if getattr(self, name) != default:
                out += ["--" + name.replace("_", "-"), str(getattr(self, name))]
        return out

    def update(self, t: ctm.ConnTable) -> bool:
        """update_defense_level on the table's fill level; whether it is short of room."""
        free = len(t.entries) - ctm.count(t)
        nomem = free < self.amemthresh
        meta = t.meta
        # drop_entry
        if self.drop_entry == 1 and nomem:
            self.drop_entry = 2
        elif self.drop_entry == 2 and not nomem:
            self.drop_entry = 1
        meta[ctm.M_DROPENTRY] = int(self.drop_entry in (2, 3))
        # drop_packet
        if self.drop_packet in (1, 2) and nomem:
            meta[ctm.M_DROP_RATE] = meta[ctm.M_DROP_COUNTER] = self.amemthresh // (self.amemthresh - free)
            self.drop_packet = 2
        elif self.drop_packet == 3:
            meta[ctm.M_DROP_RATE] = self.am_droprate
        else:
            meta[ctm.M_DROP_RATE] = 0
            if self.drop_packet == 2:
                self.drop_packet = 1
        # secure_tcp
        if self.secure_tcp == 1 and nomem:
            self.secure_tcp = 2
        elif self.secure_tcp == 2 and not nomem:
            self.secure_tcp = 1
        meta[ctm.M_SECURE] = int(self.secure_tcp >= 2)
        return nomem

    def tick(self, t: ctm.ConnTable, now: float, start: int | None = None) -> int:
        """defense_work_handler: the levels, then the drop_entry scan while it is engaged
        (from ``start``, random by default).  Returns the entries the scan dropped."""
        self.update(t)
        if not t.meta[ctm.M_DROPENTRY]:
            return 0
        if start is None:
            start = secrets.randbelow(len(t.entries))
        return ctm.random_dropentry(t, now, start)

    def state(self, t: ctm.ConnTable) -> dict:
        """The knobs and what is engaged now (status, metrics)."""
        return {**dataclasses.asdict(self), "engaged": {
            "drop_entry": bool(t.meta[ctm.M_DROPENTRY]), "drop_packet": bool(t.meta[ctm.M_DROP_RATE]),
            "secure_tcp": bool(t.meta[ctm.M_SECURE])}, "drop_rate": int(t.meta[ctm.M_DROP_RATE]),
            "free": len(t.entries) - ctm.count(t)}  # fmt: skip
