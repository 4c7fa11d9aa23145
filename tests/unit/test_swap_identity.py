"""Swaps that never walk the connection table: entries hold their real server's identity
(tables.dest_id), which a server keeps across generations, so a health flap or a moved
block changes no entry (engine.swap; the table is made read-only to prove it)."""

from __future__ import annotations

import numpy as np
import pytest
from golden import CLIENT, HEAD, RIP1, RIP2, TWO_CF, VIP, VPORT, Director, ip2int, tcp, virtual

from pylvs.dataplane import conntab as ctm
from pylvs.dataplane import engine as en
from pylvs.dataplane import tables as tb


def _frozen_swap(d: Director, **kw) -> None:
    """``d.reconfigure`` with the entries read-only: any write there raises."""
    d.ct.entries.flags.writeable = False
    try:
        d.reconfigure(**kw)
    finally:
        d.ct.entries.flags.writeable = True


def _down(d: Director, rip: str) -> dict:
    return {tb.health_key(d.config, v, s): tb.HealthState(up=(str(s.address) != rip))
            for v in d.config.virtuals for s in v.servers}  # fmt: skip


@pytest.mark.parametrize("cf", [TWO_CF, TWO_CF.replace("     quiesce_server = 1\n", "")],
                         ids=["quiesced-at-weight-0", "removed-and-back"])
def test_health_flaps_swap_without_touching_an_entry(cf):
    d = Director(cf)
    [(_, _, row, _)] = d.send([tcp(CLIENT, VIP, 1111, VPORT)])
    rip = d.rip(row)
    other = RIP2 if rip == RIP1 else RIP1
    for _ in range(3):  # the other server flaps: down, up
        _frozen_swap(d, health=_down(d, other))
        _frozen_swap(d, health={})
    [(v, reason, row2, _)] = d.send([tcp(CLIENT, VIP, 1111, VPORT, "A", seq=1001)])
    assert (v, reason, d.rip(row2)) == (en.V_NAT, "nat_in", rip)
    n = ctm.lookup_in(d.ct, 6, ip2int(CLIENT), 1111, ip2int(VIP), VPORT, 1000.0)
    assert ctm.dest_row(d.ct, n) == row2


def test_a_moved_block_is_followed_through_the_identity_map():
    d = Director(TWO_CF)
    [(_, _, row_a, _)] = d.send([tcp(CLIENT, VIP, 1111, VPORT)])
    rip_a = d.rip(row_a)
    ident = int(d.tables.dest_id[row_a])
    many = [("web1", RIP1, None, 1), ("web2", RIP2, None, 1)] + [
        (f"x{k}", f"10.0.1.{k}", None, 1) for k in range(1, 21)]
    _frozen_swap(d, cf=HEAD.format(network="nat") + virtual("www", VIP, VPORT, sched="wlc", servers=many))
    row = int(d.tables.id_row[ident])
    assert row != row_a and d.rip(row) == rip_a  # moved, same server, same identity
    [(v, _, got, _)] = d.send([tcp(CLIENT, VIP, 1111, VPORT, "A", seq=1001)])
    assert v == en.V_NAT and got == row


def test_entries_of_a_quiesce_reset_leave_a_server_whose_identity_is_freed():
    """The one walk left: entries that stopped counting (quiesce_server's reset) may name a
    server whose row, no longer counted, is freed; the swap unbinds them, so a new server
    given the same identity never inherits them."""
    d = Director(TWO_CF.replace("     quiesce_server = 1\n", ""))  # a down server leaves the list
    [(_, _, row, _)] = d.send([tcp(CLIENT, VIP, 1111, VPORT)])
    rip = d.rip(row)
    assert ctm.reset_counts(d.ct, np.array([row])) == 1
    assert d.ct.meta[ctm.M_UNCOUNTED] == 1
    ident = int(d.tables.dest_id[row])
    d.reconfigure(health=_down(d, rip))  # removed now: keeps its row this generation
    assert ctm.dest_row(d.ct, _index(d)) == row
    d.reconfigure(health=_down(d, rip))  # not counted, out of the list: the row is freed
    assert d.tables.dest_id[row] == -1 and ident not in d.tables.dest_id
    assert ctm.live_entries(d.ct)[0].dest == -1 and d.ct.entries["dest_id"][_index(d)] == -1
    ctm.remove(d.ct, _index(d))
    assert d.ct.meta[ctm.M_UNCOUNTED] == 0


def _index(d: Director) -> int:
    return ctm.live_entries(d.ct)[0].index
