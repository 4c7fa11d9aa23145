"""pylvs.health.monitor: nanny's state machine (reference 4.4-4.7) as a pure step function."""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Address

import pytest

from pylvs.config.check import check
from pylvs.config.diagnostics import has_errors
from pylvs.config.model import BoundAddress, Config, RealServer, VirtualServer
from pylvs.dataplane import tables as T
from pylvs.health.monitor import (
    FAIL,
    FORCE_CLEAR,
    FORCE_DOWN,
    FORCE_UP,
    FORCED_DOWN,
    FORCED_UP,
    LOAD,
    NORMAL,
    PASS,
    TRANSITIONS,
    Event,
    MonitorParams,
    MonitorState,
    ServerMonitor,
    checks_to_adjust,
    load_weight,
    slow_start,
    step,
)
from pylvs.sched import ADDR, W

SERVER = "10.0.0.2:80"


def params(weight=100, interval=10, reentry=180, quiesce=False, load=False) -> MonitorParams:
    return MonitorParams(server=SERVER, weight=weight, interval=interval, reentry=reentry, quiesce=quiesce, load=load)


# ----------------------------------------------------------------- the table, row by row


def _state_for(mode: str, up: bool, p: MonitorParams) -> MonitorState:
    weight = p.weight if up else 0
    return MonitorState(up=up, count=1 if up else 0, weight=weight, mode=mode, changes=3)


def test_table_covers_every_mode_state_event():
    reachable = {(NORMAL, False), (NORMAL, True), (FORCED_UP, True), (FORCED_DOWN, False)}
    assert {(m, u, e) for m, u in reachable for e in Event} == set(TRANSITIONS)


@pytest.mark.parametrize(("row", "action"), sorted(TRANSITIONS.items(), key=str), ids=lambda x: str(x))
def test_every_row(row, action):
    mode, up, event = row
    p = params(weight=100, interval=10, reentry=20)  # N = 2
    s = _state_for(mode, up, p)
    st = step(p, s, event, load=0.0)
    assert st.action == action
    n = st.state
    if action == "count":  # 0 -> 1 < N: still down
        assert (n.up, n.count, st.log) == (False, 1, None)
        n2 = step(p, n, event).state  # 2 >= N: available at W0 = 3, and count 2 is an adjust tick: 6
        assert (n2.up, n2.weight, n2.changes) == (True, 6, 4)
    elif action == "keep":
        assert n.up and n.count == 2 and n.mode == mode
    elif action == "takeout":
        assert (n.up, n.count, n.weight, n.changes) == (False, 0, 0, 4)
        assert st.log == f"[inactive] shutting down {SERVER} due to connection failure"
    elif action == "reset":
        assert (n.up, n.count, n.mode) == (False, 0, mode)
    elif action == "load":
        assert n.weight == 150  # L = W = 100, load 0 -> 100 + 50 * 1
    elif action == "ignore":
        assert n == s and not st.changed and st.log is None
    elif action == "force_up":
        assert n.up and n.mode == FORCED_UP
        assert st.log == (None if up else f"[ active ] making {SERVER} available (forced up)")
    elif action == "force_down":
        assert not n.up and n.mode == FORCED_DOWN and n.weight == 0
        assert st.log == (f"[inactive] shutting down {SERVER} (forced down)" if up else None)
    elif action == "clear":
        assert n.mode == NORMAL and n.count == p.needed and n.up == up
    else:
        pytest.fail(f"untested action {action}")
    assert st.changed == ((n.up, n.weight) != (s.up, s.weight))


# ----------------------------------------------------------------- reentry, first pass, flapping


def test_first_pass_adds_at_once_with_w0():
    m = ServerMonitor(params(weight=100))
    assert not m.state.up and m.state.count == m.params.needed == 18  # 180 // 10
    st = m.feed(PASS)
    assert st.log == f"[ active ] making {SERVER} available"
    assert (m.state.up, m.state.weight) == (True, 3)  # 100 >> 5


def test_reentry_counts_passes_reentry_div_interval():
    # reference 4.4: timeout 6, reentry 15 -> N = 2 good checks
    m = ServerMonitor(params(interval=6, reentry=15))
    assert m.params.needed == 2
    m.feed(PASS)
    assert m.feed(FAIL).log is not None and not m.state.up
    assert not m.feed(PASS).state.up  # 1 of 2
    st = m.feed(PASS)
    assert st.state.up and st.log is not None
    # a failure in between restarts the count
    m.feed(FAIL)
    m.feed(PASS)
    m.feed(FAIL)
    m.feed(PASS)
    assert not m.state.up
    assert m.feed(PASS).state.up


def test_reentry_zero_means_180_and_short_reentry_means_next_pass():
    assert params(interval=10, reentry=0).needed == 18
    m = ServerMonitor(params(interval=10, reentry=5))  # N = 0: the next pass re-enters
    m.feed(PASS)
    m.feed(FAIL)
    assert m.feed(PASS).state.up


def test_flapping_server_with_reentry_stays_out():
    m = ServerMonitor(params(interval=10, reentry=30))  # N = 3
    ups = []
    for i in range(20):
        ups.append(m.feed(PASS if i % 2 == 0 else FAIL).state.up)
    assert ups[0] is True and not any(ups[1:])  # in once, out on the first failure, never back
    assert m.state.changes == 2


def test_flapping_server_without_reentry_follows_every_check():
    m = ServerMonitor(params(interval=10, reentry=5))  # N = 0
    logs = [m.feed(PASS if i % 2 == 0 else FAIL).log for i in range(6)]
    assert all(logs)
    assert m.state.changes == 6


def test_weight_zero_configured_stays_zero():
    m = ServerMonitor(params(weight=0))
    m.feed(PASS)
    assert m.state.up and m.state.weight == 0
    for _ in range(10):
        m.feed(PASS)
    assert m.state.weight == 0


# ----------------------------------------------------------------- slow start (reference 4.6)


def test_slow_start_sequence_w100():
    m = ServerMonitor(params(weight=100, interval=10))  # adjust every 20 // 10 = 2 passes
    weights = [m.feed(PASS).state.weight for _ in range(16)]
    # count starts at N = 18: pass 1 -> 19 (add at 3), 20 -> 6, 22 -> 12, 24 -> 24, 26 -> 48, 28 -> 96, 30 -> 100
    assert weights == [3, 6, 6, 12, 12, 24, 24, 48, 48, 96, 96, 100, 100, 100, 100, 100]
    assert sorted(set(weights)) == [3, 6, 12, 24, 48, 96, 100]
    assert m.state.slow_start_steps == 6


def test_slow_start_every_pass_when_interval_over_20():
    m = ServerMonitor(params(weight=64, interval=30, reentry=60))
    assert [m.feed(PASS).state.weight for _ in range(7)] == [4, 8, 16, 32, 64, 64, 64]


def test_slow_start_restarts_after_quiesce():
    m = ServerMonitor(params(weight=100, interval=10, reentry=20, quiesce=True))
    for _ in range(16):
        m.feed(PASS)
    assert m.state.weight == 100
    m.feed(FAIL)
    assert (m.state.up, m.state.weight) == (False, 0)
    m.feed(PASS)
    st = m.feed(PASS)  # N = 2
    # added at W0 = 3; count 2 is also an adjust tick (4.4 step 5 runs in the same cycle): 6
    assert st.state.up and st.state.weight == 6 and st.state.slow_start_steps == 1


# ----------------------------------------------------------------- load feedback (reference 4.6)


@pytest.mark.parametrize(("last", "w", "load", "new"), [
    (100, 100, None, 100),      # probe failed: keep
    (100, 100, 1.0, 100),       # exactly 1.0: keep
    (100, 100, 0.0, 150),       # 100 + 50 * 1
    (100, 100, 0.9, 100),       # 100 + 50 * 0.464 = 123: change 23 < thresh 25 -> keep
    (100, 100, 0.5, 139),       # 100 + 50 * 0.794 = 139.7 -> 139
    (960, 100, 0.0, 1000),      # 1010 capped at S * W = 1000
    (990, 100, 0.0, 990),       # 1000: change 10 < 25 -> keep
    (150, 100, 2.0, 100),       # 150 - 50 = 100
    (100, 100, 9.0, 100),       # never below W
    (300, 100, 9.0, 200),       # 300 - 50 * 2 = 200
    (110, 100, 2.0, 110),       # floor W = 100: change 10 < 25 -> keep
])
def test_load_formula(last, w, load, new):
    assert load_weight(last, w, load) == new


def test_load_sample_due_only_at_full_weight_on_a_tick():
    m = ServerMonitor(params(weight=4, interval=10, load=True))  # W0 = 1: 1, 2, 4
    dues = [m.feed(PASS).load_due for _ in range(10)]
    assert m.state.weight == 4
    # ticks at even counts (19 odd: add; 20: 2; 22: 4; 24, 26, 28: load)
    assert dues == [False, False, False, False, False, True, False, True, False, True]
    st = m.feed(LOAD, load=0.0)
    assert st.changed and m.state.weight == 6  # 4 + 2 * 1, change 2 >= thresh 1
    m2 = ServerMonitor(params(weight=4, interval=10, load=False))
    assert not any(m2.feed(PASS).load_due for _ in range(10))


def test_load_sample_ignored_while_down_or_in_slow_start():
    m = ServerMonitor(params(weight=100, load=True))
    assert m.feed(LOAD, load=0.0).action == "ignore"
    m.feed(PASS)
    assert m.feed(LOAD, load=0.0).state.weight == 3


# ----------------------------------------------------------------- forced up / down / clear (4.7)


def test_forced_down_ignores_passes_until_clear():
    m = ServerMonitor(params(interval=10, reentry=20))
    m.feed(PASS)
    st = m.feed(FORCE_DOWN)
    assert st.log == f"[inactive] shutting down {SERVER} (forced down)" and not m.state.up
    for _ in range(5):
        assert not m.feed(PASS).state.up
    m.feed(FORCE_CLEAR)
    assert m.state.mode == NORMAL and m.state.count == 2
    st = m.feed(PASS)  # count reset to N: back on the next pass
    assert st.state.up and st.log == f"[ active ] making {SERVER} available"


def test_forced_up_ignores_failures_until_clear():
    m = ServerMonitor(params(weight=8, interval=10, reentry=20))
    st = m.feed(FORCE_UP)
    assert st.changed and m.state.up and m.state.weight == 1
    for _ in range(6):
        assert m.feed(FAIL).state.up  # rose-coloured glasses: a failure reads as a pass
    assert m.state.weight == 8  # slow start still climbed
    m.feed(FORCE_CLEAR)
    assert m.feed(FAIL).log is not None and not m.state.up


def test_force_down_then_up_then_down():
    m = ServerMonitor(params())
    assert m.feed(FORCE_DOWN).log is None  # already down: no line
    assert m.feed(FORCE_UP).log is not None
    assert m.feed(FORCE_DOWN).log is not None
    assert m.state.changes == 2


def test_result_records_last_check():
    m = ServerMonitor(params())
    m.result(False, "CONNECT to 10.0.0.2:80 timed out", 10.0)
    assert (m.state.last_ok, m.state.last_reason, m.state.last_duration) == (
        False, "CONNECT to 10.0.0.2:80 timed out", 10.0)


def test_reconfigure_keeps_state():
    m = ServerMonitor(params(weight=100))
    for _ in range(16):
        m.feed(PASS)
    m.reconfigure(params(weight=50))
    assert m.state.up and m.state.weight == 50
    m.reconfigure(params(weight=200))
    assert m.state.weight == 200


# ----------------------------------------------------------------- quiesce through tables.compile


def _config(quiesce: bool, sorry: str | None = None) -> Config:
    servers = tuple(RealServer(name=f"r{i}", address=IPv4Address(f"10.0.0.{i}"), active=True, weight=100)
                    for i in (2, 3))
    v = VirtualServer(name="www", active=True, address=BoundAddress(IPv4Address("192.0.2.10"), "eth0:1"),
                      port=80, scheduler="wlc", quiesce_server=quiesce, servers=servers,
                      sorry_server=IPv4Address(sorry) if sorry else None)
    c = Config(primary=IPv4Address("192.0.2.2"), network="nat", virtuals=(v,))
    assert not has_errors(check(c))
    return c


def _weights(tables) -> dict[str, int]:
    return {str(IPv4Address(int(r[ADDR]))): int(r[W]) for r in tables.dest if int(r[ADDR])}


@pytest.mark.parametrize("quiesce", [False, True])
def test_quiesce_gives_weight_zero_instead_of_removal(quiesce):
    c = _config(quiesce)
    v = c.virtuals[0]
    mons = {T.health_key(c, v, s): ServerMonitor(MonitorParams.of(c, v, s)) for s in v.servers}
    for m in mons.values():
        m.feed(PASS)
    k2 = T.health_key(c, v, v.servers[0])
    mons[k2].feed(FAIL)
    health = {k: T.HealthState(m.state.up, m.health_weight) for k, m in mons.items()}
    weights = _weights(T.compile(c, health))
    assert weights.get("10.0.0.3") == 3  # slow start W0 of 100
    assert weights.get("10.0.0.2") == (0 if quiesce else None)


def test_params_of_config():
    c = _config(True)
    v = dataclasses.replace(c.virtuals[0], timeout=6, reentry=15, load_monitor="uptime")
    p = MonitorParams.of(c, v, v.servers[0])
    assert (p.server, p.weight, p.interval, p.needed, p.quiesce, p.load) == ("10.0.0.2:80", 100, 6, 2, True, True)


# ----------------------------------------------------------------- slow start as the status views show it


def test_checks_to_adjust_counts_to_the_next_tick():
    p = params(interval=10)  # a tick every 20 // 10 = 2 passes
    assert [checks_to_adjust(p, n) for n in range(5)] == [2, 1, 2, 1, 2]
    p = params(interval=3)  # every 6 passes
    assert [checks_to_adjust(p, n) for n in (0, 1, 5, 6, 7)] == [6, 5, 1, 6, 5]
    assert checks_to_adjust(params(interval=30, reentry=60), 7) == 1  # interval > 20: every pass


def test_slow_start_is_none_unless_up_below_the_configured_weight():
    p = params(weight=100)
    assert slow_start(p, MonitorState.initial(p)) is None  # down
    m = ServerMonitor(p)
    for _ in range(20):
        m.feed(PASS)
    assert m.state.weight == 100 and slow_start(p, m.state) is None  # reached W
    m.feed(FAIL)
    assert slow_start(p, m.state) is None  # down again
    z = ServerMonitor(params(weight=0))
    z.feed(PASS)
    assert z.state.up and slow_start(z.params, z.state) is None  # weight 0 stays 0
    q = ServerMonitor(params(weight=100, reentry=20, quiesce=True))
    q.feed(PASS)
    q.feed(FAIL)
    assert slow_start(q.params, q.state) is None  # quiesced at weight 0


@pytest.mark.parametrize(("weight", "interval", "reentry"), [
    (100, 10, 180), (100, 10, 20), (100, 2, 15), (96, 6, 15), (3, 1, 1), (64, 30, 60), (1000, 7, 21)])
def test_slow_start_predictions_match_what_the_passes_do(weight, interval, reentry):
    """At every point of a climb, ``slow_start`` says which weight comes after how many
    passing checks, and how many doublings and checks are left: feeding that many passes
    gives exactly that."""
    p = params(weight=weight, interval=interval, reentry=reentry)
    m = ServerMonitor(p)
    m.feed(PASS)  # made available at W0
    history = [m.state]
    while m.state.weight < weight:
        m.feed(PASS)
        history.append(m.state)
        assert len(history) < 1000
    for i, s in enumerate(history[:-1]):
        ss = slow_start(p, s)
        assert ss is not None and (ss.weight, ss.target, ss.steps_done) == (s.weight, weight, s.slow_start_steps)
        later = history[i + 1:]
        changed = next(k for k, t in enumerate(later, start=1) if t.weight != s.weight)
        assert ss.checks_to_next == changed and later[changed - 1].weight == ss.next_weight
        assert ss.checks_to_full == next(k for k, t in enumerate(later, start=1) if t.weight == weight)
        assert ss.steps_left == history[-1].slow_start_steps - s.slow_start_steps
    assert slow_start(p, history[-1]) is None


def test_slow_start_w100_interval_10_sequence_and_schedule():
    """Reference 4.6's example: W = 100, timeout 10: 3, 6, 12, 24, 48, 96, 100, one step
    every 2 passes; the first pass (count 19, odd) is no tick, so the first step is 1 check away."""
    m = ServerMonitor(params(weight=100, interval=10))
    m.feed(PASS)
    ss = slow_start(m.params, m.state)
    assert ss == (3, 100, 6, 1, 0, 6, 11)  # 6 doublings: 1 + 5 * 2 checks
    seen = [(ss.weight, ss.next_weight, ss.checks_to_next)]
    while (ss := slow_start(m.params, m.feed(PASS).state)) is not None:
        seen.append((ss.weight, ss.next_weight, ss.checks_to_next))
    assert seen == [(3, 6, 1), (6, 12, 2), (6, 12, 1), (12, 24, 2), (12, 24, 1), (24, 48, 2), (24, 48, 1),
                    (48, 96, 2), (48, 96, 1), (96, 100, 2), (96, 100, 1)]
