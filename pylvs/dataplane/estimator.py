"""Rate estimates as the kernel's estimator makes them (``ip_vs_est.c``, reference 7.9).

Every ``EST_INTERVAL`` (2 s) the estimator takes the delta of each 64-bit counter since
the last tick and folds it into an exponentially weighted moving average of weight 1/4,
in fixed point: connections and packets scaled by 2^10 per second, bytes by 2^5::

    rate  = (n - last) << 9          # per 2 s -> per s, times 2^10   (bytes: << 4, 2^5)
    avg  += (rate - avg) >> 2        # arithmetic shift, as the kernel's s64 maths
    shown = (avg + 0x1FF) >> 10      # ip_vs_read_estimator            (bytes: (avg + 0xF) >> 5)

Pure code: the caller owns the clock and calls ``tick`` every ``EST_INTERVAL`` seconds
(the director does, from its control thread, on copies of the counters).
``ipvsadm -Z`` zeroes counters and estimators together (``zero``).
"""

from __future__ import annotations

import numpy as np

from pylvs.dataplane.engine import S_CONNS, S_INBYTES, S_INPKTS, S_OUTBYTES, S_OUTPKTS, STAT_NAMES

EST_INTERVAL = 2.0  # seconds between ticks (ip_vs_est.c: 2 * HZ)
RATE_NAMES = ("cps", "inpps", "outpps", "inbps", "outbps")  # ipvsadm --rate columns
# Fixed-point shifts: the 2 s delta scaled to per-second in 2^10 (counts) or 2^5 (bytes).
_COUNT_SHIFT, _BYTE_SHIFT = 9, 4
_COUNT_ROUND, _COUNT_SCALE = 0x1FF, 10
_BYTE_ROUND, _BYTE_SCALE = 0xF, 5
_IS_BYTES = np.array([c in (S_INBYTES, S_OUTBYTES) for c in range(len(STAT_NAMES))])
assert tuple(STAT_NAMES[c] for c in (S_CONNS, S_INPKTS, S_OUTPKTS, S_INBYTES, S_OUTBYTES)) == (
    "conns", "inpkts", "outpkts", "inbytes", "outbytes")  # RATE_NAMES follow this order


class Estimator:
    """EWMA state for one counter array (``int64[rows, 5]`` in ``STAT_NAMES`` order)."""

    def __init__(self, rows: int) -> None:
        self.last = np.zeros((rows, len(STAT_NAMES)), dtype=np.int64)
        self.avg = np.zeros((rows, len(STAT_NAMES)), dtype=np.int64)
        self.primed = np.zeros(rows, dtype=bool)  # a row's first tick only records `last`

    def tick(self, counters: np.ndarray) -> None:
        """Fold the deltas since the last tick into the averages (ip_vs_estimation_timer)."""
        delta = counters - self.last
        rate = np.where(_IS_BYTES, delta << _BYTE_SHIFT, delta << _COUNT_SHIFT)
        upd = self.avg + ((rate - self.avg) >> 2)
        self.avg[:] = np.where(self.primed[:, None], upd, 0)
        self.last[:] = counters
        self.primed[:] = True

    def rates(self) -> np.ndarray:
        """Per-second rates, rounded as ip_vs_read_estimator: int64[rows, 5] (RATE_NAMES)."""
        return np.where(_IS_BYTES, (self.avg + _BYTE_ROUND) >> _BYTE_SCALE,
                        (self.avg + _COUNT_ROUND) >> _COUNT_SCALE)

    def remap(self, mapping: np.ndarray, rows: int) -> Estimator:
        """State for a recompiled table: old row i becomes ``mapping[i]`` (-1: gone)."""
        new = Estimator(rows)
        keep = mapping >= 0
        for name in ("last", "avg", "primed"):
            getattr(new, name)[mapping[keep]] = getattr(self, name)[keep]
        return new

    def zero(self, rows: slice = slice(None)) -> None:
        """ipvsadm -Z (of one service: its ``rows``): the caller zeroes its counters; the
        estimator starts over for those rows."""
        self.last[rows] = 0
        self.avg[rows] = 0
        self.primed[rows] = True  # counters are 0 now: the next tick measures from 0
