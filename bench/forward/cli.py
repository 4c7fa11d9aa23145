"""Command line of ``python -m bench.forward`` (see the package docstring).  Parsing is pure."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.forward.summary import CONFIGS, METRIC_GROUPS

DEFAULT_RUNS = 3  # issue 5: "3 runs, medians"
DEFAULT_DUR = 5  # seconds per measurement, as anchors.sh's default
QUICK_RUNS, QUICK_DUR = 1, 2  # --quick: a smoke test, numbers not to be quoted
DEFAULT_OUT = "docs/bench-forward-latest.md"
CPS_CONNS = 32  # anchors.sh CPS_CONNS: wrk -c32 with Connection: close
RPS_CONNS = 64  # anchors.sh RPS_CONNS: wrk -c64 keep-alive
READY_TIMEOUT = 60.0  # s for a forwarder to make the VIP answer HTTP (pylvs may compile with numba first)
MAX_RUNS = 20
MAX_DUR = 120  # every generator is bounded: no measurement longer than this


@dataclass
class Options:
    runs: int
    dur: int  # whole seconds: iperf3 -t takes an integer
    configs: list[str]
    metrics: list[str]  # the --metrics groups, in canonical order
    out: Path | None
    quick: bool
    python: str  # the interpreter that runs `-m pylvs lvs` (D1-D4, DR, DRL, DRX)
    ready_timeout: float
    keep_work: bool
    cps_conns: int
    rps_conns: int
    argv: list[str]

    @property
    def metric_keys(self) -> list[str]:
        """The report's metrics (lat -> lat_p50, lat_p99)."""
        return [k for g in self.metrics for k in METRIC_GROUPS[g]]

    @property
    def command(self) -> str:
        return "python -m bench.forward" + ("" if not self.argv else " " + shlex.join(self.argv))


def csv_choice(choices: Sequence[str], what: str):
    """An argparse type: a comma-separated list of `choices`, deduplicated in order."""

    def parse(text: str) -> list[str]:
        items = [x.strip() for x in text.split(",") if x.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"empty {what} list")
        bad = [x for x in items if x not in choices]
        if bad:
            raise argparse.ArgumentTypeError(
                f"unknown {what} {', '.join(bad)} (choose from {','.join(choices)})")
        return list(dict.fromkeys(items))

    return parse


def bounded(kind: type, lo: float, hi: float):
    """An argparse type: `kind(text)` within lo..hi (shared by the bench command lines)."""
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"{v} is outside {lo:g}..{hi:g}")
        return v

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.forward",
        description="Forwarding benchmark: plain kernel forwarding (A), nftables DNAT (B), "
                    "HAProxy (C) and pylvs (D1 nfqueue, D2 nfq-native, D3 nfq-loop, D3W two workers, "
                    "D3F firewall-mark HTTP, D4 afxdp, D4W two afxdp workers, "
                    "DR afpacket, DRL nfq-loop DR, DRX afxdp DR) in the network-namespace lab, interleaved, "
                    "medians of the runs, ratios against A.")
    p.add_argument("--runs", type=bounded(int, 1, MAX_RUNS), default=None,
                   help=f"runs (default {DEFAULT_RUNS}; --quick: {QUICK_RUNS})")
    p.add_argument("--dur", type=bounded(int, 1, MAX_DUR), default=None,
                   help=f"seconds per measurement (default {DEFAULT_DUR}; --quick: {QUICK_DUR})")
    p.add_argument("--configs", type=csv_choice(list(CONFIGS), "config"), default=list(CONFIGS),
                   help=f"comma-separated (default {','.join(CONFIGS)}); ratios need A")
    p.add_argument("--metrics", type=csv_choice(list(METRIC_GROUPS), "metric"), default=list(METRIC_GROUPS),
                   help=f"comma-separated (default {','.join(METRIC_GROUPS)})")
    p.add_argument("--out", default=DEFAULT_OUT,
                   help=f"markdown report path (default {DEFAULT_OUT}); '-' prints only")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke test: {QUICK_RUNS} run of {QUICK_DUR} s (unless --runs/--dur say otherwise)")
    p.add_argument("--python", default=sys.executable,
                   help="python that runs `-m pylvs lvs` in dir1 (default: this one)")
    p.add_argument("--ready-timeout", type=bounded(float, 1, 300), default=READY_TIMEOUT,
                   help=f"seconds for a forwarder to make the VIP answer HTTP (default {READY_TIMEOUT:g})")
    p.add_argument("--keep-work", action="store_true",
                   help="keep the temporary directory (forwarder logs, generated lvs.cf, nginx logs)")
    p.add_argument("--cps-conns", type=bounded(int, 1, 1000), default=CPS_CONNS, help=argparse.SUPPRESS)
    p.add_argument("--rps-conns", type=bounded(int, 1, 1000), default=RPS_CONNS, help=argparse.SUPPRESS)
    return p


def parse_args(argv: Sequence[str] | None = None) -> Options:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = build_parser().parse_args(argv)
    runs = a.runs if a.runs is not None else (QUICK_RUNS if a.quick else DEFAULT_RUNS)
    dur = a.dur if a.dur is not None else (QUICK_DUR if a.quick else DEFAULT_DUR)
    # Canonical order, so A comes first in every run and the tables read the same way.
    configs = [c for c in CONFIGS if c in a.configs]
    metrics = [m for m in METRIC_GROUPS if m in a.metrics]
    return Options(runs=runs, dur=dur, configs=configs, metrics=metrics,
                   out=None if a.out == "-" else Path(a.out), quick=a.quick, python=a.python,
                   ready_timeout=a.ready_timeout, keep_work=a.keep_work, cps_conns=a.cps_conns, rps_conns=a.rps_conns,
                   argv=argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the report and write it to --out.  Exit 0 with a report
    (configurations that could not run are stated in it), 1 when A never ran (no ratio
    means anything then), 2 for usage and setup errors."""
    from bench.forward.harness import Bench, reference_ran  # needs pylvs and root; parsing does not

    opts = parse_args(argv)
    bench = Bench(opts)
    try:
        report = bench.run()
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(f"bench.forward: {exc.code}", file=sys.stderr)
            return 2
        raise
    print(report)
    if opts.out is not None:
        opts.out.parent.mkdir(parents=True, exist_ok=True)
        opts.out.write_text(report + "\n")
        print(f"bench.forward: report written to {opts.out}", file=sys.stderr)
    if "A" in opts.configs and not reference_ran(bench):
        print("bench.forward: A (the reference) produced no value", file=sys.stderr)
        return 1
    return 0
