"""What the adapters over the C loop (``csrc/loop.c``) share: running it with the GIL
released, stopping it by a flag, the next hops it missed, closing it safely.

    class NativeLoop(CLoop): ...     # io.nfq_loop: an NFQUEUE queue
    class AfXdpLoop(CLoop): ...      # io.afxdp: AF_XDP sockets

A subclass creates ``self._loop`` (``pl_nfq_loop_new`` / ``pl_xsk_loop_new``) in its
``__init__`` after ``CLoop.__init__``, reports ``stats()``, and frees its source in
``_free_source`` (called once, after the loop is freed).
"""

from __future__ import annotations

import os
import threading

import numpy as np

from pylvs._native import ffi, lib
from pylvs.dataplane import engine as en
from pylvs.dataplane.forwarder import Forwarder
from pylvs.sched import ADDR

RUN_SLICE_MS = 200  # C runs this long between two looks at the Python stop event
POLL_MS = 50  # the receive poll: how soon pl_loop_stop or the slice end is noticed
ROWS_DEFAULT = 256
CLOSE_TIMEOUT = 2.0  # seconds close() waits for run() to return (it polls every POLL_MS)

# engine verdicts as csrc/loop.h numbers them
assert (en.V_PASS, en.V_DROP, en.V_NAT, en.V_DR, en.V_TUNNEL, en.V_REJECT) == (
    lib.PL_V_PASS, lib.PL_V_DROP, lib.PL_V_NAT, lib.PL_V_DR, lib.PL_V_TUNNEL, lib.PL_V_REJECT)  # fmt: skip


class CLoop:
    """The C loop's life cycle (see the module docstring).  ``name`` says which source
    in error messages ("NFQUEUE 0", "AF_XDP eth0")."""

    def __init__(self, name: str, fwd: Forwarder) -> None:
        self.name = name
        self.fwd = fwd
        self._loop = None
        self._life = threading.Lock()  # close() against stats() from another thread
        self._final: dict[str, int | float] = {}
        self._running = threading.Lock()  # held by run()
        self._stopping = False
        self.beats = 0  # passes of run()'s loop: the director's watchdog sees them advance
        self._miss = np.zeros(lib.PL_LOOP_MISS_MAX, dtype=np.int64)

    def _started(self, loop, err) -> None:
        if loop == ffi.NULL:
            raise OSError(err[0], f"{self.name}: the C loop could not start: {os.strerror(err[0])}")
        self._loop = loop

    def run(self, stop: threading.Event) -> None:
        """Forward until ``stop`` is set or ``request_stop`` is called; a receive or
        verdict error the loop cannot go on from raises OSError."""
        with self._running:  # close() frees the loop only once this is left
            while not stop.is_set() and self._loop is not None and not self._stopping:
                rc = lib.pl_loop_run(self._loop, RUN_SLICE_MS, POLL_MS)
                self.beats += 1
                if rc < 0:
                    raise OSError(-rc, f"{self.name}: {os.strerror(-rc)}")

    def request_stop(self) -> None:
        """Stop the C loop at its next poll (a flag: signals do not reach it)."""
        with self._life:
            self._stopping = True
            if self._loop is not None:
                lib.pl_loop_stop(self._loop)

    def missing_addresses(self) -> set[int]:
        """The real servers (host-order addresses) a packet found without a next hop
        since the last call.  The loop notes dest rows; they are read back under the gate
        against the tables published now (a row noted under older tables may name
        another server, or none: that costs one needless lookup, never an error)."""
        fwd = self.fwd
        with fwd.exclusive(), self._life:
            if self._loop is None:
                return set()
            k = lib.pl_loop_misses(self._loop, ffi.cast("int64_t *", self._miss.ctypes.data), self._miss.shape[0])
            dest = fwd.tables.dest
            return {int(dest[r, ADDR]) for r in self._miss[:k].tolist() if 0 <= r < dest.shape[0]}

    def _loop_stats(self):
        """``struct pl_loop_stats`` now (the caller holds ``_life`` and the loop exists)."""
        ls = ffi.new("struct pl_loop_stats *")
        lib.pl_loop_get_stats(self._loop, ls)
        return ls

    @staticmethod
    def _timing(ls, s: dict) -> None:
        s["engine_us_per_batch"] = round(ls.engine_ns / 1e3 / max(int(ls.batches), 1), 2)
        s["gate_wait_us"] = round(ls.gate_wait_ns / 1e3, 1)

    def stats(self) -> dict[str, int | float]:
        raise NotImplementedError

    def _free_source(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Stop and free the loop, then its source."""
        if self._loop is None:
            return
        self.request_stop()
        if not self._running.acquire(timeout=CLOSE_TIMEOUT):
            # the loop still runs (a stuck thread): leaking it beats freeing it under itself
            raise RuntimeError(f"{self.name}: the C loop did not stop within {CLOSE_TIMEOUT} s")
        self._running.release()
        final = self.stats()
        with self._life:
            if self._loop is not None:
                lib.pl_loop_free(self._loop)
                self._loop = None
                self._free_source()
                self._final = final

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
