# ruff: noqa: E501  (the rule table is read across, one row per line)
"""The pulse node as a step function: events and a clock in, actions out.

Rules (reference 2.3-2.5 and 2.7, pulse.c walked line by line):

* Two deadlines: ``send_at`` (every ``keepalive`` s: RUNNING when active, else STOPPED;
  only when ``backup_active = 1``) and ``dead_at`` (``deadtime`` s after the last valid
  heartbeat, re-armed after every expiry).
* The master (the node owning ``primary``) wins ties: when both are active, the backup
  deactivates on the master's RUNNING and the master re-ARPs.  A recovered primary starts
  standby and stays standby (no automatic failback) unless started ``--forceactive``.
* LINKFAIL (``monitor_links``: a heartbeat NIC lost its carrier) and CHILDFAIL (the lvs
  daemon died) keep a node from activating; CHILDFAIL ends when the peer is heard active.
* pylvs adds one row: while active, every ``garp_refresh`` s announce the addresses again
  (``garp_due``), so a dead peer that left its VIP configured cannot keep clients (docs/ha.md).

``RULES`` is the whole behaviour, one row per (event, condition); ``Node.step`` only
finds the first matching row and returns its actions with the node's new flags.  The
adapter (``pylvs.ha.pulse``) turns actions into sockets, processes and signals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from pylvs.ha.heartbeat import HEARTBEAT_RUNNING, HEARTBEAT_STOPPED

# --- events ------------------------------------------------------------------------------
START = "start"  # pulse has its sockets; LVS start-up actions (reference 2.1 step 9)
SEND_DUE = "send_due"  # send_at passed
DEAD_DUE = "dead_due"  # dead_at passed: no valid heartbeat for deadtime
GARP_DUE = "garp_due"  # pylvs: garp_refresh passed while active
RECV_RUNNING = "recv_running"  # a valid RUNNING heartbeat
RECV_STOPPED = "recv_stopped"  # a valid STOPPED heartbeat
RECV_OTHER = "recv_other"  # a valid HOLD/HELD heartbeat: accepted, logic disabled (2.2)
LINK_DOWN = "link_down"  # monitor_links: a heartbeat NIC lost its carrier
LINK_UP = "link_up"  # ... and has it back
CHILD_EXIT = "child_exit"  # the lvs daemon ended without being asked
SIG_TERM = "sigterm"  # SIGTERM / SIGINT
SIG_HUP = "sighup"  # reload

# --- actions -----------------------------------------------------------------------------
SEND_RUNNING = "send_running"  # a heartbeat to the peer's public (and private) address
SEND_STOPPED = "send_stopped"
RUN_ACTIVE_CMD = "run_active_cmd"  # lvs.cf active_cmd, fire and forget
RUN_INACTIVE_CMD = "run_inactive_cmd"
LVS_ACTIVE = "lvs_active"  # the director takes the addresses and forwards
LVS_STANDBY = "lvs_standby"  # the director stops forwarding and releases the addresses
SEND_ARPS = "send_arps"  # gratuitous ARP for every address, garp_count times (send_arp)
REFRESH_ARPS = "refresh_arps"  # pylvs: one gratuitous ARP per address
RELOAD = "reload"  # re-read lvs.cf, forward SIGHUP to the director
EXIT = "exit"

# Composite actions, in pulse's order (reference 2.5).  pulse also switched the kernel's
# sync daemon (ipvsadm --start-daemon master|backup, reference 2.8) between the second and
# third step; here the director switches its own sync daemon with its role, inside
# LVS_ACTIVE / LVS_STANDBY, and starts it as backup when it starts standby.
ACTIVATE = (RUN_ACTIVE_CMD, LVS_ACTIVE, SEND_ARPS)
DEACTIVATE = (RUN_INACTIVE_CMD, LVS_STANDBY)
STARTUP = (RUN_INACTIVE_CMD,)  # LVS mode start-up (reference 2.1 step 9)

# --- flag changes a row makes ----------------------------------------------------------------
SET_ACTIVE, CLEAR_ACTIVE = "+active", "-active"
SET_LINKFAIL, CLEAR_LINKFAIL = "+linkfail", "-linkfail"
SET_CHILDFAIL, CLEAR_CHILDFAIL = "+childfail", "-childfail"

ANY = None  # a condition column that does not matter


class Rule(NamedTuple):
    event: str
    active: bool | None  # the node is active
    master: bool | None  # the node owns `primary`
    usable: bool | None  # neither LINKFAIL nor CHILDFAIL
    actions: tuple[str, ...]
    flags: tuple[str, ...]
    log: str | None  # pulse's own log line where it has one


# The event -> action table of reference 2.4 (LVS mode), plus 2.7 and pylvs's refresh row.
# First matching row wins.
RULES: tuple[Rule, ...] = (
    #    event          active master usable actions                            flags              log
    Rule(START,         ANY,   ANY,   ANY,   STARTUP,                           (),                None),
    Rule(SEND_DUE,      True,  ANY,   ANY,   (SEND_RUNNING,),                   (),                None),
    Rule(SEND_DUE,      False, ANY,   ANY,   (SEND_STOPPED,),                   (),                None),
    Rule(DEAD_DUE,      False, ANY,   True,  ACTIVATE,                          (SET_ACTIVE,),     "partner dead: activating lvs"),
    Rule(DEAD_DUE,      ANY,   ANY,   ANY,   (),                                (),                None),
    Rule(RECV_RUNNING,  True,  False, ANY,   (SEND_RUNNING, *DEACTIVATE),       (CLEAR_ACTIVE,),   "partner active: deactivating LVS"),
    Rule(RECV_RUNNING,  True,  True,  ANY,   (RUN_ACTIVE_CMD, SEND_ARPS),       (),                "partner active: resending arps"),
    Rule(RECV_RUNNING,  False, ANY,   ANY,   (),                                (CLEAR_CHILDFAIL,), None),
    Rule(RECV_STOPPED,  False, True,  True,  ACTIVATE,                          (SET_ACTIVE,),     "backup inactive: activating lvs"),
    Rule(RECV_STOPPED,  False, False, True,  ACTIVATE,                          (SET_ACTIVE,),     "primary inactive: activating lvs"),
    Rule(RECV_STOPPED,  ANY,   ANY,   ANY,   (),                                (),                None),
    Rule(RECV_OTHER,    ANY,   ANY,   ANY,   (),                                (),                None),
    Rule(GARP_DUE,      True,  ANY,   ANY,   (REFRESH_ARPS,),                   (),                None),
    Rule(GARP_DUE,      ANY,   ANY,   ANY,   (),                                (),                None),
    Rule(LINK_DOWN,     True,  ANY,   ANY,   DEACTIVATE,                        (SET_LINKFAIL, CLEAR_ACTIVE), "Local NIC link failure: Pulse disabled"),
    Rule(LINK_DOWN,     ANY,   ANY,   ANY,   (),                                (SET_LINKFAIL,),   "Local NIC link failure: Pulse disabled"),
    Rule(LINK_UP,       ANY,   ANY,   ANY,   (),                                (CLEAR_LINKFAIL,), "Local NIC link(s) restored: Pulse enabled"),
    Rule(CHILD_EXIT,    True,  ANY,   ANY,   DEACTIVATE,                        (CLEAR_ACTIVE, SET_CHILDFAIL), "lvs daemon exited: deactivating"),
    Rule(CHILD_EXIT,    ANY,   ANY,   ANY,   (),                                (SET_CHILDFAIL,),  "lvs daemon exited"),
    Rule(SIG_TERM,      True,  ANY,   ANY,   (*DEACTIVATE, EXIT),               (CLEAR_ACTIVE,),   "shutting down"),
    Rule(SIG_TERM,      ANY,   ANY,   ANY,   (EXIT,),                           (),                "shutting down"),
    Rule(SIG_HUP,       ANY,   ANY,   ANY,   (RELOAD,),                         (),                None),
)  # fmt: skip

DEADLINE_EVENTS = (SEND_DUE, DEAD_DUE, GARP_DUE)  # checked in this order by tick()


class Step(NamedTuple):
    """What one event did: the actions to carry out, the log line, the matched rule."""

    actions: tuple[str, ...]
    log: str | None
    rule: Rule


@dataclass
class Node:
    """One router's pulse state.  Times are the caller's clock (seconds, monotonic).

    master: this node owns ``primary``; backup_active: a peer exists (heartbeats are sent
    only then); garp_refresh: 0 turns the refresh row off."""

    master: bool
    keepalive: float
    deadtime: float
    backup_active: bool = True
    garp_refresh: float = 0.0
    active: bool = False
    linkfail: bool = False
    childfail: bool = False
    send_at: float = 0.0
    dead_at: float = 0.0
    garp_at: float = float("inf")
    history: list[Step] = field(default_factory=list, repr=False)

    @property
    def usable(self) -> bool:
        return not (self.linkfail or self.childfail)

    def start(self, now: float, forceactive: bool = False) -> list[Step]:
        """Start-up (reference 2.1 step 9): the start-up actions, then ``--forceactive``."""
        self.send_at = now  # the first heartbeat goes out at once
        self.dead_at = now + self.deadtime
        steps = [self.step(now, START)]
        if forceactive:
            steps.append(self._apply(now, Rule(START, ANY, ANY, ANY, ACTIVATE, (SET_ACTIVE,),
                                               "forced active (--forceactive)")))
        return steps

    def next_deadline(self) -> float:
        return min(self.send_at if self.backup_active else float("inf"), self.dead_at, self.garp_at)

    def tick(self, now: float) -> list[Step]:
        """Every deadline that has passed, as its event."""
        steps = []
        if self.backup_active and now >= self.send_at:
            steps.append(self.step(now, SEND_DUE))
        if now >= self.dead_at:
            steps.append(self.step(now, DEAD_DUE))
        if now >= self.garp_at:
            steps.append(self.step(now, GARP_DUE))
        return steps

    def heartbeat(self, now: float, magic: int) -> Step:
        """A valid heartbeat (already judged by ``heartbeat.decode``)."""
        self.dead_at = now + self.deadtime  # any valid heartbeat re-arms dead_at
        event = {HEARTBEAT_RUNNING: RECV_RUNNING, HEARTBEAT_STOPPED: RECV_STOPPED}.get(magic, RECV_OTHER)
        return self.step(now, event)

    def step(self, now: float, event: str) -> Step:
        for rule in RULES:
            if rule.event == event and self._matches(rule):
                return self._apply(now, rule)
        raise AssertionError(f"no rule for {event}")  # the table ends each event with a catch-all

    def _matches(self, rule: Rule) -> bool:
        return all(want is ANY or want == have for want, have in
                   ((rule.active, self.active), (rule.master, self.master), (rule.usable, self.usable)))

    def _apply(self, now: float, rule: Rule) -> Step:
        for flag in rule.flags:
            setattr(self, flag[1:], flag[0] == "+")
        # Re-arm the deadline that fired; the refresh deadline follows the active flag.
        if rule.event == SEND_DUE or SEND_RUNNING in rule.actions:
            self.send_at = now + self.keepalive
        if rule.event == DEAD_DUE:
            self.dead_at = now + self.deadtime
        if not self.active or self.garp_refresh <= 0:
            self.garp_at = float("inf")
        elif rule.event == GARP_DUE or SEND_ARPS in rule.actions or self.garp_at == float("inf"):
            self.garp_at = now + self.garp_refresh
        step = Step(rule.actions, rule.log, rule)
        self.history.append(step)
        del self.history[:-64]  # the recent past, for the status file and tests
        return step
