"""The lab and the runs of ``python -m bench.failover`` (see the package docstring)."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.failover.report import RunResult, Setting, timeline
from pylvs.lab import lab_topology
from pylvs.lab import topology as topo
from pylvs.lab.director import LabPulse
from pylvs.lab.lvscf import Service, lvs_cf
from pylvs.lab.probes import http_get, http_keepalive_get

ROUTERS = ("dir1", "dir2")  # lab_topology(..., directors=2): dir1 primary, dir2 backup
CLIENT = "client1"
ROLE_WAIT = 60.0  # s for the routers to settle (one active, one standby): a bound, not a measurement
SERVE_WAIT = 30.0  # s for the VIP to answer before a run
FIRST_GET_SLACK = 20.0  # the first new GET is given deadtime + this before the run counts as failed
HELD_TIMEOUT = 3.0  # s for one GET on a held connection (a connection nobody knows times out)
ATTEMPT_JOIN = 5.0  # s to wait for a straggling attempt (connect + send + read, each under --connect-timeout)
POLL = 0.05
# pulse's gratuitous-ARP defaults (reference 2.5), written out so the bench says what it ran.
GARP_COUNT, GARP_INTERVAL = 5, 1
SYNC_GLOBALS = "syncdaemon = 1\nsyncd_iface = eth1\n"  # the private segment, as the HA guide's setup


def cf_text(lab: Any, setting: Setting, sync: bool = True) -> str:
    extra = (f"keepalive = {setting.keepalive:g}\ndeadtime = {setting.deadtime:g}\n"
             f"garp_count = {GARP_COUNT}\ngarp_interval = {GARP_INTERVAL}\n")  # fmt: skip
    extra += SYNC_GLOBALS if sync else ""
    return lvs_cf(lab, (Service(),), backup=True, extra_globals=extra)


def _try(f: Any, default: Any = None) -> Any:
    """f(), or `default` when a status file is missing, half-known or unreadable."""
    try:
        return f()
    except (OSError, ValueError, KeyError, TypeError):
        return default


def roles(pulses: dict[str, LabPulse]) -> tuple[str, str] | None:
    """(active, standby) when exactly one router and its director are active and the other
    pair standby; None otherwise."""
    state = {}
    for host, p in pulses.items():
        s = _try(p.status)
        if not s:
            return None
        state[host] = (s["state"], s["director"]["role"])
    act = [h for h, st in state.items() if st == ("active", "active")]
    sby = [h for h, st in state.items() if st == ("standby", "standby")]
    return (act[0], sby[0]) if len(act) == 1 and len(sby) == 1 else None


def _is_active(p: LabPulse) -> bool:
    return _try(lambda: p.status()["state"]) == "active"


def until(cond: Any, timeout: float, step: float = POLL) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(step)


def served(lab: Any, timeout: float = 1.0) -> bytes | None:
    try:
        reply = http_get(lab.socket(CLIENT), topo.VIP, topo.HTTP_PORT, timeout=timeout)
    except OSError:
        return None
    return reply.body if reply.status == 200 else None


def set_links(lab: Any, host: str, up: bool) -> None:
    for dev in (topo.PUBLIC_IF, topo.PRIVATE_IF):
        lab.run(host, ["ip", "link", "set", dev, "up" if up else "down"])


def has_vip(lab: Any, host: str) -> bool:
    out = lab.run(host, ["ip", "-o", "-4", "addr", "show"]).stdout
    return f" {topo.VIP}/" in out


class Bench:
    def __init__(self, opts: Any) -> None:
        self.opts = opts
        self.workdir: Path | None = None

    def run(self) -> dict[str, list[RunResult]]:
        results: dict[str, list[RunResult]] = {}
        self.workdir = Path(tempfile.mkdtemp(prefix="bench-failover-"))
        try:
            with lab_topology("nat", real_servers=3, directors=2) as lab:
                for setting in self.opts.settings:
                    print(f"bench.failover: {setting.name} (keepalive {setting.keepalive:g} s, "
                          f"deadtime {setting.deadtime:g} s), {self.opts.runs} runs", flush=True)  # fmt: skip
                    results[setting.name] = self._setting(lab, self.workdir / setting.name, setting)
        finally:
            if self.opts.keep_work:
                print(f"bench.failover: work files kept in {self.workdir}", flush=True)
            else:
                shutil.rmtree(self.workdir, ignore_errors=True)
        return results

    def _setting(self, lab: Any, workdir: Path, setting: Setting) -> list[RunResult]:
        text = cf_text(lab, setting, self.opts.sync)
        pulses: dict[str, LabPulse] = {}
        try:
            for host in ROUTERS:
                pulses[host] = LabPulse(lab, workdir, text, host=host, io=self.opts.io)
            runs = []
            for n in range(1, self.opts.runs + 1):
                r = self._run(lab, pulses, workdir, setting, n)
                runs.append(r)
                print(f"  run {n}: killed {r.killed}, failover "
                      f"{'none' if r.took is None else f'{r.took:.2f} s'} ({r.attempts} attempts), "
                      f"lost {r.lost}/{r.held}, standby had {r.synced}"
                      f"{'' if r.sync_wait is not None or not self.opts.sync else ' (sync wait timed out)'}, "
                      f"timeline {({k: round(v, 2) for k, v in r.timeline.items()})}", flush=True)  # fmt: skip
            return runs
        finally:
            # The standby first: stopping the active one first would make the other take over.
            for p in sorted(pulses.values(), key=_is_active):
                p.stop()

    def _run(self, lab: Any, pulses: dict[str, LabPulse], workdir: Path, setting: Setting, n: int) -> RunResult:
        opts = self.opts
        pair = until(lambda: roles(pulses), ROLE_WAIT)
        if not pair:
            raise RuntimeError(f"run {n}: the routers did not settle (one active, one standby) in "
                               f"{ROLE_WAIT:.0f} s:\n" + "\n".join(p.log() for p in pulses.values()))  # fmt: skip
        act_host, sby_host = pair
        act, sby = pulses[act_host], pulses[sby_host]
        if not until(lambda: served(lab), SERVE_WAIT):
            raise RuntimeError(f"run {n}: the VIP does not answer through {act_host}:\n{act.log()}")
        notes: list[str] = []
        held: list[Any] = []
        bodies: list[bytes] = []
        try:
            for _ in range(opts.conns):
                s = lab.socket(CLIENT)
                held.append(s)
                s.settimeout(HELD_TIMEOUT)
                try:
                    s.connect((topo.VIP, topo.HTTP_PORT))
                    bodies.append(http_keepalive_get(s, topo.VIP).body)
                except OSError as exc:
                    held.pop().close()
                    notes.append(f"a held connection could not be opened: {exc}")
            # Connection sync: the standby's director counts them (its status is rewritten every second).
            start = time.monotonic()
            ok = opts.sync and until(lambda: _try(lambda: sby.lvs_status()["connections"], 0) >= len(held),
                                     opts.sync_timeout)  # fmt: skip
            sync_wait = time.monotonic() - start if ok else None
            synced = _try(lambda: sby.lvs_status()["connections"])
            if opts.sync and not ok:
                stats = _try(lambda: sby.lvs_status()["sync"])
                notes.append(f"the standby ({sby_host}) counted {synced} connections, not {len(held)}, "
                             f"after {opts.sync_timeout:g} s; its sync stats: {stats}")  # fmt: skip
            # The box fails.
            since = time.time()
            t0 = time.monotonic()
            act.kill()
            set_links(lab, act_host, up=False)
            took, attempts = self._first_get(lab, t0, setting.deadtime + FIRST_GET_SLACK)
            if took is None:
                notes.append(f"no new GET succeeded within {setting.deadtime + FIRST_GET_SLACK:g} s")
            lost_why = self._check_held(held, bodies)
        finally:
            for s in held:
                s.close()
        # The killed router comes back (a repaired box): links up, a new pulse, standby.
        set_links(lab, act_host, up=True)
        pulses[act_host] = LabPulse(lab, workdir, "", host=act_host, io=opts.io)
        back = until(lambda: roles(pulses) == (sby_host, act_host), ROLE_WAIT)
        if not back:
            notes.append(f"{act_host} did not come back standby with {sby_host} active within {ROLE_WAIT:.0f} s")
        if has_vip(lab, act_host):
            notes.append(f"{act_host} still holds the VIP after its restart")
        # GARPs finish garp_count x garp_interval after the takeover; give them that long.
        until(lambda: "garp_done" in timeline(sby.log_path.read_text(errors="replace"), since),
              GARP_COUNT * GARP_INTERVAL + 2.0)  # fmt: skip
        tl = timeline(sby.log_path.read_text(errors="replace"), since)
        return RunResult(run=n, killed=act_host, took=took, attempts=attempts, held=len(held), synced=synced,
                         sync_wait=sync_wait, lost=len(lost_why), lost_why=lost_why, timeline=tl,
                         notes=notes)  # fmt: skip

    def _first_get(self, lab: Any, t0: float, bound: float) -> tuple[float | None, int]:
        """New connections to the VIP until one GET is answered: (seconds since t0 when the
        first reply was complete, attempts), or (None, attempts) after `bound` s.  An attempt
        starts every --attempt-every s, each limited to --connect-timeout, so that the time
        resolves to about the stagger, not the timeout (a SYN lost before the takeover is
        only retried by TCP after 1 s)."""
        done = threading.Event()
        lock = threading.Lock()
        replies: list[float] = []

        def attempt() -> None:
            with contextlib.suppress(OSError, ValueError, IndexError):
                reply = http_get(lab.socket(CLIENT), topo.VIP, topo.HTTP_PORT, timeout=self.opts.connect_timeout)
                if reply.status == 200:
                    with lock:
                        replies.append(time.monotonic() - t0)
                    done.set()

        attempts = 0
        running: list[threading.Thread] = []
        while not done.is_set() and time.monotonic() - t0 < bound:
            attempts += 1
            th = threading.Thread(target=attempt, name="bench-failover-attempt", daemon=True)
            th.start()
            running = [t for t in running if t.is_alive()] + [th]
            done.wait(self.opts.attempt_every)
        for th in running:  # each ends within its socket timeouts
            th.join(ATTEMPT_JOIN)
        with lock:
            return (min(replies) if replies else None), attempts

    @staticmethod
    def _check_held(held: list[Any], bodies: list[bytes]) -> list[str]:
        """One GET on every held connection at once; why each lost one was lost."""

        def check(i: int) -> str | None:
            try:
                reply = http_keepalive_get(held[i], topo.VIP)
            except (OSError, ValueError, IndexError) as exc:
                return f"held connection {i}: {type(exc).__name__}: {exc}"
            if reply.status != 200 or reply.body != bodies[i]:
                return (f"held connection {i}: answered {reply.status} by {reply.body.strip()!r}, "
                        f"not {bodies[i].strip()!r}")  # fmt: skip
            return None

        if not held:
            return []
        with ThreadPoolExecutor(max_workers=len(held)) as pool:
            return [why for why in pool.map(check, range(len(held))) if why]
