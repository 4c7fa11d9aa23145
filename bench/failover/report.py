"""Pure parts of the failover benchmark: settings, per-run results, pulse.log timelines,
medians and the markdown report (no I/O here)."""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

GOAL_SLACK = 0.5  # the HA issue: "under deadtime + 0.5 s"


@dataclass(frozen=True)
class Setting:
    name: str
    keepalive: float
    deadtime: float

    @property
    def goal(self) -> float:
        return self.deadtime + GOAL_SLACK


# The HA issue's two settings: pulse's defaults (reference 2.2) and a fast pair.
SETTINGS = {
    "defaults": Setting("defaults", 2.0, 5.0),
    "fast": Setting("fast", 0.2, 0.6),
}

# pulse.log lines that mark a takeover, in the order they happen (pylvs.ha.node's rule
# log, pylvs.director's activation line, pylvs.ha.garp.FINISHED).
EVENTS = (
    ("dead", "partner dead: activating lvs"),
    ("forwarding", "active: forwarding"),
    ("garp_done", "gratuitous lvs arps finished"),
)
EVENT_TITLES = {"dead": "partner dead", "forwarding": "director forwarding", "first_get": "first new GET",
                "garp_done": "GARPs finished"}  # fmt: skip
# pylvs.cli.lvs.setup_logging: "%(asctime)s ident[pid]: message", asctime in local time, ms.
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (\S+)\[(\d+)\]: (.*)$")
ASCTIME = "%Y-%m-%d %H:%M:%S,%f"
CLOCK_SLACK = 0.002  # asctime is truncated to the millisecond


@dataclass
class RunResult:
    run: int
    killed: str  # the router that was active and was killed
    took: float | None  # s from the kill to the first successful new GET; None: none within the bound
    attempts: int  # new-connection attempts until then
    held: int  # established connections open at the kill
    synced: int | None  # the standby's connection count at the kill (None: unreadable)
    sync_wait: float | None  # s until the standby counted `held` connections; None: never within the bound
    lost: int  # held connections that failed or changed real server after the takeover
    lost_why: list[str] = field(default_factory=list)
    timeline: dict[str, float] = field(default_factory=dict)  # EVENTS key -> s after the kill
    notes: list[str] = field(default_factory=list)


def log_time(stamp: str) -> float:
    """An asctime stamp as a Unix time (the log's local time zone is this machine's)."""
    return datetime.strptime(stamp, ASCTIME).timestamp()


def timeline(text: str, since: float) -> dict[str, float]:
    """The first line of each EVENTS at or after Unix time `since`, as seconds after it."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = LOG_LINE.match(line)
        if not m:
            continue
        t = log_time(m.group(1))
        if t < since - CLOCK_SLACK:
            continue
        for key, needle in EVENTS:
            if key not in out and needle in m.group(4):
                out[key] = max(0.0, t - since)
    return out


def median(xs: Sequence[float]) -> float | None:
    return statistics.median(xs) if xs else None


def _s(x: float | None, digits: int = 2) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def summary_rows(results: dict[str, list[RunResult]]) -> list[dict]:
    """One row per setting: the times, median, min, max, goal verdicts, lost per run."""
    rows = []
    for name, runs in results.items():
        s = SETTINGS[name]
        times = [r.took for r in runs if r.took is not None]
        failed = sum(1 for r in runs if r.took is None)
        med = median(times)
        rows.append({
            "setting": s, "runs": runs, "times": times, "failed": failed, "median": med,
            "min": min(times) if times else None, "max": max(times) if times else None,
            "median_met": med is not None and not failed and med < s.goal,
            "all_met": bool(runs) and not failed and all(t < s.goal for t in times),
            "lost": [r.lost for r in runs], "held": [r.held for r in runs],
            "synced_ok": [r.sync_wait is not None for r in runs],
        })  # fmt: skip
    return rows


def markdown(results: dict[str, list[RunResult]], *, command: str, date: str, machine: str,
             conns: int, connect_timeout: float, attempt_every: float, sync: bool = True) -> str:  # fmt: skip
    rows = summary_rows(results)
    out = [
        f"Command: `{command}`; {date}; {machine}.",
        "",
        f"Failover time: from the SIGKILL of the active router's pulse and director (its links cut "
        f"at once) to the first successful new HTTP GET through the VIP from the client (a new "
        f"connection attempt starts every {attempt_every:g} s, each with a {connect_timeout:g} s "
        f"timeout). Lost: of the {conns} keep-alive "
        f"connections established before the kill, those whose next GET failed or reached "
        f"another real server. "
        + ("Connection sync on (`syncdaemon = 1`, `syncd_iface = eth1`)." if sync
           else "Connection sync **off** (`syncdaemon = 0`): held connections are expected to be lost."),
        "",
        "| setting | keepalive / deadtime | failover times (s) | median | min | max | goal < deadtime + 0.5 s "
        "| lost per run | standby had them all at the kill |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        s = row["setting"]
        times = ", ".join(_s(r.took) if r.took is not None else "none" for r in row["runs"])
        verdict = (f"< {s.goal:g} s: **{'met' if row['median_met'] else 'not met'}** (median)"
                   f"{', every run' if row['all_met'] else ''}")  # fmt: skip
        lost = ", ".join(f"{r.lost}/{r.held}" for r in row["runs"])
        synced = f"{sum(row['synced_ok'])} of {len(row['runs'])} runs"
        out.append(f"| {s.name} | {s.keepalive:g} / {s.deadtime:g} s | {times} | {_s(row['median'])} "
                   f"| {_s(row['min'])} | {_s(row['max'])} | {verdict} | {lost} | {synced} |")  # fmt: skip
    total_lost = sum(sum(row["lost"]) for row in rows)
    total_held = sum(sum(row["held"]) for row in rows)
    if sync:
        out += ["", f"Established connections lost with sync on: {total_lost} of {total_held} "
                    f"(goal zero: **{'met' if total_lost == 0 else 'not met'}**)."]  # fmt: skip
    else:
        out += ["", f"Established connections lost with sync off: {total_lost} of {total_held}."]
    # Where the time goes: the new active router's pulse.log against the kill.
    out += ["", "Timeline (median seconds after the kill, from the new active router's pulse.log; "
                "first new GET measured by the client):", "",
            "| setting | partner dead | director forwarding | first new GET | GARPs finished |",
            "|---|---|---|---|---|"]  # fmt: skip
    for row in rows:
        cells = []
        for key in ("dead", "forwarding", "first_get", "garp_done"):
            if key == "first_get":
                xs = row["times"]
            else:
                xs = [r.timeline[key] for r in row["runs"] if key in r.timeline]
            cells.append(_s(median(xs)))
        out.append(f"| {row['setting'].name} | " + " | ".join(cells) + " |")
    out += ["", "Per run:", "",
            "| setting | run | killed | failover s | attempts | partner dead | forwarding | GARPs finished "
            "| standby's conns at kill (wait s) | lost |",
            "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for row in rows:
        for r in row["runs"]:
            tl = [_s(r.timeline.get(k)) for k in ("dead", "forwarding", "garp_done")]
            waited = _s(r.sync_wait) if r.sync_wait is not None else "never"
            sync = f"{'?' if r.synced is None else r.synced} ({waited})"
            out.append(f"| {row['setting'].name} | {r.run} | {r.killed} | {_s(r.took)} | {r.attempts} | "
                       + " | ".join(tl) + f" | {sync} | {r.lost}/{r.held} |")  # fmt: skip
    notes = [f"{row['setting'].name} run {r.run}: {n}" for row in rows for r in row["runs"]
             for n in [*r.notes, *r.lost_why[:3]]]  # fmt: skip
    if notes:
        out += ["", "Notes:", ""] + [f"* {n}" for n in notes]
    return "\n".join(out)
