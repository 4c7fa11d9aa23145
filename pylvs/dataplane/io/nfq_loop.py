"""NFQUEUE with the whole forwarding loop in C: no Python per packet or per batch.

    loop = NativeLoop(0, fwd)      # binds queue 0 in this thread's netns
    loop.run(stop)                 # until stop (a threading.Event) is set
    loop.close()

``run`` hands the thread to ``pl_loop_run`` (csrc/loop.c) with the GIL released:
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

``classify=True`` makes the queue the *classify pass* instead (docs/netctl.md): a NAT
real server's packets, queued from raw PREROUTING, are looked up on the reply side of the
connection table (``engine_cfunc.CLASSIFY``); ours go back with ``NF_REPEAT`` and the
``OWNED_MARK`` bit set (the raw chain then untracks them and the forwarding queue takes
them after routing), the server's own connections with ``NF_ACCEPT``, tracked, for the
kernel to route and NAT.  ``Workers(..., classify=queue)`` runs one beside the others.
"""

from __future__ import annotations

from pylvs._native import ffi, lib
from pylvs.dataplane.engine_cfunc import BatchArrays
from pylvs.dataplane.forwarder import Forwarder
from pylvs.dataplane.io import _verdict as vd
from pylvs.dataplane.io._cloop import ROWS_DEFAULT, CLoop, LoopGroup
from pylvs.dataplane.io.nfq_native import open_queue
from pylvs.netctl.plan import OWNED_MARK

assert lib.PL_OWNED_MARK == OWNED_MARK, "csrc/loop.h PL_OWNED_MARK and netctl.plan.OWNED_MARK differ"

_LOOP_KEYS = ("packets", "batches", "accepted", "dropped", "mangled", "rejected", "reject_send_errors", "unpublished")
# struct pl_loop_stats names its frame counters for every adapter; here every frame is DR
_DR_KEYS = {"dr_sent": "sent", "dr_unresolved": "no_next_hop", "dr_too_big": "too_big", "dr_gso": "gso",
            "dr_send_errors": "send_errors"}  # fmt: skip


class NativeLoop(CLoop):
    """One NFQUEUE queue served by the C loop (see the module docstring)."""

    def __init__(self, queue_num: int, fwd: Forwarder, *, rows: int = ROWS_DEFAULT, fail_open: bool = True,
                 gso: bool = True, rcvbuf: int = 64 << 20, maxlen: int = 8192,
                 stride: int | None = None, classify: bool = False) -> None:  # fmt: skip
        if not 0 <= queue_num <= 0xFFFF:
            raise ValueError(f"queue_num {queue_num} is not 0..65535")
        super().__init__(f"NFQUEUE {queue_num}" + (" (classify)" if classify else ""), fwd)
        self.queue_num = queue_num
        self.fail_open = fail_open
        self.classify = classify
        self.arrays = BatchArrays(rows, vd.stride_for(gso) if stride is None else stride)
        cfwd = fwd.native()  # compiles or loads the cfunc before anything is bound
        self._q = open_queue(queue_num, fail_open, gso, maxlen, rcvbuf, rows)
        err = ffi.new("int *")
        flags = (lib.PL_LOOP_F_FAIL_OPEN if fail_open else 0) | (lib.PL_LOOP_F_CLASSIFY if classify else 0)
        try:
            self._started(lib.pl_nfq_loop_new(self._q, fwd.gate, cfwd, self.arrays.c, flags, err), err)
        except OSError:
            self._free_source()
            raise

    def _free_source(self) -> None:
        if self._q is not None:
            lib.pl_nfq_close(self._q)  # the kernel unbinds the queue
            self._q = None

    def _stats_of(self, ls) -> dict[str, object]:
        qs = ffi.new("struct pl_nfq_stats *")
        lib.pl_nfq_get_stats(self._q, qs)
        s: dict[str, object] = {k: int(getattr(ls, k)) for k in _LOOP_KEYS}
        if self.classify:
            s["owned"] = int(ls.owned)
        s.update({k: int(getattr(ls, c)) for k, c in _DR_KEYS.items()})
        s["packets"] += int(qs.oversize)
        s["accepted"] += int(qs.oversize)
        s["dropped"] += int(qs.payload_errors)
        s["mangled"] -= int(qs.payload_errors)
        s["recv_errors"] = int(qs.enobufs + qs.recv_errors)
        for k in ("gso_packets", "csum_fixed", "oversize", "enobufs", "malformed", "nl_errors", "sendmsgs",
                  "send_errors", "payload_errors"):  # fmt: skip
            s[k] = int(getattr(qs, k))
        return s


class Workers(LoopGroup):
    """``n`` C loops on queues ``first .. first + n - 1``, one thread each, all deciding on
    one forwarder.  The rules spread flows over the queues (``--queue-balance``: a hash of
    the addresses, so the two directions of a NAT connection may land on different
    queues); with one shared connection table behind the gate that does not matter.  The
    engine's part of a batch is serialized at the gate (~2 us); the receive and the
    verdict ``sendmsg`` (where the kernel re-injects the packet: most of a worker's time)
    run in parallel.  Same interface as ``NativeLoop``."""

    def __init__(self, first_queue: int, n: int, fwd: Forwarder, *, classify: int | None = None,
                 **kw: object) -> None:  # fmt: skip
        if n < 1 or first_queue + n - 1 > 0xFFFF:
            raise ValueError(f"{n} workers from queue {first_queue}: queues are 0..65535")
        super().__init__()
        self.classifier: NativeLoop | None = None
        try:
            for k in range(n):
                self.loops.append(NativeLoop(first_queue + k, fwd, **kw))
            if classify is not None:
                self.classifier = NativeLoop(classify, fwd, classify=True, **kw)
                self.loops.append(self.classifier)
        except BaseException:
            self.close()
            raise

    def stats(self) -> dict[str, object]:
        forwarding = [loop for loop in self.loops if loop is not self.classifier]
        per = [loop.stats() for loop in forwarding]
        total = self.sum_stats(per)
        total["workers"] = [{"queue": loop.queue_num, "packets": s["packets"], "batches": s["batches"]}
                            for loop, s in zip(forwarding, per, strict=True)]  # fmt: skip
        if self.classifier is not None:
            total["classify"] = self.classifier.stats()
        return total
