"""Parsers for what the load generators print and for /proc CPU counters.  Pure.

Formats: wrk 4.1 text output (``Requests/sec:``, ``Latency Distribution`` with
``--latency``, ``Socket errors:``, ``Non-2xx or 3xx responses:``), iperf3 ``-J`` JSON
(``end.sum_received.bits_per_second``), and the one-line outputs of src/udp_blast.c
(``sent=N secs=S pps=R errors=E``) and src/udp_sink.c (``recv=N bytes=B``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

_UNITS_US = {"us": 1.0, "ms": 1e3, "s": 1e6}
_DURATION = re.compile(r"^([0-9.]+)(us|ms|s)$")


def duration_us(text: str) -> float | None:
    """wrk's ``43.00us`` / ``1.20ms`` / ``2.00s`` -> microseconds."""
    m = _DURATION.match(text.strip())
    return float(m.group(1)) * _UNITS_US[m.group(2)] if m else None


@dataclass
class WrkResult:
    rps: float | None = None
    p50_us: float | None = None
    p99_us: float | None = None
    socket_errors: int = 0
    non_2xx: int = 0

    @property
    def problem(self) -> str:
        """'' when clean, else what went wrong (goes into the report's notes)."""
        parts = []
        if self.socket_errors:
            parts.append(f"{self.socket_errors} socket errors")
        if self.non_2xx:
            parts.append(f"{self.non_2xx} non-2xx responses")
        return ", ".join(parts)


def parse_wrk(out: str) -> WrkResult:
    r = WrkResult()
    for line in out.splitlines():
        f = line.split()
        if not f:
            continue
        if f[0] == "Requests/sec:" and len(f) > 1:
            r.rps = float(f[1])
        elif f[0] == "50%" and len(f) > 1:
            r.p50_us = duration_us(f[1])
        elif f[0] == "99%" and len(f) > 1:
            r.p99_us = duration_us(f[1])
        elif line.strip().startswith("Socket errors:"):
            # Socket errors: connect 0, read 0, write 0, timeout 0
            r.socket_errors = sum(int(n) for n in re.findall(r"\b[a-z]+ (\d+)", line))
        elif line.strip().startswith("Non-2xx or 3xx responses:"):
            r.non_2xx = int(f[-1])
    return r


def parse_iperf3(text: str) -> tuple[float | None, int | None, str]:
    """iperf3 -J output -> (receiver Gbit/s, retransmits, error text)."""
    try:
        d = json.loads(text)
    except ValueError:
        first = next((ln for ln in text.splitlines() if ln.strip()), "no output")
        return None, None, f"iperf3: {first.strip()[:200]}"
    if d.get("error"):
        return None, None, f"iperf3: {d['error']}"
    try:
        bps = d["end"]["sum_received"]["bits_per_second"]
    except (KeyError, TypeError):
        return None, None, "iperf3: no end.sum_received in its JSON"
    retrans = d["end"].get("sum_sent", {}).get("retransmits")
    return bps / 1e9, retrans, ""


def _kv(text: str) -> dict[str, str]:
    return dict(m.groups() for m in re.finditer(r"(\w+)=(\S+)", text))


def parse_blast(out: str) -> tuple[int, float] | None:
    """udp_blast -> (datagrams sent, seconds) or None."""
    kv = _kv(out)
    try:
        return int(kv["sent"]), float(kv["secs"])
    except (KeyError, ValueError):
        return None


def parse_sink(out: str) -> int | None:
    """udp_sink -> datagrams received, or None."""
    kv = _kv(out)
    try:
        return int(kv["recv"])
    except (KeyError, ValueError):
        return None


# --- CPU -------------------------------------------------------------------------------------

def cpu_totals(proc_stat: str) -> tuple[int, int]:
    """The aggregate ``cpu`` line of /proc/stat -> (busy ticks, total ticks).  Busy = user
    nice system irq softirq steal, total = busy + idle + iowait (as the reference lab)."""
    for line in proc_stat.splitlines():
        f = line.split()
        if f and f[0] == "cpu":
            v = [int(x) for x in f[1:9]]
            user, nice, system, idle, iowait, irq, softirq, steal = v
            busy = user + nice + system + irq + softirq + steal
            return busy, busy + idle + iowait
    raise ValueError("/proc/stat has no aggregate 'cpu' line")


def busy_cores(before: tuple[int, int], after: tuple[int, int], ncpu: int) -> float | None:
    """Cores busy on average between two cpu_totals() readings."""
    db, dt = after[0] - before[0], after[1] - before[1]
    return ncpu * db / dt if dt > 0 else None


def pid_stat_fields(stat: str) -> tuple[int, int, int]:
    """/proc/PID/stat -> (ppid, utime + stime ticks, stime ticks).  comm may hold spaces
    and ')', so fields are counted after the last ')'."""
    rest = stat[stat.rindex(")") + 2:].split()
    # rest[0] is field 3 (state): ppid is field 4, utime 14, stime 15
    return int(rest[1]), int(rest[11]) + int(rest[12]), int(rest[12])


_LOG_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d[ T][0-9:.,]+\s+")  # logging's asctime


def strip_log_prefix(line: str) -> str:
    """``2026-11-22 14:19:45,816 lvs[4649]: msg`` -> ``lvs[4649]: msg``."""
    return _LOG_PREFIX.sub("", line)


def error_line(text: str) -> str:
    """The line that says what went wrong in a failed command's output: the last line
    of a Python traceback (the exception), else the first non-empty line; without a
    logging timestamp."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        return "no output"
    if any(ln.startswith("Traceback (most recent call last)") for ln in lines):
        return strip_log_prefix(lines[-1])
    return strip_log_prefix(lines[0])
