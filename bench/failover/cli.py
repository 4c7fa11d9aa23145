"""Command line of ``python -m bench.failover`` (see the package docstring).  Parsing is pure."""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.failover.report import SETTINGS, Setting, markdown
from bench.forward.cli import bounded, csv_choice

DEFAULT_RUNS = 5  # the HA issue: "median of 5"
DEFAULT_CONNS = 20  # established keep-alive connections held across each failover
DEFAULT_CONNECT_TIMEOUT = 0.2  # s per new-connection attempt (connect, send, each read)
DEFAULT_ATTEMPT_EVERY = 0.05  # s between the starts of new-connection attempts: the time's resolution
DEFAULT_SYNC_TIMEOUT = 10.0  # s for the standby to count the held connections before the kill
MAX_RUNS = 50


@dataclass
class Options:
    runs: int
    settings: list[Setting]
    conns: int
    connect_timeout: float
    attempt_every: float
    sync_timeout: float
    sync: bool
    io: str
    out: Path | None
    keep_work: bool
    argv: list[str]

    @property
    def command(self) -> str:
        return "python -m bench.failover" + ("" if not self.argv else " " + shlex.join(self.argv))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.failover",
        description="Failover benchmark: two routers running pylvs pulse in a NAT lab; time from a SIGKILL "
                    "of the active one to the first new connection through the VIP, and established "
                    "connections lost (connection sync on).")  # fmt: skip
    p.add_argument("--runs", type=bounded(int, 1, MAX_RUNS), default=DEFAULT_RUNS,
                   help=f"failovers per setting (default {DEFAULT_RUNS})")
    p.add_argument("--settings", type=csv_choice(SETTINGS, "setting"), default=list(SETTINGS),
                   help=f"comma-separated (default {','.join(SETTINGS)}): "
                        + "; ".join(f"{s.name}: keepalive {s.keepalive:g} s, deadtime {s.deadtime:g} s"
                                    for s in SETTINGS.values()))  # fmt: skip
    p.add_argument("--conns", type=bounded(int, 0, 200), default=DEFAULT_CONNS,
                   help=f"established keep-alive connections held across each failover (default {DEFAULT_CONNS})")
    p.add_argument("--connect-timeout", type=bounded(float, 0.01, 5), default=DEFAULT_CONNECT_TIMEOUT,
                   help=f"seconds per new-connection attempt after the kill (default {DEFAULT_CONNECT_TIMEOUT:g})")
    p.add_argument("--attempt-every", type=bounded(float, 0.01, 5), default=DEFAULT_ATTEMPT_EVERY,
                   help="seconds between the starts of new-connection attempts, which overlap "
                        f"(default {DEFAULT_ATTEMPT_EVERY:g})")  # fmt: skip
    p.add_argument("--sync-timeout", type=bounded(float, 0, 120), default=DEFAULT_SYNC_TIMEOUT,
                   help="seconds to wait for the standby to count the held connections before the kill "
                        f"(default {DEFAULT_SYNC_TIMEOUT:g}; the kill happens anyway)")  # fmt: skip
    p.add_argument("--no-sync", dest="sync", action="store_false",
                   help="without connection sync (syncdaemon = 0): for comparison; held connections are then lost")
    p.add_argument("--io", default="auto", help="the directors' packet I/O (pylvs lvs --io; default auto)")
    p.add_argument("--out", default="-", help="also write the markdown report to this file (default '-': print only)")
    p.add_argument("--keep-work", action="store_true", help="keep the work directory (lvs.cf, pulse.log, status files)")
    return p


def parse_args(argv: Sequence[str] | None = None) -> Options:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = build_parser().parse_args(argv)
    return Options(runs=a.runs, settings=[SETTINGS[n] for n in a.settings], conns=a.conns,
                   connect_timeout=a.connect_timeout,
                   attempt_every=a.attempt_every, sync_timeout=a.sync_timeout, sync=a.sync, io=a.io,
                   out=None if a.out == "-" else Path(a.out), keep_work=a.keep_work, argv=argv)  # fmt: skip


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0]
    return (f"{os.cpu_count()} vCPU{f' ({model})' if model else ''}, kernel {platform.release()}, "
            f"Python {platform.python_version()}, load {load:.2f} at start")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the report (and write it to --out).  Exit 0 with a report,
    2 for usage errors or when not root."""
    opts = parse_args(argv)
    if os.geteuid() != 0:
        print("bench.failover: needs root (network namespaces and pulse)", file=sys.stderr)
        return 2
    from bench.failover.harness import Bench  # needs pylvs's lab; parsing does not

    info = machine()
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results = Bench(opts).run()
    report = markdown(results, command=opts.command, date=date, machine=info, conns=opts.conns,
                      connect_timeout=opts.connect_timeout, attempt_every=opts.attempt_every,
                      sync=opts.sync)  # fmt: skip
    print(report)
    if opts.out is not None:
        opts.out.parent.mkdir(parents=True, exist_ok=True)
        opts.out.write_text(report + "\n")
    return 0
