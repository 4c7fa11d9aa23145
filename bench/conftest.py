"""Shared bench fixtures.  ``sched_results`` collects median decisions/s from
bench_sched.py; the table is printed at the end of the run."""

from __future__ import annotations

import pytest

_SCHED: dict[tuple[str, int, str], float] = {}
_SCHED_IMPLS = ["numba batch", "numba linear", "C batch", "numba single", "C single", "Python twin"]


@pytest.fixture
def sched_results():
    def record(name: str, n: int, impl: str, rate: float) -> None:
        _SCHED[(name, n, impl)] = rate
    return record


def _fmt(rate: float | None) -> str:
    if rate is None:
        return "-"
    if rate >= 1e6:
        return f"{rate / 1e6:.1f} M"
    if rate >= 1e3:
        return f"{rate / 1e3:.1f} k"
    return f"{rate:.0f}"


def pytest_terminal_summary(terminalreporter):
    if not _SCHED:
        return
    tr = terminalreporter
    tr.write_sep("=", "scheduler decisions per second (median)")
    names = list(dict.fromkeys(k[0] for k in _SCHED))
    sizes = sorted({k[1] for k in _SCHED})
    head = f"| sched | servers | {' | '.join(_SCHED_IMPLS)} | numba/C same algorithm |"
    tr.write_line(head)
    tr.write_line("|" + "---|" * (len(_SCHED_IMPLS) + 3))
    for name in names:
        for n in sizes:
            rates = [_SCHED.get((name, n, impl)) for impl in _SCHED_IMPLS]
            if not any(rates):
                continue
            # numba/C for the same algorithm: the linear scan where there is one
            nb = rates[1] or rates[0]
            cb = rates[2]
            ratio = f"{nb / cb:.2f}" if nb and cb else "-"
            single = _SCHED.get((name, n, "numba single"))
            inter = _SCHED.get((name, n, "interleaved numba/C"))
            if inter is not None:
                ratio += f" (interleaved {inter:.2f})"
            tr.write_line(f"| {name} | {n} | {' | '.join(_fmt(r) for r in rates)} | {ratio} |"
                          + (f"  ({1e9 / single:.0f} ns/single)" if single else ""))


# --- bench_engine.py: engine_results collects median seconds per batch (and the
# breakdown / bytes-per-entry rows); its table is printed by _EngineSummary. ---------
_ENGINE: dict[tuple[str, int, object], float] = {}


@pytest.fixture
def engine_results():
    def record(case: str, size: int, n, value: float) -> None:
        _ENGINE[(case, size, n)] = value
    return record


class _EngineSummary:
    def pytest_terminal_summary(self, terminalreporter):
        if not _ENGINE:
            return
        tr = terminalreporter
        timed = {k: v for k, v in _ENGINE.items() if isinstance(k[2], int) and k[1] > 0}
        if timed:
            tr.write_sep("=", "engine throughput, median: packets/s (ns/packet)")
            batches = sorted({k[2] for k in timed})
            tr.write_line(f"| case | IP bytes | {' | '.join(f'batch {b}' for b in batches)} |")
            tr.write_line("|" + "---|" * (len(batches) + 2))
            for case, size in dict.fromkeys((k[0], k[1]) for k in timed):
                cells = []
                for b in batches:
                    sec = timed.get((case, size, b))
                    cells.append("-" if sec is None else f"{_fmt(b / sec)} ({sec / b * 1e9:.0f} ns)")
                tr.write_line(f"| {case} | {size} | {' | '.join(cells)} |")
        split = {k: v for k, v in _ENGINE.items() if k[0].startswith("split ")}
        if split:
            parts = list(dict.fromkeys(k[2] for k in split))
            tr.write_sep("=", "where the time goes: median us per batch of 64 B packets")
            tr.write_line(f"| case | batch | {' | '.join(parts)} |")
            tr.write_line("|" + "---|" * (len(parts) + 2))
            for case, n in dict.fromkeys((k[0], k[1]) for k in split):
                cells = [f"{split.get((case, n, p), 0) / 1e3:.1f}" for p in parts]
                tr.write_line(f"| {case[6:]} | {n} | {' | '.join(cells)} |")
        if ("bytes/entry", 0, 1 << 20) in _ENGINE:
            tr.write_line(f"connection table: {_ENGINE[('bytes/entry', 0, 1 << 20)]:.1f} bytes per entry "
                          f"at capacity 2^20 (entry record {_ENGINE.get(('entry dtype', 0, 0), 0):.0f} B)")


def pytest_configure(config):
    config.pluginmanager.register(_EngineSummary(), "pylvs-engine-summary")
