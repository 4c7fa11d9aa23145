"""``pylvs status [--json]``: one screen on the running director and its pulse.

Reads the status files the daemons rewrite every second: the director's (``pylvs lvs
--status``, ``lvs.status.json``) and pulse's (``pylvs pulse --status``,
``pulse.status.json``), by default in the runtime directory of this network namespace
(``/run/pylvs``, ``/run/pylvs/<netns>``; ``--runtime-dir`` moves it, ``--lvs-status`` /
``--pulse-status`` name one file).  It shows the router's role and HA state, the
director (pid, uptime, config, serial_no, generation, reloads, last error), and per
virtual server its scheduler, connections and rates, then per real server its forward
method, health (UP/DOWN, forced, last check, why it is down), weight now/configured with
the slow start ("slow start: 3 of 100, next step in 12 s"), connections and rates.
``--json`` prints both files' data as one object, for scripts.

A status file not rewritten for ``--stale-after`` seconds (default 5) means the daemon is
gone or hung.  Exit status, as ``systemctl status``: 0 running, 3 not running (no status
file, or a stale one; pulse counts when its file exists or ``--pulse-status`` names it),
4 status unknown (a file that cannot be read or is not a status file), 2 usage errors.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXIT_RUNNING, EXIT_NOT_RUNNING, EXIT_UNKNOWN = 0, 3, 4  # LSB init-script status codes, as systemctl
STALE_AFTER = 5.0  # s: the daemons rewrite their status file every second
RUNNING, STALE, MISSING, ERROR = "running", "stale", "missing", "error"
FORWARD_BY_NETWORK = {"nat": "Masq", "direct": "Route", "tunnel": "Tunnel"}  # ipvsadm -L's words
ROLE_NAMES = {"lvs": "director", "pulse": "pulse"}


@dataclass(frozen=True)
class Source:
    """One status file as read: its data, or why there is none."""

    role: str  # "lvs" or "pulse"
    path: str
    state: str  # RUNNING, STALE, MISSING or ERROR
    data: dict[str, Any] | None = None
    age: float | None = None  # seconds since the file was last written
    error: str | None = None  # ERROR: what went wrong
    pid_alive: bool | None = None  # the pid in the file still exists (None: not known)
    started: float | None = None  # wall-clock start of that process, from /proc (None: not known)

    def as_json(self) -> dict[str, Any]:
        return {"path": self.path, "state": self.state, "age": None if self.age is None else round(self.age, 3),
                "error": self.error, "pid_alive": self.pid_alive}  # fmt: skip


# --- reading (I/O) --------------------------------------------------------------------------

def _pid_alive(pid: Any) -> bool | None:
    if not isinstance(pid, int) or pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, someone else's
        return True
    except OSError:
        return None
    return True


def process_started(pid: int) -> float | None:
    """Wall-clock start time of process ``pid`` from /proc (None when it cannot be read)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = int(stat[stat.rindex(")") + 2:].split()[19])  # field 22: starttime, after comm
        btime = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                     if line.startswith("btime "))  # fmt: skip
        return btime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def read_source(role: str, path: str, *, now: float | None = None, stale_after: float = STALE_AFTER) -> Source:
    """Read one status file: RUNNING, STALE (older than ``stale_after``), MISSING or ERROR."""
    now = time.time() if now is None else now
    data: Any = None
    for attempt in range(2):  # the daemons replace the file atomically; one retry covers the rest
        try:
            st = os.stat(path)
            with open(path, "rb") as f:
                data = json.loads(f.read())
            break
        except FileNotFoundError:
            return Source(role, path, MISSING)
        except (UnicodeDecodeError, ValueError) as exc:
            if attempt:
                return Source(role, path, ERROR, error=f"not a status file (bad JSON: {exc})")
        except OSError as exc:
            return Source(role, path, ERROR, error=f"cannot read it: {exc.strerror or exc}")
    if not isinstance(data, dict):
        return Source(role, path, ERROR, error=f"not a status file (a JSON {type(data).__name__}, not an object)")
    age = max(0.0, now - st.st_mtime)
    alive = _pid_alive(data.get("pid"))
    started = process_started(data["pid"]) if alive else None
    return Source(role, path, STALE if age > stale_after else RUNNING, data, age, pid_alive=alive, started=started)


def exit_code(lvs: Source, pulse: Source, *, pulse_required: bool = False) -> int:
    """0 running, 3 not running (missing or stale), 4 unknown (unreadable)."""
    if ERROR in (lvs.state, pulse.state):
        return EXIT_UNKNOWN
    if lvs.state != RUNNING or pulse.state == STALE or (pulse_required and pulse.state == MISSING):
        return EXIT_NOT_RUNNING
    return EXIT_RUNNING


def as_json(lvs: Source, pulse: Source, code: int) -> dict[str, Any]:
    """``--json``: both files' data in one object, with how each was found and the exit code."""
    return {"lvs": lvs.data, "pulse": pulse.data, "files": {"lvs": lvs.as_json(), "pulse": pulse.as_json()},
            "exit": code}  # fmt: skip


# --- rendering (pure) ------------------------------------------------------------------------

def duration(seconds: float) -> str:
    """12 s, 3 min 12 s, 2 h 03 min, 4 d 2 h."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def ago(seconds: float) -> str:
    return f"{seconds:.1f} s ago" if seconds < 10 else f"{duration(seconds)} ago"


def count(n: Any) -> str:
    """A counter or rate, short: 950, 12k, 34M."""
    if not isinstance(n, (int, float)):
        return "-"
    n = int(n)
    if abs(n) < 10_000:
        return str(n)
    if abs(n) < 10_000_000:
        return f"{n // 1000}k"
    return f"{n // 1_000_000}M"


def _skey_of_service(svc: dict) -> tuple:
    if svc.get("fwmark"):
        return ("fwmark", int(svc["fwmark"]))
    return (str(svc.get("proto", "")).lower(), str(svc.get("vip")), int(svc.get("port", 0)))


def _skey_of_check(check: dict) -> tuple | None:
    key = check.get("key")
    try:
        skey = key[0]
        if skey[0] == "fwmark":
            return ("fwmark", int(skey[1]))
        return (str(skey[0]).lower(), str(skey[1]), int(skey[2]))
    except (TypeError, IndexError, ValueError):
        return None


def _dest_of_check(check: dict) -> tuple | None:
    key = check.get("key")
    try:
        return (str(key[1]), int(key[2]))
    except (TypeError, IndexError, ValueError):
        addr, _, port = str(check.get("address", "")).rpartition(":")
        return (addr, int(port)) if port.isdigit() else None


def _when(wall: Any, relative: Any, now: float, age: float) -> float | None:
    """Seconds from ``now`` of a moment the file gives as a wall-clock time, or as seconds
    from when it was written ``age`` seconds ago."""
    if isinstance(wall, (int, float)):
        return wall - now
    if isinstance(relative, (int, float)):
        return relative - age
    return None


def slow_start_note(check: dict, *, now: float, age: float = 0.0) -> str | None:
    """"slow start: 3 of 100, next step in 12 s (to 6), at 100 in 1 min 52 s", or None."""
    if not check.get("slow_start"):
        return None
    weight, target = check.get("weight"), check.get("configured_weight")
    note = f"slow start: {weight} of {target}"
    step_in = _when(check.get("next_step_at"), check.get("next_step_in"), now, age)
    nxt = check.get("next_weight")
    to = f" (to {nxt})" if nxt is not None else ""
    if step_in is None:
        checks = check.get("next_step_checks")
        if checks:
            note += f", next step after {checks} more passing check{'s' if checks != 1 else ''}{to}"
    elif step_in <= 0:
        note += f", next step due now{to}"
    else:
        note += f", next step in {max(1, round(step_in))} s{to}"
    full_in = check.get("full_weight_in")
    if isinstance(full_in, (int, float)) and check.get("slow_start_steps_left", 0) > 1:
        note += f", at {target} in {duration(full_in - age)}"
    return note


def health_words(check: dict | None, *, service_checked: bool) -> tuple[str, str]:
    """(health column, why): UP / DOWN / "UP forced" / "DOWN quiesced" / ..."""
    if check is None:
        # every active real server has a check: a row without one is the sorry server
        return ("sorry" if service_checked else "-", "sorry server" if service_checked else "")
    mode = check.get("mode", "normal")
    if check.get("up"):
        return ("UP forced" if mode == "forced_up" else "UP", "forced up" if mode == "forced_up" else "")
    if mode == "forced_down":
        return "DOWN forced", "forced down"
    word = "DOWN quiesced" if check.get("quiesced") else "DOWN"
    last = check.get("last")
    if last is None:
        return word, "not checked yet"
    if last:  # passing again, not yet re-entered (reentry // timeout passes)
        return word, f"re-entry: {check.get('passes', 0)} of {check.get('needed', '?')} passing checks"
    return word, check.get("reason") or "check failed"


DEST_HEAD = "  -> %-21s %-7s %-13s %9s %7s %9s %5s %6s %6s  %s"
DEST_COLUMNS = ("RemoteAddress:Port", "Forward", "Health", "Weight", "ActConn", "InActConn", "CPS", "InPPS",
                "OutPPS", "Checked")


def _dest_line(addr: str, forward: str, health: str, weight: str, dest: dict | None, checked: str,
               note: str) -> str:  # fmt: skip
    rates = (dest or {}).get("rates") or {}
    cells = (addr, forward, health, weight, count((dest or {}).get("active", 0)),
             count((dest or {}).get("inactive", 0)), count(rates.get("cps", 0)), count(rates.get("inpps", 0)),
             count(rates.get("outpps", 0)), checked)  # fmt: skip
    line = DEST_HEAD % cells
    return (line + ("  " + note if note else "")).rstrip()


def _service_head(svc: dict, name: str | None) -> str:
    if svc.get("fwmark"):
        head = f"FWM  {svc['fwmark']}"
    else:
        head = f"{svc.get('proto', '?'):<4} {svc.get('vip')}:{svc.get('port')}"
    if name:
        head += f" ({name})"
    head += f"  {svc.get('scheduler', '?')}"
    if svc.get("persistent"):
        head += f"  persistent {svc['persistent']} s"
        if svc.get("pmask") and svc["pmask"] != "255.255.255.255":
            head += f" mask {svc['pmask']}"
    dests = svc.get("dests") or []
    act = sum(int(d.get("active", 0)) for d in dests)
    inact = sum(int(d.get("inactive", 0)) for d in dests)
    stats, rates = svc.get("stats") or {}, svc.get("rates") or {}
    head += (f"  conns {count(act)} active, {count(inact)} inactive, {count(stats.get('conns', 0))} total"
             f"  {count(rates.get('cps', 0))} conn/s  {count(rates.get('inpps', 0))}/"
             f"{count(rates.get('outpps', 0))} pkt/s in/out")  # fmt: skip
    return head


@dataclass(frozen=True)
class ServiceView:
    """One virtual server of a director's status joined with its health checks: the table's
    service (None when the table does not hold it) and its real servers as (address, the
    table's dest or None, the check or None) rows.  The text screen and the web tool's
    CONTROL/MONITORING panel are both drawn from these."""

    skey: tuple | None
    name: str | None
    svc: dict | None
    rows: list[tuple[tuple | None, dict | None, dict | None]]
    checked: bool  # the service's servers are health-checked (a row without a check: the sorry server)
    forward: str  # the service's forwarding word, for rows whose dest does not say


def service_views(lvs: dict) -> list[ServiceView]:
    """The virtual servers of a director's status, each with its real servers: the table's
    services in table order, then checks of services the table does not hold."""
    checks = [c for c in lvs.get("health") or [] if isinstance(c, dict)]
    by_service: dict[tuple, list[dict]] = {}
    for c in checks:
        by_service.setdefault(_skey_of_check(c), []).append(c)
    network_fwd = FORWARD_BY_NETWORK.get(str(lvs.get("network")), "?")
    views: list[ServiceView] = []
    seen: set[tuple] = set()
    for svc in lvs.get("services") or []:
        skey = _skey_of_service(svc)
        seen.add(skey)
        svc_checks = by_service.get(skey, [])
        name = svc.get("name") or next((c.get("service") for c in svc_checks if c.get("service")), None)
        dests = {(str(d.get("addr")), int(d.get("port", 0))): d for d in svc.get("dests") or []}
        fwd = next((d.get("forward") for d in dests.values() if d.get("forward")), network_fwd)
        rows: list[tuple[tuple | None, dict | None, dict | None]] = []
        for c in svc_checks:
            at = _dest_of_check(c)
            rows.append((at, dests.pop(at, None), c))
        rows += [(at, d, None) for at, d in dests.items()]
        views.append(ServiceView(skey, name, svc, rows, bool(svc_checks), fwd))
    for skey, svc_checks in by_service.items():  # checks of a service the table does not hold
        if skey in seen:
            continue
        name = next((c.get("service") for c in svc_checks if c.get("service")), "?")
        views.append(ServiceView(skey, name, None, [(_dest_of_check(c), None, c) for c in svc_checks], True,
                                 network_fwd))  # fmt: skip
    return views


def render_services(lvs: dict, *, now: float, age: float = 0.0) -> list[str]:
    """The virtual servers of a director's status, each with its real servers."""
    lines: list[str] = []
    for view in service_views(lvs):
        if lines:
            lines.append("")
        if view.svc is None:
            lines.append(f"{view.name}: not in the table")
        else:
            lines.append(_service_head(view.svc, view.name))
            lines.append((DEST_HEAD % DEST_COLUMNS).rstrip())
        for at, dest, check in view.rows:
            lines.append(_server_line(at, dest, check, view.forward, service_checked=view.checked, now=now,
                                      age=age))  # fmt: skip
    if not lines:
        lines.append("no virtual servers")
    return lines


def _server_line(at: tuple | None, dest: dict | None, check: dict | None, fwd: str, *, service_checked: bool,
                 now: float, age: float) -> str:  # fmt: skip
    addr = f"{at[0]}:{at[1]}" if at else str((check or {}).get("address", "?"))
    health, why = health_words(check, service_checked=service_checked)
    if dest is not None:  # the table's weight: what the scheduler uses
        current = dest.get("weight")
    else:
        current = check.get("weight", 0) if check and check.get("up") else 0
    configured = (check or {}).get("configured_weight")
    weight = f"{current}/{configured}" if configured is not None else str(current)
    last_at = (check or {}).get("last_at")
    checked = ago(max(0.0, now - last_at)) if isinstance(last_at, (int, float)) else "never" if check else "-"
    note = slow_start_note(check, now=now, age=age) if check else None
    notes = "; ".join(x for x in (why, note) if x)
    return _dest_line(addr, (dest or {}).get("forward") or fwd, health, weight, dest, checked, notes)


def _not_running(src: Source, now: float) -> str | None:
    """The line saying a daemon is not running, or None when it runs."""
    what = ROLE_NAMES.get(src.role, src.role)
    if src.state == MISSING:
        return f"{what}: not running (no status file {src.path})"
    if src.state == ERROR:
        return f"{what}: status unknown: {src.path}: {src.error}"
    if src.state == STALE:
        pid = (src.data or {}).get("pid")
        why = {False: f"pid {pid} is gone", True: f"pid {pid} still exists: hung?"}.get(src.pid_alive, "")
        why = f" ({why})" if why else ""
        return (f"{what}: NOT RUNNING: {src.path} not rewritten for {duration(src.age or 0)}{why}; "
                f"below, its last state")  # fmt: skip
    return None


def _pulse_lines(pulse: Source, now: float) -> list[str]:
    if pulse.state == MISSING:
        return [f"HA:       pulse not running (no {pulse.path}): a standalone director"]
    down = _not_running(pulse, now)
    p = pulse.data or {}
    lines = [down] if down else []
    if not p:
        return lines
    role, state = p.get("role", "?"), p.get("state", "?")
    line = f"HA:       {role} router, {state} (pulse pid {p.get('pid', '?')}"
    if p.get("peers"):
        line += f", peer {', '.join(map(str, p['peers']))}"
    heard = p.get("heard_ago")
    line += f", heard {ago(heard + (pulse.age or 0))}" if isinstance(heard, (int, float)) else ", peer not heard"
    if p.get("keepalive") is not None:
        line += f", keepalive {p['keepalive']} s, deadtime {p.get('deadtime')} s"
    lines.append(line + ")")
    trouble = [w for k, w in (("linkfail", "a monitored link is down"), ("childfail", "its director failed"))
               if p.get(k)]  # fmt: skip
    director = p.get("director") or {}
    if director.get("exits"):
        trouble.append(f"director exited {director['exits']} time(s)")
    if trouble:
        lines.append(f"          {'; '.join(trouble)}")
    conf = p.get("confsync") or {}
    last = conf.get("last") if isinstance(conf, dict) else None
    if isinstance(last, dict) and last.get("serial_no") is not None:
        lines.append(f"          config sync: serial_no {last['serial_no']}, {last.get('status')}"
                     + (f" ({last['reason']})" if last.get("reason") else ""))  # fmt: skip
    log = p.get("log") or []
    if log:
        lines.append(f"          last event: {log[-1]}")
    return lines


def _director_lines(lvs: Source, now: float) -> list[str]:
    down = _not_running(lvs, now)
    d = lvs.data or {}
    lines = [down] if down else []
    if not d:
        return lines
    line = f"director: {d.get('role', '?')}{' (run by pulse)' if d.get('managed') else ''}, pid {d.get('pid', '?')}"
    started = d.get("started") if isinstance(d.get("started"), (int, float)) else lvs.started
    if isinstance(started, (int, float)) and lvs.state == RUNNING:
        line += f", up {duration(now - started)}"
    line += f", io {d.get('io', '?')}, network {d.get('network', '?')}, config {d.get('config', '?')}"
    lines.append(line)
    conf = []
    if d.get("serial_no") is not None:
        conf.append(f"serial_no {d['serial_no']}")
    conf.append(f"generation {d.get('generation', '?')}")
    reloads, failed = d.get("reloads", 0), d.get("failed_reloads", 0)
    conf.append(f"reloads {reloads}" + (f" ({failed} failed)" if failed else ""))
    conf.append(f"connections {d.get('connections', '?')} of {d.get('size', '?')}")
    if d.get("sync"):
        conf.append("connection sync on")
    lines.append("          " + ", ".join(conf))
    last = d.get("last_reload")
    if isinstance(last, dict) and last.get("ok") is False:
        at = last.get("time")
        when = f" {ago(now - at)}" if isinstance(at, (int, float)) else ""
        lines.append(f"          last reload FAILED{when}, still running the previous config: {last.get('error')}")
    err = d.get("last_error")
    if err and not (isinstance(last, dict) and err == last.get("error")):
        at = d.get("last_error_at")
        when = f" ({ago(now - at)})" if isinstance(at, (int, float)) else ""
        lines.append(f"          last error{when}: {err}")
    return lines


def render(lvs: Source, pulse: Source, *, now: float) -> str:
    """The whole screen, from the two status files as read."""
    lines = _pulse_lines(pulse, now) + _director_lines(lvs, now)
    if lvs.data:
        lines.append("")
        lines += render_services(lvs.data, now=now, age=lvs.age or 0.0)
    return "\n".join(lines) + "\n"


# --- the command ---------------------------------------------------------------------------

def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("status", help="show the running director and pulse: health, weights, slow start",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--runtime-dir", default=None, metavar="DIR",
                   help="where the daemons keep their files (default /run/pylvs, /run/pylvs/<netns> in a "
                        "named network namespace)")  # fmt: skip
    p.add_argument("--lvs-status", default=None, metavar="PATH",
                   help="the director's status file (default RUNTIME_DIR/lvs.status.json)")
    p.add_argument("--pulse-status", default=None, metavar="PATH",
                   help="pulse's status file (default RUNTIME_DIR/pulse.status.json; missing there: no pulse)")
    p.add_argument("--json", action="store_true", help="both status files as one JSON object")
    p.add_argument("--stale-after", type=float, default=STALE_AFTER, metavar="SECONDS",
                   help=f"a status file older than this means its daemon is gone or hung (default {STALE_AFTER:g})")
    p.set_defaults(func=run)


def _child_status(pulse: Source) -> str | None:
    """The status file of pulse's director, when pulse's status names it."""
    path = ((pulse.data or {}).get("director") or {}).get("status")
    return path if isinstance(path, str) and path else None


def run(args: argparse.Namespace) -> int:
    from pylvs.service.paths import RuntimePaths

    paths = RuntimePaths.resolve(args.runtime_dir)
    now = time.time()
    pulse = read_source("pulse", args.pulse_status or str(paths.status("pulse")), now=now,
                        stale_after=args.stale_after)  # fmt: skip
    lvs_path = args.lvs_status or _child_status(pulse) or str(paths.status("lvs"))
    lvs = read_source("lvs", lvs_path, now=now, stale_after=args.stale_after)
    code = exit_code(lvs, pulse, pulse_required=args.pulse_status is not None)
    if args.json:
        json.dump(as_json(lvs, pulse, code), sys.stdout, indent=1, sort_keys=True, default=str)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render(lvs, pulse, now=now))
    for src in (lvs, pulse):
        if src.state == ERROR:
            print(f"pylvs status: {src.path}: {src.error}", file=sys.stderr)
    return code
