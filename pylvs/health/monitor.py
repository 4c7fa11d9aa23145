"""The nanny monitor as a pure step function: one ``ServerMonitor`` per (virtual service,
real server).  It follows reference 4.4 (state machine and timing), 4.5 (what happens on
availability and failure), 4.6 (slow start and load feedback) and 4.7 (forced up/down).

    m = ServerMonitor(MonitorParams.of(config, virtual, server))
    step = m.feed(PASS)          # a check passed -> Step(state, log, load_due, changed)
    if step.load_due:
        m.feed(LOAD, load=1.7)   # the 1-minute load average, None when the probe failed

No clock, no I/O, no logging here: the runner (pylvs/health/runner.py) owns time and
probes, and logs the ``Step.log`` line this module returns on transitions.

The whole behaviour is the table ``TRANSITIONS`` below: (mode, up, event) -> action.  Modes:
``normal`` (the checks decide), ``forced_up`` (SIGUSR2, "rose-coloured glasses": every
check reads as a pass) and ``forced_down`` (SIGUSR1, "opaque glasses": every check reads
as a failure).  ``FORCE_CLEAR`` (SIGHUP) returns to normal with ``count = N``, so the next
pass brings a down server back at once, as nanny does.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

# --- Constants and where they come from ------------------------------------------------
ADJUST_PERIOD = 20  # nanny adjusts the weight every 20 // interval passes (reference 4.4 step 5)
SLOW_START_SHIFT = 5  # first weight W0 = max(1, W >> 5) (reference 4.5)
LOAD_SCALE_DEFAULT = 10  # nanny -S: load feedback caps the weight at S * W (lvsd never passes -S)
REENTRY_ZERO_MEANS = 180  # nanny -a 0 -> 180 s in lvs mode (reference 4.1)
WEIGHT_MAX = 2**31 - 1  # ipvsadm 1.31's and the kernel's weight range (tables.compile rejects more)
LOAD_NEUTRAL = 1.0  # load feedback keeps the weight at a 1-minute load of exactly 1.0 (4.6)


class Event(enum.Enum):
    PASS = "check passed"
    FAIL = "check failed"
    FORCE_UP = "forced up"      # nanny SIGUSR2
    FORCE_DOWN = "forced down"  # nanny SIGUSR1
    FORCE_CLEAR = "forced clear"  # nanny SIGHUP
    LOAD = "load sample"


PASS, FAIL, FORCE_UP, FORCE_DOWN, FORCE_CLEAR, LOAD = (
    Event.PASS, Event.FAIL, Event.FORCE_UP, Event.FORCE_DOWN, Event.FORCE_CLEAR, Event.LOAD)

NORMAL, FORCED_UP, FORCED_DOWN = "normal", "forced_up", "forced_down"
MODES = (NORMAL, FORCED_UP, FORCED_DOWN)

# --- The transition table (reference 4.4 / 4.5 / 4.6 / 4.7) ------------------------------
# (mode, up, event) -> action.  Actions are the functions in ``_ACTIONS`` below:
#   count      count += 1; if count >= N: make available (weight W0, log "[ active ]")
#   keep       count += 1; on an adjust tick (4.4 step 5) slow start or ask for a load sample
#   takeout    count = 0; up = False (removal, or weight 0 with quiesce_server); log "[inactive]"
#   reset      count = 0
#   load       load feedback formula of 4.6 (only when the weight has reached W)
#   ignore     nothing changes (a load sample while down, a repeated force)
#   force_up   mode forced_up; make available now if down
#   force_down mode forced_down; take out now if up
#   clear      mode normal; count = N (reference 4.7 SIGHUP)
TRANSITIONS: dict[tuple[str, bool, Event], str] = {
    (NORMAL, False, PASS): "count",
    (NORMAL, True, PASS): "keep",
    (NORMAL, True, FAIL): "takeout",
    (NORMAL, False, FAIL): "reset",
    (NORMAL, True, LOAD): "load",
    (NORMAL, False, LOAD): "ignore",
    (NORMAL, False, FORCE_UP): "force_up",
    (NORMAL, True, FORCE_UP): "force_up",
    (NORMAL, False, FORCE_DOWN): "force_down",
    (NORMAL, True, FORCE_DOWN): "force_down",
    (NORMAL, False, FORCE_CLEAR): "ignore",
    (NORMAL, True, FORCE_CLEAR): "ignore",
    # rose-coloured glasses: every check reads as a pass, slow start still climbs
    (FORCED_UP, True, PASS): "keep",
    (FORCED_UP, True, FAIL): "keep",
    (FORCED_UP, True, LOAD): "load",
    (FORCED_UP, True, FORCE_UP): "ignore",
    (FORCED_UP, True, FORCE_DOWN): "force_down",
    (FORCED_UP, True, FORCE_CLEAR): "clear",
    # opaque glasses: every check reads as a failure
    (FORCED_DOWN, False, PASS): "reset",
    (FORCED_DOWN, False, FAIL): "reset",
    (FORCED_DOWN, False, LOAD): "ignore",
    (FORCED_DOWN, False, FORCE_UP): "force_up",
    (FORCED_DOWN, False, FORCE_DOWN): "ignore",
    (FORCED_DOWN, False, FORCE_CLEAR): "clear",
}

LOG_UP = "[ active ] making {server} available"  # the marker lvsd parses (reference 3.4, 4.4)
LOG_DOWN = "[inactive] shutting down {server} due to connection failure"  # reference 4.4
LOG_FORCED_UP = "[ active ] making {server} available (forced up)"
LOG_FORCED_DOWN = "[inactive] shutting down {server} (forced down)"


@dataclass(frozen=True)
class MonitorParams:
    """The nanny command line of one real server (reference 3.2, 4.1)."""

    server: str  # "RIP:RPORT" (nanny -r: the server's port), as the log lines spell it
    weight: int  # W, nanny -w
    interval: int  # nanny -t = lvs.cf timeout: the check interval and the probe limit
    reentry: int  # nanny -a, seconds
    quiesce: bool = False  # nanny -q
    load: bool = False  # a load command is configured (nanny -U)
    scale: int = LOAD_SCALE_DEFAULT  # nanny -S

    @classmethod
    def of(cls, config, virtual, server, *, load: bool | None = None) -> MonitorParams:
        """Parameters as lvsd builds nanny's command line from lvs.cf (reference 3.2)."""
        if load is None:
            load = virtual.load_monitor not in (None, "", "none")
        return cls(server=f"{server.address}:{virtual.server_port(server)}", weight=server.weight,
                   interval=virtual.timeout, reentry=virtual.reentry, quiesce=virtual.quiesce_server,
                   load=load)

    @cached_property
    def needed(self) -> int:
        """N = reentry // interval: consecutive passes that bring a failed server back (4.4)."""
        reentry = self.reentry or REENTRY_ZERO_MEANS
        return reentry // max(1, self.interval)

    @cached_property
    def first_weight(self) -> int:
        """W0 = max(1, W >> 5) (reference 4.5); a configured weight 0 stays 0."""
        return min(self.weight, max(1, self.weight >> SLOW_START_SHIFT))


class MonitorState(NamedTuple):
    """What nanny keeps between checks, plus what the status views show.  (A NamedTuple:
    ``_replace`` is several times cheaper than dataclasses.replace, and this is per check.)"""

    up: bool = False  # nanny's "active": in the table with its weight (not quiesced)
    count: int = 0  # consecutive passes
    weight: int = 0  # L, the weight last set (0 while down)
    mode: str = NORMAL
    changes: int = 0  # up/down transitions so far
    slow_start_steps: int = 0  # doublings since the last "making available"
    last_ok: bool | None = None  # last check result (None: not checked yet)
    last_reason: str = ""
    last_duration: float = 0.0

    @classmethod
    def initial(cls, params: MonitorParams) -> MonitorState:
        """nanny starts with active = False, count = N: the first pass adds the server (4.4)."""
        return cls(count=params.needed)


class Step(NamedTuple):
    state: MonitorState
    action: str
    log: str | None = None  # a transition line to log, nanny's wording
    load_due: bool = False  # the runner should take a load sample and feed LOAD
    changed: bool = False  # up or weight differs from before


def _adjust_tick(p: MonitorParams, count: int) -> bool:
    """Reference 4.4 step 5: interval > 20 or count % (20 // interval) == 0."""
    return p.interval > ADJUST_PERIOD or count % (ADJUST_PERIOD // p.interval) == 0


def checks_to_adjust(p: MonitorParams, count: int) -> int:
    """How many more passing checks until the next adjust tick (1 = the very next check),
    starting from ``count`` consecutive passes: each pass adds one to the count, and the
    tick of 4.4 step 5 comes when the new count is a multiple of 20 // interval."""
    if p.interval > ADJUST_PERIOD:
        return 1
    period = ADJUST_PERIOD // p.interval
    return period - count % period


class SlowStart(NamedTuple):
    """Where a server is in its slow start (4.6): what the status views show."""

    weight: int  # L, the weight now
    target: int  # W, the configured weight
    next_weight: int  # min(2 L, W): the weight after the next step
    checks_to_next: int  # passing checks until that step (1: the next check)
    steps_done: int  # doublings since it was made available
    steps_left: int  # doublings until it reaches W
    checks_to_full: int  # passing checks until it reaches W


def slow_start(p: MonitorParams, s: MonitorState) -> SlowStart | None:
    """The slow start of state ``s``: None unless the server is up below its configured
    weight.  Counts assume every coming check passes (one failure takes it out, 4.4)."""
    if not s.up or s.weight >= p.weight or s.weight <= 0:
        return None
    steps, w = 0, s.weight
    while w < p.weight:
        w, steps = min(2 * w, p.weight), steps + 1
    to_next = checks_to_adjust(p, s.count)
    period = 1 if p.interval > ADJUST_PERIOD else ADJUST_PERIOD // p.interval
    return SlowStart(s.weight, p.weight, min(2 * s.weight, p.weight), to_next, s.slow_start_steps, steps,
                     to_next + (steps - 1) * period)


def _make_up(p: MonitorParams, s: MonitorState, **kw) -> MonitorState:
    return s._replace(up=True, weight=p.first_weight, changes=s.changes + 1, slow_start_steps=0, **kw)


def _take_out(s: MonitorState, **kw) -> MonitorState:
    return s._replace(up=False, weight=0, count=0, changes=s.changes + 1, **kw)


def _adjust(p: MonitorParams, s: MonitorState) -> tuple[MonitorState, bool]:
    """adjustWeight (4.6): slow start while L < W; else ask for a load sample if configured."""
    if not _adjust_tick(p, s.count):
        return s, False
    if s.weight < p.weight:
        w = min(2 * s.weight, p.weight)
        return s._replace(weight=w, slow_start_steps=s.slow_start_steps + 1), False
    return s, p.load


def load_weight(weight: int, configured: int, load: float | None, scale: int = LOAD_SCALE_DEFAULT) -> int:
    """The load feedback of reference 4.6: the new weight from L, W and the 1-minute load."""
    if load is None or load == LOAD_NEUTRAL:
        return weight
    k, thresh = configured / 2, configured / 4
    if load < LOAD_NEUTRAL:
        new = min(int(weight + k * (LOAD_NEUTRAL - load) ** (1 / 3)), scale * configured)
    else:
        new = max(int(weight - k * (load - LOAD_NEUTRAL) ** (1 / 3)), configured)
    new = min(new, WEIGHT_MAX)
    return new if abs(new - weight) >= thresh else weight


def _a_count(p, s, _load):
    s = s._replace(count=s.count + 1)
    if s.count < p.needed:
        return s, None, False
    s = _make_up(p, s)
    s, due = _adjust(p, s)
    return s, LOG_UP, due


def _a_keep(p, s, _load):
    s, due = _adjust(p, s._replace(count=s.count + 1))
    return s, None, due


def _a_takeout(p, s, _load):
    return _take_out(s), LOG_DOWN, False


def _a_reset(p, s, _load):
    return s._replace(count=0), None, False


def _a_load(p, s, load):
    if s.weight < p.weight:
        return s, None, False
    return s._replace(weight=load_weight(s.weight, p.weight, load, p.scale)), None, False


def _a_ignore(p, s, _load):
    return s, None, False


def _a_force_up(p, s, _load):
    if s.up:
        return s._replace(mode=FORCED_UP), None, False
    return _make_up(p, s, mode=FORCED_UP), LOG_FORCED_UP, False


def _a_force_down(p, s, _load):
    if not s.up:
        return s._replace(mode=FORCED_DOWN, count=0), None, False
    return _take_out(s, mode=FORCED_DOWN), LOG_FORCED_DOWN, False


def _a_clear(p, s, _load):
    return s._replace(mode=NORMAL, count=p.needed), None, False


_ACTIONS = {
    "count": _a_count, "keep": _a_keep, "takeout": _a_takeout, "reset": _a_reset, "load": _a_load,
    "ignore": _a_ignore, "force_up": _a_force_up, "force_down": _a_force_down, "clear": _a_clear,
}


def step(p: MonitorParams, s: MonitorState, event: Event, *, load: float | None = None) -> Step:
    """One event through ``TRANSITIONS``: the pure core of nanny's loop."""
    action = TRANSITIONS[(s.mode, s.up, event)]
    new, line, due = _ACTIONS[action](p, s, load)
    changed = (new.up, new.weight) != (s.up, s.weight)
    return Step(new, action, line.format(server=p.server) if line else None, due, changed)


class ServerMonitor:
    """nanny for one (virtual service, real server): params plus the current state."""

    __slots__ = ("params", "state")

    def __init__(self, params: MonitorParams, state: MonitorState | None = None):
        self.params = params
        self.state = state if state is not None else MonitorState.initial(params)

    def feed(self, event: Event, *, load: float | None = None) -> Step:
        st = step(self.params, self.state, event, load=load)
        self.state = st.state
        return st

    def result(self, ok: bool, reason: str = "", duration: float = 0.0) -> Step:
        """A check result: records it for the status views, then steps PASS or FAIL."""
        self.state = self.state._replace(last_ok=ok, last_reason=reason, last_duration=duration)
        return self.feed(PASS if ok else FAIL)

    def reconfigure(self, params: MonitorParams) -> None:
        """A reload kept this server: keep up/count/mode; a new W replaces a reached weight,
        a weight still in slow start stays (capped at the new W)."""
        s = self.state
        if s.up and params.weight != self.params.weight:
            w = params.weight if s.weight >= self.params.weight else min(s.weight, params.weight)
            s = s._replace(weight=w)
        self.params, self.state = params, s

    @property
    def health_weight(self) -> int | None:
        """The weight for tables.HealthState: None when it equals the configured one."""
        return None if not self.state.up or self.state.weight == self.params.weight else self.state.weight
