"""Cold start: from ``pylvs lvs`` started to the first connection forwarded through the VIP.

    sudo .venv/bin/python -m bench.cold_start [--warm-runs 3]      # make bench-cold-start

In a NAT lab (one client, dir1, one real server), the director is started as an operator
starts it (``python -m pylvs lvs -c FILE --nodaemon``) and the client asks the VIP for
HTTP every 50 ms until a real server answers; the time from the start to that answer is
the figure.  Twice over:

* *empty cache*: ``NUMBA_CACHE_DIR`` names a new, empty folder, so every kernel is
  compiled at start: what a first start would cost without ``pylvs.precompile``;
* *precompiled*: another empty folder, filled by ``python -m pylvs.precompile`` (what
  ``make deps`` runs after installing), then the director started ``--warm-runs`` times
  with it, median reported: the first start of a fresh install.

Everything runs in namespaces the bench creates and removes; each director is stopped by
PID; every wait is bounded.  The numbers go to docs/benchmarks.md by hand.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from pylvs.lab import build_lab
from pylvs.lab import topology as topo
from pylvs.lab.lvscf import Service, lvs_cf
from pylvs.lab.netns import end_process

REPO = Path(__file__).resolve().parents[1]
FIRST_CONNECTION_TIMEOUT = 300.0  # s: a cold cache compiles for a minute or two here
PROBE_EVERY = 0.05
PROBE_TIMEOUT = 0.5
STOP_GRACE = 10.0


def time_to_first_connection(lab, cf: Path, env: dict[str, str], log: Path) -> float:
    argv = [sys.executable, "-m", "pylvs", "lvs", "-c", str(cf), "--nodaemon", "--status",
            str(cf.with_suffix(".status.json")), "--control", str(cf.with_suffix(".ctl"))]  # fmt: skip
    with open(log, "ab") as out:
        t0 = time.monotonic()
        popen = lab.popen("dir1", argv, what="pylvs lvs", stdout=out, stderr=subprocess.STDOUT, env=env,
                          cwd=str(REPO))  # fmt: skip
    try:
        while time.monotonic() - t0 < FIRST_CONNECTION_TIMEOUT:
            if popen.poll() is not None:
                raise SystemExit(f"pylvs lvs exited {popen.returncode}: see {log}")
            try:
                if lab.http_get("client1", topo.VIP, timeout=PROBE_TIMEOUT).status == 200:
                    return time.monotonic() - t0
            except (OSError, ValueError):
                pass
            time.sleep(PROBE_EVERY)
        raise SystemExit(f"no connection through the VIP within {FIRST_CONNECTION_TIMEOUT:.0f} s: see {log}")
    finally:
        end_process(popen.pid, None, grace=STOP_GRACE, popen=popen)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.cold_start", description=__doc__.split("\n")[0])
    p.add_argument("--warm-runs", type=int, default=3)
    a = p.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("python -m bench.cold_start needs root (network namespaces)")
    lab = build_lab("nat", real_servers=1)
    try:
        with tempfile.TemporaryDirectory(prefix="pylvs-cold-") as work:
            cf = Path(work) / "lvs.cf"
            cf.write_text(lvs_cf(lab, [Service(scheduler="rr")]))
            log = Path(work) / "lvs.log"
            cold_dir, pre_dir = Path(work) / "cache-empty", Path(work) / "cache-precompiled"
            cold_dir.mkdir()
            pre_dir.mkdir()
            cold = time_to_first_connection(lab, cf, dict(os.environ, NUMBA_CACHE_DIR=str(cold_dir)), log)
            env = dict(os.environ, NUMBA_CACHE_DIR=str(pre_dir))
            t0 = time.monotonic()
            subprocess.run([sys.executable, "-m", "pylvs.precompile"], env=env, check=True, cwd=str(REPO),
                           timeout=FIRST_CONNECTION_TIMEOUT, capture_output=True)  # fmt: skip
            precompile = time.monotonic() - t0
            warm = [time_to_first_connection(lab, cf, env, log) for _ in range(a.warm_runs)]
    finally:
        lab.destroy()
    print("| numba cache | start to first forwarded connection |")
    print("|---|---|")
    print(f"| empty: every kernel compiled at start | {cold:.1f} s |")
    print(f"| empty, then `python -m pylvs.precompile` (what `make deps` runs; it took {precompile:.0f} s) | "
          f"{statistics.median(warm):.1f} s (median of {len(warm)}: {' '.join(f'{w:.1f}' for w in warm)}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
