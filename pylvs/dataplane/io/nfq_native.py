"""Batched NFQUEUE adapter in C (``csrc/nfq.c`` over libmnl + libnetfilter_queue).

    q = NativeQueue(0, handle, on_dr=send_dr)      # binds queue 0 in this thread's netns
    q.run(stop)                                    # until stop (a threading.Event) is set
    q.close()

Per cycle, two C calls (cffi releases the GIL for both): ``pl_nfq_recv`` waits up to
``poll`` seconds for a packet, then drains what is queued without blocking, with
``recvmmsg`` straight into the batch rows (up to ``rows`` packets, each moved to
``rewrite.HEADROOM`` in its row, its mark in ``batch.marks``); ``handle(batch)``
(the director's ``engine.process`` closure) decides and rewrites in place; then
``pl_nfq_verdict`` sends every verdict of the batch in one ``sendmsg`` whose iovec
points at the rewritten rows (payload attached only for NAT/TUNNEL).  The mapping of
engine verdicts to NFQUEUE verdicts is ``_verdict``'s.

Queue options, set at bind: copy mode packet (whole packets), kernel queue length
``maxlen``, ``NFQA_CFG_F_FAIL_OPEN`` unless ``fail_open=False`` (when the queue is full
the kernel accepts packets itself instead of dropping them), ``NFQA_CFG_F_GSO`` when
``gso=True`` (GSO super-packets reach us whole instead of being segmented and
checksummed by the kernel first: the lab's D2 -> D2G, bulk TCP 0.07 -> 0.73 of plain
forwarding), ``SO_RCVBUFFORCE`` ``rcvbuf``.  With GSO the rows are
``_verdict.STRIDE_GSO`` (68 KiB) instead of ``engine.STRIDE_DEFAULT`` (2 KiB); pass fewer
``rows`` to bound memory (rows x stride bytes).

GSO packets flagged ``NFQA_SKB_CSUMNOTREADY`` carry a partial TCP/UDP checksum (the
pseudo-header sum only); the C side completes it before the engine sees the packet, so
the engine's incremental update (RFC 1624) yields a correct checksum (``csum_fixed``).
A payload verdict makes the kernel mark the packet ``CHECKSUM_NONE`` (nfqnl_mangle), so
the checksum we hand back must be whole; tests/netns/test_io_nfqueue.py sends a bulk
TCP transfer of GSO packets through NAT and compares its sha256 (no kernel warning seen
on 6.18).

Errors: ENOBUFS (our socket buffer overflowed; the kernel dropped, or with fail-open
accepted, what it could not deliver) is counted in ``recv_errors``, never fatal; a
malformed netlink message is counted and skipped; a packet bigger than its row is
accepted unchanged and counted in ``oversize``.  If ``handle`` or ``on_dr`` raises,
the batch still gets verdicts (ACCEPT if ``fail_open`` else DROP,
``handler_errors``) and the exception propagates out of ``run``.
"""

from __future__ import annotations

import errno
import os
import threading

import numpy as np

from pylvs._native import ffi, lib
from pylvs.dataplane import engine as en
from pylvs.dataplane import rewrite as rw
from pylvs.dataplane.io import _verdict as vd

assert (vd.ACCEPT, vd.DROP, vd.ACCEPT_PAYLOAD) == (lib.PL_NFQ_ACCEPT, lib.PL_NFQ_DROP, lib.PL_NFQ_ACCEPT_PAYLOAD)
assert vd.NETLINK_META == lib.PL_NFQ_META_MAX

IPV4_MIN_HEADER = 20
# C counters reported as they are, next to the contract's keys.
_C_EXTRA = ("recv_calls", "enobufs", "malformed", "nl_errors", "verdict_msgs", "sendmsgs", "send_errors",
            "payload_errors")


def open_queue(queue_num: int, fail_open: bool, gso: bool, maxlen: int, rcvbuf: int, rows: int):
    """Bind NFQUEUE ``queue_num`` in this thread's netns (``pl_nfq_open``); OSError saying why not."""
    flags = (lib.PL_NFQ_F_FAIL_OPEN if fail_open else 0) | (lib.PL_NFQ_F_GSO if gso else 0)
    err = ffi.new("int *")
    q = lib.pl_nfq_open(queue_num, flags, maxlen, rcvbuf, rows, err)
    if q == ffi.NULL:
        e = err[0]
        hint = " (another process has this queue bound)" if e in (errno.EBUSY, errno.EPERM) else ""
        raise OSError(e, f"NFQUEUE {queue_num}: bind failed: {os.strerror(e)}{hint}")
    return q


class NativeQueue:
    """One NFQUEUE queue, batched (see the module docstring)."""

    def __init__(self, queue_num: int, handle: vd.Handle, *, rows: int = 256, fail_open: bool = True,
                 gso: bool = True, on_dr: vd.OnSend | None = None, on_reject: vd.OnSend | None = None,
                 rcvbuf: int = 64 << 20, maxlen: int = 8192,
                 stride: int | None = None) -> None:
        self._setup(queue_num, handle, rows, fail_open, gso, on_dr, on_reject, stride)
        self._q = open_queue(queue_num, fail_open, gso, maxlen, rcvbuf, rows)

    @classmethod
    def over_socket(cls, fd: int, queue_num: int, handle: vd.Handle, *, rows: int = 256, fail_open: bool = True,
                    gso: bool = True, on_dr: vd.OnSend | None = None, on_reject: vd.OnSend | None = None,
                    stride: int | None = None) -> NativeQueue:
        """For unprivileged tests: the adapter over an open datagram socket (one end of a
        socketpair) that stands for the kernel; nothing is bound, ``fd`` stays the caller's."""
        self = cls.__new__(cls)
        self._setup(queue_num, handle, rows, fail_open, gso, on_dr, on_reject, stride)
        err = ffi.new("int *")
        q = lib.pl_nfq_wrap_fd(fd, queue_num, rows, err)
        if q == ffi.NULL:
            raise OSError(err[0], os.strerror(err[0]))
        self._q = q
        return self

    def _setup(self, queue_num: int, handle: vd.Handle, rows: int, fail_open: bool, gso: bool,
               on_dr: vd.OnSend | None, on_reject: vd.OnSend | None, stride: int | None) -> None:
        if not 0 <= queue_num <= 0xFFFF:
            raise ValueError(f"queue_num {queue_num} is not 0..65535")
        if rows < 1:
            raise ValueError(f"rows must be >= 1, not {rows}")
        self._q = None
        self._lock = threading.Lock()  # close() against a running cycle
        self._life = threading.Lock()  # close() against stats() from another thread
        self.queue_num = queue_num
        self.handle = handle
        self.on_dr = on_dr
        self.on_reject = on_reject
        self.fail_open = fail_open
        self.gso = gso
        self.rows = rows
        self.stride = vd.stride_for(gso) if stride is None else stride
        if self.stride < rw.HEADROOM + IPV4_MIN_HEADER:
            raise ValueError(f"stride {self.stride} leaves no room for a packet")
        self.buf = np.zeros((rows, self.stride), dtype=np.uint8)
        self.off = np.zeros(rows, dtype=np.uint32)
        self.lens = np.zeros(rows, dtype=np.uint32)
        self.marks = np.zeros(rows, dtype=np.uint32)
        self.ids = np.zeros(rows, dtype=np.uint32)
        self.info = np.zeros(rows, dtype=np.uint8)  # PL_NFQ_PKT_* of the last batch
        self._acts = np.zeros(rows, dtype=np.uint8)
        # cdata views of the arrays, made once (they never move)
        self._p = {name: ffi.from_buffer(t, arr) for name, t, arr in (
            ("buf", "uint8_t[]", self.buf), ("off", "uint32_t[]", self.off), ("lens", "uint32_t[]", self.lens),
            ("marks", "uint32_t[]", self.marks), ("ids", "uint32_t[]", self.ids), ("info", "uint8_t[]", self.info),
            ("acts", "uint8_t[]", self._acts))}
        self._stats = vd.new_stats()
        self._cstats = ffi.new("struct pl_nfq_stats *")

    # -- one cycle --------------------------------------------------------------------
    def receive(self, timeout: float) -> en.Batch | None:
        """Receive one batch (waits at most ``timeout`` s for the first packet)."""
        p = self._p
        n = lib.pl_nfq_recv(self._q, p["buf"], self.rows, self.stride, p["off"], p["lens"], p["marks"], p["ids"],
                            p["info"], max(0, int(timeout * 1000)))
        if n < 0:
            raise OSError(-n, f"NFQUEUE {self.queue_num}: receive failed: {os.strerror(-n)}")
        if n == 0:
            return None
        return en.Batch(self.buf, self.off, self.lens, self.marks, int(n))

    def send(self, batch: en.Batch, verdicts: en.Verdicts | None) -> None:
        """Send the batch's verdicts (``None``: the fail-open/closed fallback for all)."""
        n = batch.n
        acts = self._acts
        if verdicts is None:
            acts[:n] = vd.fallback_action(self.fail_open)
        else:
            vd.actions(verdicts.verdict[:n], out=acts)
        vd.count_actions(self._stats, acts[:n])
        p = self._p
        rc = lib.pl_nfq_verdict(self._q, n, p["ids"], p["acts"], p["buf"], self.stride, p["off"], p["lens"],
                                ffi.NULL)
        if rc < 0:  # counted in send_errors; the kernel keeps the packets queued until we close
            raise OSError(-rc, f"NFQUEUE {self.queue_num}: verdict sendmsg failed: {os.strerror(-rc)}")

    def step(self, timeout: float) -> int:
        """Receive, handle and answer one batch; returns its size (0: nothing came)."""
        with self._lock:
            if self._q is None:
                raise ValueError("queue is closed")
            batch = self.receive(timeout)
            if batch is None:
                return 0
            self._stats["batches"] += 1
            try:
                verdicts = self.handle(batch)
                vd.check_verdicts(verdicts, batch.n)
                vd.hand_off(batch, verdicts, self.on_dr, self.on_reject, self._stats)
            except BaseException:
                self._stats["handler_errors"] += 1
                self.send(batch, None)
                raise
            self.send(batch, verdicts)
            return batch.n

    def run(self, stop: threading.Event, poll: float = 0.2) -> None:
        """Loop until ``stop`` is set (noticed within ``poll`` seconds when idle)."""
        while not stop.is_set():
            self.step(poll)

    # -- state ------------------------------------------------------------------------
    def stats(self) -> dict[str, int]:
        s = dict(self._stats)
        c = self._cstats  # the final counters once closed
        with self._life:
            if self._q is not None:
                c = ffi.new("struct pl_nfq_stats *")
                lib.pl_nfq_get_stats(self._q, c)
        s["packets"] = int(c.packets + c.oversize)
        s["accepted"] += int(c.oversize)
        s["dropped"] += int(c.payload_errors)
        s["mangled"] -= int(c.payload_errors)
        s["recv_errors"] = int(c.enobufs + c.recv_errors)
        for k in ("gso_packets", "csum_fixed", "oversize", *_C_EXTRA):
            s[k] = int(getattr(c, k))
        return s

    def fileno(self) -> int:
        return -1 if self._q is None else lib.pl_nfq_fd(self._q)

    def close(self) -> None:
        """Close the socket (the kernel unbinds the queue; packets still queued are dropped)."""
        with self._lock, self._life:
            if self._q is not None:
                lib.pl_nfq_get_stats(self._q, self._cstats)
                lib.pl_nfq_close(self._q)
                self._q = None

    def __enter__(self) -> NativeQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_q", None) is not None:
            self.close()
