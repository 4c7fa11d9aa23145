"""What the adapters over the C loop (``csrc/loop.c``) share: running it with the GIL
released, stopping it by a flag, the next hops it missed, closing it safely.

    class NativeLoop(CLoop): ...     # io.nfq_loop: an NFQUEUE queue
    class XskWorker(CLoop): ...      # io.afxdp: some AF_XDP sockets
    class AfPacketLoop(CLoop): ...   # io.afpacket: an AF_PACKET tap
    class Workers(LoopGroup): ...    # several loops, one thread each, one forwarder

A subclass creates ``self._loop`` (``pl_nfq_loop_new`` / ``pl_xsk_loop_new`` /
``pl_pkt_loop_new``) in its ``__init__`` after ``CLoop.__init__``, names its counters in
``_stats_of``, and frees its source in ``_free_source`` (called once, after the loop is
freed).
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

    def stats(self) -> dict[str, object]:
        """The loop's counters and its source's (``_stats_of``), with its timing; after
        ``close``, the last ones."""
        with self._life:
            if self._loop is None:
                return dict(self._final)
            ls = self._loop_stats()
            s = self._stats_of(ls)
        self._timing(ls, s)
        return s

    def _stats_of(self, ls) -> dict[str, object]:
        """The subclass's counters from ``ls`` (``struct pl_loop_stats``) and its source;
        called with ``_life`` held and the loop alive."""
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


class LoopGroup:
    """Several C loops (``self.loops``, filled by the subclass), one thread each, all
    deciding on one forwarder: the engine's part of a batch is serialized at its gate
    (~2 us), receiving and sending run in parallel.  Same interface as one ``CLoop``."""

    def __init__(self) -> None:
        self.loops: list[CLoop] = []

    @property
    def beats(self) -> int:
        """The slowest loop's passes: it stops advancing when any loop is stuck."""
        return min(loop.beats for loop in self.loops)

    def run(self, stop: threading.Event) -> None:
        """Every loop until ``stop`` (or ``request_stop``); the first loop's failure stops
        the others and is raised here."""
        errors: list[BaseException] = []

        def one(loop: CLoop) -> None:
            try:
                loop.run(stop)
            except BaseException as exc:  # noqa: BLE001 - re-raised below, after the others stop
                errors.append(exc)
                self.request_stop()

        threads = [threading.Thread(target=one, args=(loop,), name=f"pylvs-worker-{k}", daemon=True)
                   for k, loop in enumerate(self.loops[1:], start=1)]  # fmt: skip
        for t in threads:
            t.start()
        one(self.loops[0])
        for t in threads:
            t.join()
        if errors:
            raise errors[0]

    def request_stop(self) -> None:
        for loop in self.loops:
            loop.request_stop()

    def missing_addresses(self) -> set[int]:
        return set().union(*(loop.missing_addresses() for loop in self.loops))

    @staticmethod
    def sum_stats(per: list[dict]) -> dict[str, object]:
        """The loops' counters added up (engine time per batch weighted by batches)."""
        total: dict[str, object] = {k: sum(s[k] for s in per) for k in per[0]
                                    if k != "engine_us_per_batch" and isinstance(per[0][k], int | float)}  # fmt: skip
        batches = max(int(total["batches"]), 1)
        total["engine_us_per_batch"] = round(sum(s["engine_us_per_batch"] * s["batches"] for s in per) / batches, 2)
        return total

    def close(self) -> None:
        """Close every loop; the first that could not be closed is raised afterwards."""
        errors = []
        for loop in self.loops:
            try:
                loop.close()
            except RuntimeError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]
