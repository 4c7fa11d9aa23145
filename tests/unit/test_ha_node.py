"""The pulse node table (pylvs.ha.node) and the heartbeat wire format (pylvs.ha.heartbeat).

The scenarios of reference 2.4 ("Consequences") are played on two Nodes joined by a
simulated network: a SEND_* action of one node is a heartbeat the other receives at once,
unless the link is cut.
"""

from __future__ import annotations

import struct

import pytest

from pylvs.ha import heartbeat as hb
from pylvs.ha import node as nd

KEEPALIVE, DEADTIME = 2.0, 5.0
STEP = 0.1  # simulated clock resolution


# --- the wire format ----------------------------------------------------------------------

def test_heartbeat_bytes_are_little_endian_as_on_x86():
    assert hb.encode(hb.HEARTBEAT_RUNNING) == bytes([0xDA, 0xDB, 0xAD, 0xBD])
    assert hb.encode(hb.HEARTBEAT_STOPPED) == bytes([0xBD, 0xDA, 0xBD, 0xAD])


@pytest.mark.parametrize("order", ["<I", ">I"])
def test_either_byte_order_is_accepted(order):
    got = hb.decode(struct.pack(order, hb.HEARTBEAT_STOPPED), "10.0.0.2", {"10.0.0.2"})
    assert got == hb.Received(hb.HEARTBEAT_STOPPED)


@pytest.mark.parametrize("data,src,reason", [
    (hb.encode(hb.HEARTBEAT_RUNNING), "10.0.0.9", hb.UNEXPECTED_SOURCE),
    (hb.encode(hb.HEARTBEAT_RUNNING) + b"\0", "10.0.0.2", hb.BAD_LENGTH),
    (b"\xda\xdb\xad", "10.0.0.2", hb.BAD_LENGTH),
    (hb.encode(hb.FOS_HEARTBEAT_RUNNING), "10.0.0.2", hb.INCOMPATIBLE),
    (hb.encode(0x12345678), "10.0.0.2", hb.INCOMPATIBLE),
])
def test_refusals_have_a_reason_and_a_log_line(data, src, reason):
    got = hb.decode(data, src, {"10.0.0.2", "10.9.0.2"})
    assert got.magic is None and got.reason == reason and src in got.message


def test_no_magic_reads_as_another_in_the_other_byte_order():
    swapped = {struct.unpack(">I", struct.pack("<I", m))[0] for m in hb.MAGIC_NAMES}
    assert not swapped & set(hb.MAGIC_NAMES)


# --- the table ------------------------------------------------------------------------------

def test_every_event_has_a_row_for_every_state():
    import itertools

    for event in {r.event for r in nd.RULES}:
        for active, master, usable in itertools.product((False, True), repeat=3):
            n = nd.Node(master=master, keepalive=KEEPALIVE, deadtime=DEADTIME, active=active, linkfail=not usable)
            assert n.step(0.0, event).rule.event == event


@pytest.mark.parametrize("event,active,master,usable,actions,log", [
    (nd.DEAD_DUE, False, False, True, nd.ACTIVATE, "partner dead: activating lvs"),
    (nd.DEAD_DUE, False, False, False, (), None),
    (nd.DEAD_DUE, True, True, True, (), None),
    (nd.RECV_RUNNING, True, False, True, (nd.SEND_RUNNING, *nd.DEACTIVATE), "partner active: deactivating LVS"),
    (nd.RECV_RUNNING, True, True, True, (nd.RUN_ACTIVE_CMD, nd.SEND_ARPS), "partner active: resending arps"),
    (nd.RECV_RUNNING, False, True, True, (), None),
    (nd.RECV_STOPPED, False, True, True, nd.ACTIVATE, "backup inactive: activating lvs"),
    (nd.RECV_STOPPED, False, False, True, nd.ACTIVATE, "primary inactive: activating lvs"),
    (nd.RECV_STOPPED, False, False, False, (), None),
    (nd.RECV_STOPPED, True, False, True, (), None),
    (nd.CHILD_EXIT, True, True, True, nd.DEACTIVATE, "lvs daemon exited: deactivating"),
    (nd.SIG_TERM, True, True, True, (*nd.DEACTIVATE, nd.EXIT), "shutting down"),
    (nd.SIG_TERM, False, True, True, (nd.EXIT,), "shutting down"),
    (nd.SIG_HUP, False, True, True, (nd.RELOAD,), None),
])
def test_reference_table_rows(event, active, master, usable, actions, log):
    n = nd.Node(master=master, keepalive=KEEPALIVE, deadtime=DEADTIME, active=active,
                childfail=not usable)
    step = n.step(0.0, event)
    assert step.actions == actions and step.log == log


def test_activate_and_deactivate_follow_pulse_order():
    # reference 2.5: active_cmd, start lvs (and its sync master), ARPs / inactive_cmd, stop lvs
    assert nd.ACTIVATE == (nd.RUN_ACTIVE_CMD, nd.LVS_ACTIVE, nd.SEND_ARPS)
    assert nd.DEACTIVATE == (nd.RUN_INACTIVE_CMD, nd.LVS_STANDBY)


def test_childfail_clears_only_on_a_running_heartbeat():
    n = nd.Node(master=False, keepalive=KEEPALIVE, deadtime=DEADTIME, active=True)
    n.step(0.0, nd.CHILD_EXIT)
    assert not n.active and n.childfail
    assert n.heartbeat(0.1, hb.HEARTBEAT_STOPPED).actions == ()  # no activation while CHILDFAIL
    n.heartbeat(0.2, hb.HEARTBEAT_RUNNING)
    assert not n.childfail


def test_linkfail_deactivates_and_blocks_activation_until_restored():
    n = nd.Node(master=True, keepalive=KEEPALIVE, deadtime=DEADTIME, active=True)
    assert n.step(0.0, nd.LINK_DOWN).actions == nd.DEACTIVATE
    assert n.linkfail and not n.active
    assert [s.actions for s in n.tick(DEADTIME + 1)] == [(nd.SEND_STOPPED,), ()]
    n.step(DEADTIME + 2, nd.LINK_UP)
    assert not n.linkfail
    assert n.step(DEADTIME + 3, nd.DEAD_DUE).actions == nd.ACTIVATE


def test_refresh_runs_only_while_active():
    n = nd.Node(master=True, keepalive=KEEPALIVE, deadtime=DEADTIME, garp_refresh=10.0)
    n.start(0.0)
    assert n.garp_at == float("inf")
    n.step(1.0, nd.DEAD_DUE)  # activates
    assert n.garp_at == 11.0
    assert [s.actions for s in n.tick(11.0) if s.rule.event == nd.GARP_DUE] == [(nd.REFRESH_ARPS,)]
    assert n.garp_at == 21.0
    n.step(12.0, nd.SIG_TERM)
    assert n.garp_at == float("inf")


# --- two nodes on a simulated wire --------------------------------------------------------------

class Pair:
    """Primary and backup; `cut` drops heartbeats; `alive` False is a powered-off box."""

    def __init__(self, forceactive: tuple[bool, bool] = (False, False), start: tuple[float, float] = (0.0, 0.0)):
        self.nodes = [nd.Node(master=True, keepalive=KEEPALIVE, deadtime=DEADTIME),
                      nd.Node(master=False, keepalive=KEEPALIVE, deadtime=DEADTIME)]
        self.alive = [False, False]
        self.pending_start = list(zip(start, forceactive, strict=True))
        self.cut = False
        self.now = 0.0
        self.logs: list[tuple[int, str]] = []
        self.arps = [0, 0]
        self.wire: list[tuple[int, int]] = []  # (to node, magic) in flight

    def _do(self, i: int, steps) -> None:
        for step in steps:
            if step.log:
                self.logs.append((i, step.log))
            for action in step.actions:
                if action in (nd.SEND_RUNNING, nd.SEND_STOPPED) and not self.cut:
                    magic = hb.HEARTBEAT_RUNNING if action == nd.SEND_RUNNING else hb.HEARTBEAT_STOPPED
                    self.wire.append((1 - i, magic))  # arrives one STEP later: messages cross
                if action == nd.SEND_ARPS:
                    self.arps[i] += 1

    def run_until(self, t: float) -> None:
        while self.now < t:
            wire, self.wire = self.wire, []
            for i, magic in wire:
                if self.alive[i]:
                    self._do(i, [self.nodes[i].heartbeat(self.now, magic)])
            for i, (at, force) in enumerate(self.pending_start):
                if at is not None and self.now >= at:
                    self.alive[i] = True
                    self.pending_start[i] = (None, False)
                    self._do(i, self.nodes[i].start(self.now, force))
            for i in (0, 1):
                if self.alive[i]:
                    self._do(i, self.nodes[i].tick(self.now))
            self.now = round(self.now + STEP, 6)

    def kill(self, i: int) -> None:
        self.alive[i] = False
        self.nodes[i].active = False

    def restart(self, i: int, forceactive: bool = False) -> None:
        n = self.nodes[i]
        self.nodes[i] = nd.Node(master=n.master, keepalive=KEEPALIVE, deadtime=DEADTIME)
        self.pending_start[i] = (self.now, forceactive)

    @property
    def active(self) -> list[bool]:
        return [n.active and a for n, a in zip(self.nodes, self.alive, strict=True)]


def test_cold_start_master_wins():
    # Both send STOPPED at once, so both activate; the master's RUNNING makes the backup yield.
    p = Pair()
    p.run_until(20)
    assert p.active == [True, False]
    assert (0, "backup inactive: activating lvs") in p.logs
    assert (1, "primary inactive: activating lvs") in p.logs
    assert (1, "partner active: deactivating LVS") in p.logs
    assert (0, "partner active: resending arps") in p.logs


def test_primary_started_later_within_deadtime_leaves_the_backup_active():
    # pulse as written: the primary's first STOPPED activates the backup, whose next
    # heartbeat is RUNNING, which a standby primary ignores (no failback).
    p = Pair(start=(1.0, 0.0))
    p.run_until(20)
    assert p.active == [False, True]


def test_primary_dies_backup_takes_over_within_deadtime():
    p = Pair()
    p.run_until(20)
    p.kill(0)
    killed = p.now
    while not p.active[1]:
        p.run_until(p.now + STEP)
    assert p.now - killed <= DEADTIME + STEP * 2
    assert (1, "partner dead: activating lvs") in p.logs


def test_recovered_primary_stays_standby():
    p = Pair()
    p.run_until(20)
    p.kill(0)
    p.run_until(30)
    p.restart(0)
    p.run_until(60)
    assert p.active == [False, True]  # no automatic failback


def test_recovered_primary_with_forceactive_takes_back():
    p = Pair()
    p.run_until(20)
    p.kill(0)
    p.run_until(30)
    p.restart(0, forceactive=True)
    p.run_until(60)
    assert p.active == [True, False]


def test_healed_partition_resolves_to_the_master_with_a_rearp():
    p = Pair()
    p.run_until(20)
    p.cut = True
    p.run_until(40)
    assert p.active == [True, True]  # split brain while cut
    arps = p.arps[0]
    p.cut = False
    p.run_until(50)
    assert p.active == [True, False]
    assert p.arps[0] > arps  # the master re-ARPed after the backup's last RUNNING
