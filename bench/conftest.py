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
