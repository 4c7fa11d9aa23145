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
