"""pylvs.health.runner: the asyncio tasks around the monitor, with a fake probe and clock."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from ipaddress import IPv4Address
from types import SimpleNamespace
from typing import NamedTuple

import pytest

from pylvs.config.check import check
from pylvs.config.diagnostics import has_errors
from pylvs.config.model import BoundAddress, Config, RealServer, VirtualServer
from pylvs.dataplane import tables as T
from pylvs.health.runner import HealthRunner, spread_offset
from pylvs.sched import ADDR, W

VIP = IPv4Address("192.0.2.10")


class FakeResult(NamedTuple):
    ok: bool
    reason: str = ""
    duration: float = 0.001
    detail: str = ""


def fake_spec_for(config, v, s):
    return SimpleNamespace(address=str(s.address), port=T.dest_port(config, v, s), timeout=float(v.timeout),
                           kind="tcp")


class FakeProbe:
    """Results by address: True/False, default True; counts calls."""

    def __init__(self):
        self.results: dict[str, bool] = {}
        self.calls: list[str] = []

    async def __call__(self, spec, *, clock):
        self.calls.append(spec.address)
        ok = self.results.get(spec.address, True)
        return FakeResult(ok, "" if ok else "CONNECT timed out")


def config(n=3, *, weight=1, timeout=6, reentry=12, quiesce=False, sorry=None, servers=None) -> Config:
    servers = servers or tuple(RealServer(name=f"r{i}", address=IPv4Address(f"10.0.0.{i}"), active=True,
                                          weight=weight) for i in range(2, 2 + n))
    v = VirtualServer(name="www", active=True, address=BoundAddress(VIP, "eth0:1"), port=80, timeout=timeout,
                      reentry=reentry, quiesce_server=quiesce, servers=servers,
                      sorry_server=IPv4Address(sorry) if sorry else None)
    c = Config(primary=IPv4Address("192.0.2.2"), network="nat", virtuals=(v,))
    assert not has_errors(check(c))
    return c


def runner(c, probe=None, **kw):
    changes: list[dict] = []
    r = HealthRunner(c, changes.append, probe=probe or FakeProbe(), spec_for=fake_spec_for, **kw)
    return r, changes


def run_all(r: HealthRunner):
    async def go():
        for c in list(r._checks.values()):
            await r.check_once(c)
    asyncio.run(go())


def key_of(c, i):
    v = c.virtuals[0]
    return T.health_key(c, v, v.servers[i])


# ----------------------------------------------------------------- health mapping and on_change


def test_starts_down_and_first_pass_brings_up():
    c = config()
    r, changes = runner(c)
    assert all(h == T.HealthState(False, None) for h in r.health().values())
    assert len(r.health()) == 3
    run_all(r)
    assert changes  # published
    assert changes[-1] == {key_of(c, i): T.HealthState(True, None) for i in range(3)}  # weight 1: W0 = W


def test_on_change_only_on_real_changes():
    c = config()
    probe = FakeProbe()
    r, changes = runner(c, probe)
    run_all(r)
    n = len(changes)
    run_all(r)
    run_all(r)
    assert len(changes) == n  # nothing changed: no call
    probe.results["10.0.0.3"] = False
    run_all(r)
    assert len(changes) == n + 1
    assert changes[-1][key_of(c, 1)] == T.HealthState(False, None)


def test_slow_start_weight_in_mapping():
    c = config(1, weight=100, timeout=10, reentry=20)
    r, changes = runner(c)
    seen = []
    for _ in range(14):
        run_all(r)
        seen.append(r.health()[key_of(c, 0)].weight)
    assert seen[0] == 3 and seen[-1] is None  # None: the configured 100
    assert [h[key_of(c, 0)].weight for h in changes] == [3, 6, 12, 24, 48, 96, None]


def test_probe_exception_is_a_failed_check():
    c = config(1)

    async def broken(spec, *, clock):
        raise OSError("boom")

    r, _ = runner(c, broken)
    run_all(r)
    snap = r.snapshot()[0]
    assert snap["last"] is False and "boom" in snap["reason"] and not snap["up"]


def test_snapshot_fields():
    c = config(2)
    r, _ = runner(c, now=lambda: 1234.5)
    run_all(r)
    snap = {s["address"]: s for s in r.snapshot()}
    s = snap["10.0.0.2:80"]
    assert (s["service"], s["server"], s["up"], s["weight"], s["last"], s["changes"], s["last_at"]) == (
        "www", "r2", True, 1, True, 1, 1234.5)
    assert {"reason", "duration", "mode", "interval", "key"} <= set(s)


def test_changes_within_the_delay_are_coalesced_and_reverts_dropped():
    c = config(2, timeout=6, reentry=1)  # N = 0: every check decides
    probe = FakeProbe()
    r, changes = runner(c, probe, publish_delay=0.05)

    async def go():
        r._loop = asyncio.get_running_loop()
        checks = list(r._checks.values())
        for ch in checks:  # both up in one window: one call
            await r.check_once(ch)
        await asyncio.sleep(0.2)
        assert len(changes) == 1 and all(h.up for h in changes[0].values())
        probe.results["10.0.0.2"] = False
        await r.check_once(checks[0])  # down ...
        probe.results["10.0.0.2"] = True
        await r.check_once(checks[0])  # ... and up again within the window: no call
        await asyncio.sleep(0.2)
        r._loop = None
    asyncio.run(go())
    assert len(changes) == 1


# ----------------------------------------------------------------- sorry server and quiesce


def _weights(c, health):
    t = T.compile(c, health)
    return {str(IPv4Address(int(row[ADDR]))): int(row[W]) for row in t.dest if int(row[ADDR])}


def test_sorry_server_comes_from_tables_compile():
    c = config(2, sorry="10.0.0.99")
    probe = FakeProbe()
    r, _ = runner(c, probe)
    assert _weights(c, r.health()) == {"10.0.0.99": 1}  # nothing checked yet: all down
    run_all(r)
    assert _weights(c, r.health()) == {"10.0.0.2": 1, "10.0.0.3": 1}
    probe.results.update({"10.0.0.2": False, "10.0.0.3": False})
    run_all(r)
    assert _weights(c, r.health()) == {"10.0.0.99": 1}


def test_quiesce_keeps_server_at_weight_zero():
    c = config(2, quiesce=True)
    probe = FakeProbe()
    r, _ = runner(c, probe)
    run_all(r)
    probe.results["10.0.0.2"] = False
    run_all(r)
    assert _weights(c, r.health()) == {"10.0.0.2": 0, "10.0.0.3": 1}
    assert {s["address"]: s["quiesced"] for s in r.snapshot()}["10.0.0.2:80"] is True


# ----------------------------------------------------------------- reload, force, offsets


def test_update_config_keeps_states_of_servers_that_stay():
    c = config(3)
    probe = FakeProbe()
    probe.results["10.0.0.4"] = False
    r, changes = runner(c, probe)
    run_all(r)
    before = {s["address"]: (s["up"], s["changes"]) for s in r.snapshot()}
    v = c.virtuals[0]
    new_servers = (v.servers[0], v.servers[2],
                   RealServer(name="r9", address=IPv4Address("10.0.0.9"), active=True, weight=1))
    c2 = dataclasses.replace(c, virtuals=(dataclasses.replace(v, servers=new_servers),))
    n = len(changes)
    r.update_config(c2)
    assert len(changes) == n  # a reload is not a health change
    after = {s["address"]: (s["up"], s["changes"]) for s in r.snapshot()}
    assert after == {"10.0.0.2:80": before["10.0.0.2:80"], "10.0.0.4:80": before["10.0.0.4:80"],
                     "10.0.0.9:80": (False, 0)}
    assert set(r.health()) == {key_of(c2, i) for i in range(3)}


def test_force_up_down_clear():
    c = config(1)
    probe = FakeProbe()
    probe.results["10.0.0.2"] = False
    r, changes = runner(c, probe)
    k = key_of(c, 0)
    r.force(k, True)
    assert r.health()[k].up and len(changes) == 1
    run_all(r)
    assert r.health()[k].up  # failures read as passes
    r.force(k, None)
    run_all(r)
    assert not r.health()[k].up
    probe.results["10.0.0.2"] = True
    r.force(k, False)
    run_all(r)
    assert not r.health()[k].up
    r.force(k, None)
    run_all(r)
    assert r.health()[k].up
    with pytest.raises(KeyError):
        r.force(("tcp", VIP, 81), True)


def test_spread_offsets_distinct_and_inside_interval():
    c = config(50, timeout=2)
    r, _ = runner(c)
    offs = [ch.offset for ch in r._checks.values()]
    assert len(set(offs)) == 50 and all(0 <= o < 2 for o in offs)
    # evenly spread: every fifth of the interval holds some
    assert {int(o / 0.4) for o in offs} == set(range(5))
    assert spread_offset(0, 10) == 0.0


def test_task_sleeps_offset_then_interval():
    c = config(1, timeout=6)
    sleeps: list[float] = []

    async def fake_sleep(d):
        sleeps.append(d)
        if len(sleeps) > 3:
            raise asyncio.CancelledError
    probe = FakeProbe()
    r, _ = runner(c, probe, sleep=fake_sleep)
    ch = next(iter(r._checks.values()))

    async def go():
        with pytest.raises(asyncio.CancelledError):
            await r._run(ch)
    asyncio.run(go())
    assert sleeps == [ch.offset, 6, 6, 6] and len(probe.calls) == 3


def test_load_sample_feeds_the_monitor():
    c = config(1, weight=4, timeout=10, reentry=20)
    v = dataclasses.replace(c.virtuals[0], load_monitor="uptime")
    c = dataclasses.replace(c, virtuals=(v,))
    asked = []

    async def fake_load(argv, timeout):
        asked.append((argv, timeout))
        return 0.0
    r, changes = runner(c, load_probe=fake_load)
    for _ in range(8):
        run_all(r)
    assert asked and asked[0] == (["rsh", "10.0.0.2", "uptime"], 10.0)
    assert r.snapshot()[0]["weight"] > 4


# ----------------------------------------------------------------- the thread


def test_thread_start_force_reload_stop():
    c = config(3, timeout=1)
    got = threading.Event()
    seen: list[dict] = []

    def on_change(h):
        seen.append(h)
        if all(x.up for x in h.values()):
            got.set()

    async def quick_sleep(d):  # the fake clock: no real waiting
        await asyncio.sleep(0.001)

    r = HealthRunner(c, on_change, probe=FakeProbe(), spec_for=fake_spec_for, sleep=quick_sleep)
    r.start()
    try:
        assert r.running
        assert got.wait(10), seen
        assert r._thread.name == "pylvs-health"
        k = key_of(c, 0)
        r.force(k, False)
        assert not r.health()[k].up
        r.update_config(config(2, timeout=1))
        assert len(r.health()) == 2
    finally:
        r.stop()
    assert not r.running


def test_first_round_checks_everyone_once_and_defers_the_next_check_by_an_interval():
    """Start-up as nanny: all servers checked at once (the first tables hold those that
    answer), then each task's next check waits its interval plus its spread offset."""
    sleeps: list[float] = []

    async def sleep(delay):
        sleeps.append(delay)
        await asyncio.Event().wait()  # park the task until stop() cancels it

    c = config(3, timeout=6)
    probe = FakeProbe()
    r, _ = runner(c, probe, sleep=sleep)
    r.first_round()
    assert sorted(probe.calls) == ["10.0.0.2", "10.0.0.3", "10.0.0.4"]
    assert all(h.up for h in r.health().values())
    r.start()
    r.stop()
    assert len(sleeps) == 3 and all(6 <= d < 12 for d in sleeps)


# ----------------------------------------------------------------- slow start in the snapshot


class Timeline:
    """A fake runner clock (monotonic) and wall clock 1000 s apart, a probe that takes
    ``duration`` of it, and a sleep that takes a snapshot halfway through each wait."""

    def __init__(self, duration=0.5):
        self.t = 0.0
        self.duration = duration
        self.snaps: list[tuple[float, dict]] = []  # (wall time, snapshot entry) taken mid-sleep
        self.weights: list[tuple[float, int]] = []  # (wall time, weight) after each check
        self.runner: HealthRunner | None = None
        self.stop_at = 10_000.0

    def clock(self):
        return self.t

    def now(self):
        return 1000.0 + self.t

    async def probe(self, spec, *, clock):
        self.t += self.duration
        return FakeResult(True, "ok", self.duration)

    async def sleep(self, delay):
        [entry] = self.runner.snapshot()
        self.weights.append((self.now(), entry["weight"]))
        self.t += delay / 2
        self.snaps.append((self.now(), self.runner.snapshot()[0]))
        self.t += delay / 2
        if self.t > self.stop_at:
            raise asyncio.CancelledError


def test_snapshot_schedules_slow_start_w100_and_the_steps_come_then():
    """Weight 100 at timeout 10 (a doubling every 2 passes): every snapshot taken while
    it climbs names the next weight and the wall-clock time it comes, and the weight
    does change to that value at that time; the whole climb to 100 is announced too."""
    tl = Timeline(duration=0.5)
    c = config(1, weight=100, timeout=10, reentry=20)
    r, _ = runner(c, tl.probe, clock=tl.clock, now=tl.now, sleep=tl.sleep)
    tl.runner = r
    ch = next(iter(r._checks.values()))
    tl.stop_at = 200.0

    async def go():
        with pytest.raises(asyncio.CancelledError):
            await r._run(ch)
    asyncio.run(go())
    weights = tl.weights
    assert [w for _, w in weights if w] == sorted(w for _, w in weights if w)  # climbing only
    assert sorted({w for _, w in weights}) == [0, 3, 6, 12, 24, 48, 96, 100]  # 0: before the first check
    changes = [(t, w) for (t, w), (_, before) in zip(weights[1:], weights, strict=False) if w != before]
    full_at = next(t for t, w in weights if w == 100)
    checked = 0
    for t, e in tl.snaps:
        if not e["slow_start"]:
            assert e["weight"] in (0, 100) and e["next_step_in"] is None and e["next_weight"] is None
            continue
        assert e["configured_weight"] == 100 and e["next_weight"] == min(2 * e["weight"], 100)
        step_at, new = next((ct, w) for ct, w in changes if ct > t)
        assert new == e["next_weight"]
        assert e["next_step_at"] == pytest.approx(step_at)
        assert e["next_step_in"] == pytest.approx(step_at - t)
        assert e["full_weight_in"] == pytest.approx(full_at - t)
        assert 0 < e["next_step_in"] <= 2 * 10.5 and 1 <= e["next_step_checks"] <= 2
        assert e["slow_start_steps_left"] >= 1
        checked += 1
    assert checked >= 10
    # from the first snapshot: 3 of 100, next step (to 6) within one cycle of 10.5 s
    first = next(e for _, e in tl.snaps if e["slow_start"])  # the first is taken before the first check
    assert (first["weight"], first["next_weight"], first["next_step_checks"]) == (3, 6, 1)
    assert first["next_step_in"] == pytest.approx(5 + 0.5)  # half the sleep left, then the probe


def test_snapshot_outside_slow_start_and_before_the_tasks_run():
    c = config(2, weight=1, timeout=6)
    t = [0.0]
    probe = FakeProbe()
    probe.results["10.0.0.3"] = False
    r, _ = runner(c, probe, clock=lambda: t[0])
    before = {s["address"]: s for s in r.snapshot()}
    assert before["10.0.0.2:80"]["next_check_in"] is None  # not scheduled yet
    r.first_round()
    t[0] = 2.0
    snap = {s["address"]: s for s in r.snapshot()}
    up, down = snap["10.0.0.2:80"], snap["10.0.0.3:80"]
    assert up["up"] and (up["weight"], up["configured_weight"]) == (1, 1) and not up["slow_start"]
    assert up["next_check_in"] == pytest.approx(4.0)  # checked at 0, again an interval later
    assert (up["next_weight"], up["next_step_in"], up["next_step_at"], up["full_weight_in"]) == (None,) * 4
    assert not down["up"] and not down["slow_start"] and down["reason"] == "CONNECT timed out"
    assert (down["passes"], down["needed"]) == (0, 2)  # re-entry: 0 of 2 passing checks


def test_snapshot_slow_start_without_a_schedule_has_no_times():
    c = config(1, weight=100, timeout=10, reentry=20)
    r, _ = runner(c)
    run_all(r)  # checked, never scheduled: next_at unknown, fallback from the last check
    [e] = r.snapshot()
    assert e["slow_start"] and e["next_weight"] == 6 and e["next_check_in"] is not None
    r._checks[key_of(c, 0)].last_end = None
    [e] = r.snapshot()
    assert e["slow_start"] and e["next_weight"] == 6 and e["next_step_checks"] == 1
    assert e["next_step_in"] is None and e["next_step_at"] is None
