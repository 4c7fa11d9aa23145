"""The health runner: every nanny of a config as asyncio tasks in one thread of their own.

    runner = HealthRunner(config, on_change)   # on_change(health) is called from the runner's thread
    runner.start()                             # returns once the tasks are scheduled
    runner.health()                            # {tables.health_key(...): HealthState(up, weight)}
    runner.update_config(new_config)           # reload: states of servers that stay are kept
    runner.force(key, True | False | None)     # forced up / down / back to the checks (4.7)
    runner.snapshot()                          # per check: last result, duration, changes, ...
    runner.stop()

One task per active real server of an active virtual service (lvsd spawns one nanny per
server, reference 3.2).  Each task first waits a spread offset (a golden-ratio sequence over
its interval, so the checks never all start at the same instant), then loops as nanny
does (reference 4.4): probe, step the ``ServerMonitor``, take a load sample when the step
asks for one, then sleep ``interval`` seconds (lvs.cf ``timeout``, nanny -t) after the
probe ended.  Servers start down and enter after their first passing check, as nanny adds
them (reference 3.2 step 5).

When any server's up/weight changes, ``on_change(health)`` gets the full health mapping
(a new dict each time), at most once per ``publish_delay`` (0.1 s) however many checks
changed in it, and only when it differs from the last one handed over.  It runs in the
runner's thread: the director must hand it over to its own thread (e.g. store it and set
an Event), never compile in it.

The sorry server needs nothing here: ``tables.compile`` adds it (weight 1) to a service
whose real servers are all down in the mapping (reference 3.4), quiesced ones included.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pylvs.dataplane.tables import HealthState, health_key
from pylvs.health.load import load_argv, sample_load
from pylvs.health.monitor import (
    FORCE_CLEAR,
    FORCE_DOWN,
    FORCE_UP,
    LOAD,
    MonitorParams,
    ServerMonitor,
    slow_start,
)

log = logging.getLogger("pylvs.health")

GOLDEN_FRACTION = 0.6180339887498949  # (sqrt 5 - 1) / 2: k * this mod 1 never repeats, stays even
JOIN_TIMEOUT = 5.0  # seconds stop() waits for the runner thread
CALL_TIMEOUT = 5.0  # seconds update_config() waits for the loop to apply a config
WAKE_GRID = 0.05  # s: check start times are rounded up to this grid so that one event-loop wake-up
# serves several checks (bench/bench_health.py: 1000 servers every 2 s, 21 % -> 16 % of a core);
# far finer than nanny's whole-second alarm() (reference 4.4 step 6)
PUBLISH_DELAY = 0.1  # s: changes within this delay reach on_change as one mapping (a server
# coming up at start-up is one recompile per delay, not one per server); far below an interval


def grid_sleeper(grid: float) -> Callable:
    """An asyncio.sleep whose wake-up is rounded up to the next multiple of ``grid`` seconds."""
    if grid <= 0:
        return asyncio.sleep

    async def sleep(delay: float) -> None:
        now = asyncio.get_running_loop().time()
        await asyncio.sleep(math.ceil((now + delay) / grid) * grid - now)
    return sleep


def spread_offset(seq: int, interval: float) -> float:
    """The first-check delay of the ``seq``-th check: distinct, evenly spread in [0, interval)."""
    return interval * ((seq * GOLDEN_FRACTION) % 1.0)


@dataclass
class _Check:
    key: tuple
    service: str
    server: str
    address: str
    monitor: ServerMonitor
    spec: Any
    load_argv: list[str] | None
    offset: float
    task: asyncio.Task | None = None
    last_at: float | None = None  # wall-clock time of the last result
    last_end: float | None = None  # runner-clock time the last probe ended
    next_at: float | None = None  # runner-clock time the task's sleep ends: the next check starts
    checked: bool = False  # first_round checked it: its next check is an interval away


def _default_probe():
    from pylvs.health.probes import run_check, spec_for  # the probe module (pylvs/health/probes.py)

    return run_check, spec_for


class HealthRunner:
    """All health checks of a config; see the module docstring."""

    def __init__(self, config, on_change: Callable[[dict], None], *, clock: Callable[[], float] = time.monotonic,
                 probe: Callable | None = None, now: Callable[[], float] | None = None,
                 spec_for: Callable | None = None, load_probe: Callable = sample_load,
                 sleep: Callable | None = None, grid: float = WAKE_GRID, publish_delay: float = PUBLISH_DELAY,
                 which: Callable | None = None):
        self._publish_delay = publish_delay
        if probe is None or spec_for is None:
            run_check, default_spec_for = _default_probe()
            probe = probe or run_check
            spec_for = spec_for or default_spec_for
        self._probe, self._spec_for, self._load_probe = probe, spec_for, load_probe
        self._clock, self._now, self._sleep = clock, now or time.time, sleep or grid_sleeper(grid)
        self._which = which
        self.on_change = on_change
        self._lock = threading.Lock()
        self._checks: dict[tuple, _Check] = {}
        self._seq = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._publish_pending = False
        self._health: dict[tuple, HealthState] = {}  # the current mapping, kept per change
        self._before: dict[tuple, HealthState] = {}  # changed keys -> their last published state
        self.config = config
        self._apply(config)

    # -- the checks of a config ---------------------------------------------------------------
    def _wanted(self, config) -> dict[tuple, tuple]:
        out = {}
        for v in config.virtuals:
            if not v.active:
                continue
            for s in v.servers:
                if s.active and s.address is not None and not s.manual:  # pylvsadm's: unchecked, as ipvsadm's
                    out[health_key(config, v, s)] = (v, s)
        return out

    def _make_params(self, config, v, s) -> tuple[MonitorParams, list[str] | None]:
        kw = {} if self._which is None else {"which": self._which}
        argv = load_argv(config, v, str(s.address), **kw)
        return MonitorParams.of(config, v, s, load=argv is not None), argv

    def _apply(self, config) -> tuple[list[_Check], list[_Check]]:
        """Make the checks match ``config``: (added, removed).  Kept servers keep their state."""
        # everything that can fail first, so a bad config leaves the running checks as they are
        wanted = {key: (v, s, *self._make_params(config, v, s), self._spec_for(config, v, s))
                  for key, (v, s) in self._wanted(config).items()}
        added, removed = [], []
        with self._lock:
            for key in list(self._checks):
                if key not in wanted:
                    removed.append(self._checks.pop(key))
            for key, (v, s, params, argv, spec) in wanted.items():
                c = self._checks.get(key)
                if c is not None:
                    c.monitor.reconfigure(params)
                    c.spec, c.load_argv, c.service, c.server = spec, argv, v.name, s.name
                    continue
                c = _Check(key, v.name, s.name, f"{s.address}:{v.server_port(s)}", ServerMonitor(params),
                           spec, argv, spread_offset(self._seq, params.interval))
                self._seq += 1
                self._checks[key] = c
                added.append(c)
            self._health = {k: self._state_of(c) for k, c in self._checks.items()}
            self._before.clear()  # a reload is not a health change: the director recompiles anyway
            self.config = config
        return added, removed

    @staticmethod
    def _state_of(c: _Check) -> HealthState:
        return HealthState(c.monitor.state.up, c.monitor.health_weight)

    # -- what the director reads ------------------------------------------------------------
    def health(self) -> dict[tuple, HealthState]:
        """The full health mapping for tables.compile (weight None = the configured weight)."""
        with self._lock:
            return dict(self._health)

    def snapshot(self) -> list[dict]:
        """Per check, for the status views: service, server, up, weight (now) and
        configured_weight, last result, ..., and the schedule: ``next_check_in`` (seconds
        until the next check starts), and while in slow start (``slow_start`` True)
        ``next_weight``, ``next_step_in`` / ``next_step_at`` (seconds from now / wall-clock
        time of the next doubling), ``next_step_checks``, ``full_weight_in``,
        ``slow_start_steps`` and ``slow_start_steps_left``.  The times assume the coming
        checks pass and last as long as the last one did (a step lands when its check ends)."""
        with self._lock:
            checks = list(self._checks.values())
        clock, now = self._clock(), self._now()
        return [self._entry(c, clock, now) for c in checks]

    def _next_check_in(self, c: _Check, clock: float) -> float | None:
        """Seconds until ``c``'s next check starts (0 while one runs or is due)."""
        at = c.next_at
        if at is None and c.last_end is not None:  # checked (first_round), task not started yet
            at = c.last_end + c.monitor.params.interval
        return None if at is None else max(0.0, at - clock)

    def _entry(self, c: _Check, clock: float, now: float) -> dict:
        st, p = c.monitor.state, c.monitor.params
        next_check = self._next_check_in(c, clock)
        ss = slow_start(p, st)
        entry = {
            "service": c.service, "server": c.server, "address": c.address, "key": c.key,
            "up": st.up, "weight": st.weight, "configured_weight": p.weight, "mode": st.mode,
            "quiesced": (not st.up) and p.quiesce, "last": st.last_ok, "reason": st.last_reason,
            "duration": st.last_duration, "changes": st.changes, "passes": st.count, "needed": p.needed,
            "interval": p.interval, "last_at": c.last_at,
            "next_check_in": None if next_check is None else round(next_check, 3),
            "slow_start": ss is not None, "next_weight": None, "next_step_checks": None,
            "next_step_in": None, "next_step_at": None, "full_weight_in": None,
            "slow_start_steps": st.slow_start_steps, "slow_start_steps_left": 0,
        }  # fmt: skip
        if ss is None:
            return entry
        entry.update(next_weight=ss.next_weight, next_step_checks=ss.checks_to_next,
                     slow_start_steps_left=ss.steps_left)
        if next_check is not None:
            # the k-th coming check ends (and steps) after k - 1 whole cycles, its own probe included
            cycle = p.interval + st.last_duration
            step_in = next_check + st.last_duration + (ss.checks_to_next - 1) * cycle
            entry.update(next_step_in=round(step_in, 3), next_step_at=round(now + step_in, 3),
                         full_weight_in=round(step_in + (ss.checks_to_full - ss.checks_to_next) * cycle, 3))
        return entry

    def first_round(self) -> None:
        """Before ``start``: every check once, all at the same time, so the director's
        first tables hold the servers that answer (nanny adds a server at its first
        passing check).  Bounded by the longest probe time limit."""
        if self._thread is not None:
            raise RuntimeError("first_round runs before start()")
        with self._lock:
            checks = list(self._checks.values())

        async def all_once() -> None:
            await asyncio.gather(*(self.check_once(c) for c in checks))

        asyncio.run(all_once())
        for c in checks:
            c.checked = True

    # -- one check ------------------------------------------------------------------------------
    async def check_once(self, c: _Check) -> bool:
        """Probe once, step the monitor, sample the load when due; True if up/weight changed."""
        t0 = self._clock()
        try:
            r = await self._probe(c.spec, clock=self._clock)
            ok, reason, duration = bool(r.ok), str(r.reason), float(r.duration)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a broken probe is a failed check, said why
            ok, reason, duration = False, f"probe error: {exc!r}", self._clock() - t0
        st = c.monitor.result(ok, reason, duration)
        c.last_at = self._now()
        c.last_end = self._clock()
        changed = st.changed
        if st.log:
            log.info("%s%s", st.log, "" if ok else f" ({reason})" if reason else "")
        if st.load_due and c.load_argv:
            load = await self._load_probe(c.load_argv, float(c.monitor.params.interval))
            changed |= c.monitor.feed(LOAD, load=load).changed
        if changed:
            self._changed(c)
        return changed

    async def _run(self, c: _Check) -> None:
        # After the start-up round every server was just checked, as nanny checks at its
        # start: the next check is one interval later, the spread offset on top of it.
        await self._sleep_until_check(c, c.offset + (c.monitor.params.interval if c.checked else 0.0))
        while True:
            await self.check_once(c)
            await self._sleep_until_check(c, c.monitor.params.interval)  # nanny: sleep interval after the probe (4.4)

    async def _sleep_until_check(self, c: _Check, delay: float) -> None:
        """Sleep ``delay`` before ``c``'s next check, noting when it will start (snapshot)."""
        c.next_at = self._clock() + delay
        await self._sleep(delay)

    # -- publishing ----------------------------------------------------------------------------
    def _changed(self, c: _Check) -> None:
        """``c``'s up/weight changed: update the mapping, publish soon (coalesced)."""
        new = self._state_of(c)
        with self._lock:
            if c.key not in self._health:  # removed by a reload meanwhile
                return
            self._before.setdefault(c.key, self._health[c.key])
            self._health[c.key] = new
        if self._loop is None:  # not started (tests driving check_once): publish now
            self._publish()
        elif not self._publish_pending:
            self._publish_pending = True
            self._loop.call_later(self._publish_delay, self._publish)

    def _publish(self) -> None:
        self._publish_pending = False
        with self._lock:
            real = any(self._health.get(k) != old for k, old in self._before.items())
            self._before.clear()
            health = dict(self._health)
        if not real:  # changed and changed back within the delay
            return
        try:
            self.on_change(health)
        except Exception:  # noqa: BLE001 - the checks go on; the director's error is its own
            log.exception("health on_change failed")

    # -- the thread -----------------------------------------------------------------------------
    def start(self) -> None:
        """Run the checks in a thread of their own; returns when they are scheduled."""
        if self._thread is not None:
            raise RuntimeError("the health runner is already started")
        self._ready.clear()
        self._thread = threading.Thread(target=self._thread_main, name="pylvs-health", daemon=True)
        self._thread.start()
        self._ready.wait(JOIN_TIMEOUT)

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception:  # noqa: BLE001 - reported; the director sees the thread gone
            log.exception("the health runner failed")
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        with self._lock:
            checks = list(self._checks.values())
        for c in checks:
            self._spawn(c)
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            with self._lock:
                tasks = [c.task for c in self._checks.values() if c.task is not None]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._loop = None

    def _spawn(self, c: _Check) -> None:
        c.task = asyncio.get_running_loop().create_task(self._run(c), name=f"health {c.address}")

    def stop(self) -> None:
        """Cancel every check and join the thread."""
        loop, thread = self._loop, self._thread
        if thread is None:
            return
        if loop is not None and self._stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._stopping.set)
        thread.join(JOIN_TIMEOUT)
        if thread.is_alive():
            log.error("the health runner did not stop within %.0f s", JOIN_TIMEOUT)
        self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _call(self, fn: Callable, *args) -> Any:
        """Run ``fn`` in the loop's thread when running (and wait), else here."""
        loop = self._loop
        if loop is None or self._thread is None or threading.current_thread() is self._thread:
            return fn(*args)
        fut: concurrent.futures.Future = concurrent.futures.Future()

        def call():
            try:
                fut.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                fut.set_exception(exc)

        loop.call_soon_threadsafe(call)
        return fut.result(CALL_TIMEOUT)

    def update_config(self, config) -> None:
        """Reload: keep the state of servers that stay, start/stop the checks of the others.
        Afterwards ``health()`` is the mapping for the new config (no on_change for a reload)."""
        self._call(self._update, config)

    def _update(self, config) -> None:
        added, removed = self._apply(config)
        for c in removed:
            if c.task is not None:
                c.task.cancel()
        if self._loop is not None:
            for c in added:
                self._spawn(c)

    def force(self, key: tuple, up: bool | None) -> None:
        """Forced up (True), forced down (False), or back to the checks (None): nanny's
        SIGUSR2 / SIGUSR1 / SIGHUP (reference 4.7).  KeyError for an unknown key."""
        with self._lock:
            if key not in self._checks:
                raise KeyError(f"no health check for {key!r}")
        self._call(self._force, key, {True: FORCE_UP, False: FORCE_DOWN, None: FORCE_CLEAR}[up])

    def _force(self, key: tuple, event) -> None:
        c = self._checks.get(key)
        if c is None:
            return
        st = c.monitor.feed(event)
        if st.log:
            log.info("%s", st.log)
        if st.changed:
            self._changed(c)

    def find(self, address: str, port: int | None = None) -> list[tuple]:
        """Keys of the checks of a real server "RIP" (and port): for the control side."""
        with self._lock:
            return [k for k in self._checks if str(k[1]) == address and (port is None or k[2] == port)]

