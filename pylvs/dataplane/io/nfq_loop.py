"""NFQUEUE with the whole forwarding loop in C: no Python per packet or per batch.

    loop = NativeLoop(0, fwd)      # binds queue 0 in this thread's netns
    loop.run(stop)                 # until stop (a threading.Event) is set
    loop.close()

``run`` hands the thread to ``pl_nfq_loop_run`` (csrc/loop.c) with the GIL released:
receive a batch (``pl_nfq_recv``: recvmmsg straight into the rows), take the forwarder's
gate, call the engine cfunc (``engine_cfunc.ENGINE``) and the C rewrite
(``pl_engine_batch``), send direct-routing frames (AF_PACKET, to the next hop the control
plane compiled per dest row) and ICMP rejects (raw IP), leave the gate, and send every
verdict of the batch in one ``sendmsg`` (``pl_nfq_verdict``).  It comes back to Python
only every ``RUN_SLICE_MS`` to look at ``stop``, so a stop is noticed within that.

What changes the forwarding state reaches the loop through the forwarder: every swap
republishes the ``struct pl_fwd`` it reads (under the gate), ``Forwarder.set_next_hops``
the next hops.  A DR packet whose real server has no next hop yet is dropped, counted
(``dr_unresolved``) and its row remembered: ``missing_addresses`` hands them to the
control thread, which resolves them.  Queue options are ``nfq_native``'s (fail-open, GSO,
queue length, receive buffer); with fail-open, packets that arrive before the first
tables are published are accepted (``unpublished``).  The C loop reads CLOCK_MONOTONIC:
the forwarder's clock must be ``time.monotonic``.
"""

from __future__ import annotations

import os
import threading

import numpy as np

from pylvs._native import ffi, lib
from pylvs.dataplane import engine as en
from pylvs.dataplane.engine_cfunc import BatchArrays
from pylvs.dataplane.forwarder import Forwarder
from pylvs.dataplane.io import _verdict as vd
from pylvs.dataplane.io.nfq_native import open_queue
from pylvs.sched import ADDR

RUN_SLICE_MS = 200  # C runs this long between two looks at the Python stop event
POLL_MS = 50  # the receive poll: how soon pl_nfq_loop_stop or the slice end is noticed
ROWS_DEFAULT = 256
CLOSE_TIMEOUT = 2.0  # seconds close() waits for run() to return (it polls every POLL_MS)

# engine verdicts as csrc/loop.h numbers them
assert (en.V_PASS, en.V_DROP, en.V_NAT, en.V_DR, en.V_TUNNEL, en.V_REJECT) == (
    lib.PL_V_PASS, lib.PL_V_DROP, lib.PL_V_NAT, lib.PL_V_DR, lib.PL_V_TUNNEL, lib.PL_V_REJECT)  # fmt: skip

_LOOP_KEYS = ("packets", "batches", "accepted", "dropped", "mangled", "dr_sent", "dr_unresolved", "dr_too_big",
              "dr_gso", "dr_send_errors", "rejected", "reject_send_errors", "unpublished")  # fmt: skip


class NativeLoop:
    """One NFQUEUE queue served by the C loop (see the module docstring)."""

    def __init__(self, queue_num: int, fwd: Forwarder, *, rows: int = ROWS_DEFAULT, fail_open: bool = True,
                 gso: bool = True, rcvbuf: int = 64 << 20, maxlen: int = 8192,
                 stride: int | None = None) -> None:  # fmt: skip
        if not 0 <= queue_num <= 0xFFFF:
            raise ValueError(f"queue_num {queue_num} is not 0..65535")
        self.queue_num = queue_num
        self.fwd = fwd
        self.fail_open = fail_open
        self.arrays = BatchArrays(rows, vd.stride_for(gso) if stride is None else stride)
        self._life = threading.Lock()  # close() against stats() from another thread
        self._final: dict[str, int] = {}
        self._running = threading.Lock()  # held by run()
        self._stopping = False
        cfwd = fwd.native()  # compiles or loads the cfunc before anything is bound
        self._q = open_queue(queue_num, fail_open, gso, maxlen, rcvbuf, rows)
        err = ffi.new("int *")
        flags = lib.PL_LOOP_F_FAIL_OPEN if fail_open else 0
        self._loop = lib.pl_nfq_loop_new(self._q, fwd.gate, cfwd, self.arrays.c, flags, err)
        if self._loop == ffi.NULL:
            lib.pl_nfq_close(self._q)
            self._q = None
            raise OSError(err[0], f"NFQUEUE {queue_num}: the C loop could not start: {os.strerror(err[0])}")
        self._miss = np.zeros(lib.PL_LOOP_MISS_MAX, dtype=np.int64)

    def run(self, stop: threading.Event) -> None:
        """Forward until ``stop`` is set or ``request_stop`` is called; a receive or
        verdict error the loop cannot go on from raises OSError."""
        with self._running:  # close() frees the loop only once this is left
            while not stop.is_set() and self._loop is not None and not self._stopping:
                rc = lib.pl_nfq_loop_run(self._loop, RUN_SLICE_MS, POLL_MS)
                if rc < 0:
                    raise OSError(-rc, f"NFQUEUE {self.queue_num}: {os.strerror(-rc)}")

    def request_stop(self) -> None:
        """Stop the C loop at its next poll (a flag: signals do not reach it)."""
        with self._life:
            self._stopping = True
            if self._loop is not None:
                lib.pl_nfq_loop_stop(self._loop)

    def missing_addresses(self) -> set[int]:
        """The real servers (host-order addresses) a DR packet found without a next hop
        since the last call.  The loop notes dest rows; they are read back under the gate
        against the tables published now (a row noted under older tables may name
        another server, or none: that costs one needless lookup, never an error)."""
        fwd = self.fwd
        with fwd.exclusive(), self._life:
            if self._loop is None:
                return set()
            k = lib.pl_nfq_loop_misses(self._loop, ffi.cast("int64_t *", self._miss.ctypes.data),
                                       self._miss.shape[0])
            dest = fwd.tables.dest
            return {int(dest[r, ADDR]) for r in self._miss[:k].tolist() if 0 <= r < dest.shape[0]}

    def stats(self) -> dict[str, int | float]:
        with self._life:
            if self._loop is None:
                return dict(self._final)
            ls = ffi.new("struct pl_loop_stats *")
            lib.pl_nfq_loop_get_stats(self._loop, ls)
            qs = ffi.new("struct pl_nfq_stats *")
            lib.pl_nfq_get_stats(self._q, qs)
        s: dict[str, int | float] = {k: int(getattr(ls, k)) for k in _LOOP_KEYS}
        s["packets"] += int(qs.oversize)
        s["accepted"] += int(qs.oversize)
        s["dropped"] += int(qs.payload_errors)
        s["mangled"] -= int(qs.payload_errors)
        s["recv_errors"] = int(qs.enobufs + qs.recv_errors)
        for k in ("gso_packets", "csum_fixed", "oversize", "enobufs", "malformed", "nl_errors", "sendmsgs",
                  "send_errors", "payload_errors"):  # fmt: skip
            s[k] = int(getattr(qs, k))
        s["engine_us_per_batch"] = round(ls.engine_ns / 1e3 / max(int(ls.batches), 1), 2)
        s["gate_wait_us"] = round(ls.gate_wait_ns / 1e3, 1)
        return s

    def close(self) -> None:
        """Stop and free the loop, then close the socket (the kernel unbinds the queue)."""
        if self._loop is None:
            return
        self.request_stop()
        if not self._running.acquire(timeout=CLOSE_TIMEOUT):
            # the loop still runs (a stuck thread): leaking it beats freeing it under itself
            raise RuntimeError(f"NFQUEUE {self.queue_num}: the C loop did not stop within {CLOSE_TIMEOUT} s")
        self._running.release()
        final = self.stats()
        with self._life:
            if self._loop is not None:
                lib.pl_nfq_loop_free(self._loop)
                lib.pl_nfq_close(self._q)
                self._loop = self._q = None
                self._final = final

    def __enter__(self) -> NativeLoop:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Workers:
    """``n`` C loops on queues ``first .. first + n - 1``, one thread each, all deciding on
    one forwarder.  The rules spread flows over the queues (``--queue-balance``: a hash of
    the addresses, so the two directions of a NAT connection may land on different
    queues); with one shared connection table behind the gate that does not matter.  The
    engine's part of a batch is serialized at the gate (~2 us); the receive and the
    verdict ``sendmsg`` (where the kernel re-injects the packet: most of a worker's time)
    run in parallel.  Same interface as ``NativeLoop``."""

    def __init__(self, first_queue: int, n: int, fwd: Forwarder, **kw: object) -> None:
        if n < 1 or first_queue + n - 1 > 0xFFFF:
            raise ValueError(f"{n} workers from queue {first_queue}: queues are 0..65535")
        self.loops: list[NativeLoop] = []
        try:
            for k in range(n):
                self.loops.append(NativeLoop(first_queue + k, fwd, **kw))
        except BaseException:
            self.close()
            raise

    def run(self, stop: threading.Event) -> None:
        """Every loop until ``stop`` (or ``request_stop``); the first loop's failure stops
        the others and is raised here."""
        errors: list[BaseException] = []

        def one(loop: NativeLoop) -> None:
            try:
                loop.run(stop)
            except BaseException as exc:  # noqa: BLE001 - re-raised below, after the others stop
                errors.append(exc)
                self.request_stop()

        threads = [threading.Thread(target=one, args=(loop,), name=f"pylvs-worker-{loop.queue_num}", daemon=True)
                   for loop in self.loops[1:]]  # fmt: skip
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

    def stats(self) -> dict[str, object]:
        per = [loop.stats() for loop in self.loops]
        total: dict[str, object] = {k: sum(s[k] for s in per) for k in per[0] if k != "engine_us_per_batch"}
        batches = max(int(total["batches"]), 1)
        total["engine_us_per_batch"] = round(sum(s["engine_us_per_batch"] * s["batches"] for s in per) / batches, 2)
        total["workers"] = [{"queue": loop.queue_num, "packets": s["packets"], "batches": s["batches"]}
                            for loop, s in zip(self.loops, per, strict=True)]  # fmt: skip
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
