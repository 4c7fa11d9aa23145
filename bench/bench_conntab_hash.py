"""Hash flooding (issue 16): lookups of 50,000 established connections in a table of
capacity 2^16, for three sets of (client address, client port) pairs towards one VIP:80:

* *random*: what ordinary clients send;
* *old-hash flood*: pairs whose home slots under the unkeyed murmur finaliser the table
  used before all fall in 64 neighbouring slots (an attacker's precomputed set); under
  the keyed hash they are ordinary traffic;
* *known-key flood*: pairs built the same way against the table's own key, as if the key
  had leaked: what the random per-table key protects against (smaller, 2,000 pairs: each
  lookup walks the whole run).

Each timed round is one numba loop doing every lookup of a set (``conntab._lookup_in``,
the engine's own), so no Python runs per lookup.  The ratio *old-hash flood / random* is
the acceptance: about 1.  Printed at the end, and in docs/benchmarks.md.

    .venv/bin/python -m pytest bench/bench_conntab_hash.py --benchmark-only -p no:cacheprovider
"""

from __future__ import annotations

import numpy as np
import pytest
from floods import CAPACITY, FLOOD, RIP, TCP, VIP, VPORT, WINDOW, flood
from numba import njit

from pylvs.dataplane import conntab as ctm

KEY = np.array([0x5EED5EED, 0xC0DEC0DE], dtype=np.uint64)
NOW = 100.0
_RESULTS: dict[str, float] = {}


@njit(cache=True)
def _lookup_all(t, pairs, now):
    found = 0
    for k in range(pairs.shape[0]):
        if ctm._lookup_in(t, TCP, pairs[k, 0], pairs[k, 1], VIP, VPORT, now) >= 0:
            found += 1
    return found


def _sets() -> dict[str, np.ndarray]:
    slots = CAPACITY * ctm.INDEX_LOAD
    rng = np.random.default_rng(3)
    random = np.stack([rng.integers(1, 2**32 - 1, FLOOD), rng.integers(1024, 65535, FLOOD)], axis=1)
    return {
        "random": random.astype(np.int64),
        "old-hash flood": flood(FLOOD, slots, WINDOW, np.zeros(2, dtype=np.uint64), True, 1),
        "known-key flood": flood(2000, slots, WINDOW, KEY, False, 4),
    }


SETS = _sets()


@pytest.mark.parametrize("name", list(SETS))
def test_lookups(benchmark, name):
    pairs = SETS[name]
    t = ctm.create(CAPACITY, 1, key=KEY)
    for caddr, cport in pairs:
        assert ctm.new(t, TCP, int(caddr), int(cport), VIP, VPORT, RIP, VPORT, now=NOW, timeout=600.0) >= 0
    assert _lookup_all(t, pairs, NOW) == len(pairs)  # compiled, and every pair is there
    benchmark.pedantic(_lookup_all, args=(t, pairs, NOW), rounds=30, warmup_rounds=3)
    _RESULTS[name] = benchmark.stats.stats.median / len(pairs) * 1e9


@pytest.fixture(scope="module", autouse=True)
def _report(request):
    yield
    if len(_RESULTS) == len(SETS):
        tr = request.config.pluginmanager.get_plugin("terminalreporter")
        lines = ["lookup ns (median per lookup):"]
        lines += [f"  {name}: {ns:.1f} ns" for name, ns in _RESULTS.items()]
        lines.append(f"  old-hash flood / random: {_RESULTS['old-hash flood'] / _RESULTS['random']:.2f}")
        lines.append(f"  known-key flood / random: {_RESULTS['known-key flood'] / _RESULTS['random']:.0f}")
        if tr is not None:
            tr.write_line("\n".join(lines))
        else:
            print("\n".join(lines))
