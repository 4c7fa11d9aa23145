"""``make demo``: the guide's NAT setup, built, driven and shown, on this machine.

1. builds a NAT lab in network namespaces (pylvs.lab: a client, the director dir1,
   three real servers; nothing in the root namespace);
2. starts ``pylvs lvs`` in dir1 from ``examples/lvs.cf.lab-nat-demo`` (wlc, weights
   1, 2, 3), as an operator would;
3. drives HTTP clients at the VIP for a bounded time, with a live progress line;
4. prints which real server answered how often next to its weight, and the virtual
   server table in ``ipvsadm -L -n`` layout (and ``--stats``);
5. stops the director (SIGTERM) and removes the lab, also on ^C or an error.

Needs root.  ``python -m pylvs.demo [--seconds 10] [--clients 4]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from pylvs.config import load
from pylvs.ipvsadm import format_list, format_stats
from pylvs.lab import lab_topology
from pylvs.lab import topology as topo
from pylvs.lab.director import LabDirector

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "lvs.cf.lab-nat-demo"
DEFAULT_SECONDS = 10.0
MAX_SECONDS = 120.0  # a demo never runs away
MAX_CONNECTIONS = 100_000  # per run, whatever the duration
DEFAULT_WORKERS = 4
PROGRESS_EVERY = 0.25
PROGRESS_EVERY_LOG = 1.0


def drive(lab, seconds: float, workers: int, counts: Counter, errors: Counter, stop: threading.Event) -> None:
    """Closed-loop HTTP clients (one connection per request) until time or count is up."""
    deadline = time.monotonic() + seconds
    lock = threading.Lock()

    def worker() -> None:
        while not stop.is_set() and time.monotonic() < deadline:
            with lock:
                if sum(counts.values()) + sum(errors.values()) >= MAX_CONNECTIONS:
                    return
            try:
                reply = lab.http_get("client1", topo.VIP, timeout=2.0)
                name = reply.body.decode().strip() if reply.status == 200 else f"HTTP {reply.status}"
                with lock:
                    counts[name] += 1
            except OSError as exc:
                with lock:
                    errors[type(exc).__name__] += 1

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
    for t in threads:
        t.start()
    start = time.monotonic()
    live = sys.stdout.isatty()  # one line redrawn on a terminal; a line a second in a log
    every = PROGRESS_EVERY if live else PROGRESS_EVERY_LOG
    while any(t.is_alive() for t in threads):
        time.sleep(every)
        done = sum(counts.values())
        elapsed = max(time.monotonic() - start, 1e-9)
        shown = "  ".join(f"{k} {v:5d}" for k, v in sorted(counts.items()))
        line = f"  {elapsed:5.1f} s  {done:6d} connections  {done / elapsed:6.0f}/s   {shown}"
        print(f"\r{line}   " if live else line, end="" if live else "\n", flush=True)
    if live:
        print()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pylvs.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="traffic duration (max 120)")
    p.add_argument("--clients", type=int, default=DEFAULT_WORKERS, help="concurrent client loops")
    p.add_argument("--io", default="auto", help="pylvs lvs --io (default: auto)")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("make demo builds network namespaces: run it as root", file=sys.stderr)
        return 1
    seconds = min(max(args.seconds, 1.0), MAX_SECONDS)
    config = load(str(EXAMPLE))
    [www] = config.virtuals
    weights = {s.name: s.weight for s in www.servers}
    print(f"pylvs demo: NAT, scheduler {www.scheduler}, weights "
          + ", ".join(f"{k}={v}" for k, v in weights.items()) + f"  ({EXAMPLE.name})")  # fmt: skip
    print("building the lab (client, director dir1, rs1..rs3 in network namespaces) ...")
    with lab_topology("nat", real_servers=len(www.servers)) as lab, \
            tempfile.TemporaryDirectory(prefix="pylvs-demo-") as tmp:  # fmt: skip
        print("starting: pylvs lvs -c examples/lvs.cf.lab-nat-demo --nodaemon  (in dir1) ...")
        d = LabDirector(lab, Path(tmp), EXAMPLE.read_text(), io=args.io)
        try:
            print(f"director up (pid {d.pid}, io {d.status()['io']}); "
                  f"{args.clients} clients -> http://{topo.VIP}/ for {seconds:.0f} s")  # fmt: skip
            counts: Counter = Counter()
            errors: Counter = Counter()
            drive(lab, seconds, args.clients, counts, errors, threading.Event())
            time.sleep(2.5)  # one estimator tick (2 s) and a status write
            snap = d.status()
        finally:
            code = d.stop()
        total = sum(counts.values())
        wsum = sum(weights.values())
        in_table = {d["addr"]: d["weight"] for svc in snap["services"] for d in svc["dests"]}
        addr_of = {srv.name: str(srv.address) for srv in www.servers}
        print("\nreal server   weight  in table  expected  answered  share")
        for name, w in weights.items():
            share = counts[name] / total if total else 0.0
            print(f"{name:12s}  {w:6d}  {in_table.get(addr_of[name], 0):8d}  {w / wsum:8.1%}  "
                  f"{counts[name]:8d}  {share:5.1%}")  # fmt: skip
        print("(in table: the weight now; health checks enter a server at weight >> 5 and double it: slow start)")
        if errors:
            print("errors: " + ", ".join(f"{k} {v}" for k, v in errors.items()))
        print("\n# ipvsadm -L -n\n" + format_list(snap))
        print("# ipvsadm -L -n --stats\n" + format_stats(snap))
        print(f"director stopped (exit {code}); removing the lab ...")
    print("done: nothing left behind")
    return 0 if total and not errors and code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
