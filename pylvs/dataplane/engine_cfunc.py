"""The engine as a C-callable entry point: ``ENGINE``, a numba ``@cfunc`` over descriptors.

The C forwarding loop (``csrc/loop.c``) calls the very kernel ``engine.process`` calls,
``engine._process_kernel``, without entering Python: every array reaches it by pointer,
through two descriptors (uint64 arrays of ``address, dim0, dim1`` per slot):

* the *state* descriptor (``STATE_SLOTS``): the connection table, the compiled tables
  and the counters of one generation; the forwarder builds it at every swap
  (``describe_state``) and publishes it to the loop under the gate;
* the *batch* descriptor (``BATCH_SLOTS``): the adapter's packet rows and the per-packet
  scratch (parse fields, rewrite ops, verdicts, reasons, dest rows); built once per
  adapter (``describe_batch``).

Pointers, not module-level arrays: numba compiles a global array into the code as a
constant (later writes unseen).  The cfunc must never raise: a raise in a cfunc returns
0 and then takes the GIL to print a traceback (a deadlock while another thread holds it),
so every kernel it reaches is compiled with ``error_model="numpy"`` and indexes only in
range (``engine.process`` is the twin that a test holds it equal to: tests/unit/
test_engine_cfunc.py).  This file is a real module so ``cache=True`` keeps the compiled
cfunc across starts (built with ``exec`` it recompiled at every start: 2-4 s).

Signature (C: ``pl_engine_fn`` in csrc/loop.h)::

    int64 ENGINE(const uint64 *state, const uint64 *batch, int64 n, double now,
                 int64 now_ms, int64 opts, int64 sweep_budget, int64 tunnel_src)

returns the number of rewrite ops emitted (``pl_rewrite_batch`` does the bytes).
"""

from __future__ import annotations

import numpy as np
from numba import carray, cfunc, from_dtype, njit, types
from numba.extending import intrinsic

from pylvs._native import ffi
from pylvs.dataplane import conntab as ctm
from pylvs.dataplane import engine as en
from pylvs.dataplane import headers as hd
from pylvs.dataplane import rewrite as rw
from pylvs.dataplane.engine import Counters, _process_kernel
from pylvs.dataplane.tables import SVC_DTYPE, Tables

WORDS_PER_SLOT = 3  # address, dim0, dim1 (0 for 1-d arrays)

# (name, dtype, ndim).  The order is the descriptor's; the cfunc below reads it slot by slot.
STATE_SLOTS = (
    ("entries", ctm.ENTRY_DTYPE, 1), ("next_free", np.int32, 1), ("in_index", np.int32, 1),
    ("out_index", np.int32, 1), ("meta", np.int64, 1), ("ct_counters", np.int64, 1),
    ("dest", np.int64, 2), ("persist", np.int64, 1), ("touched", np.int64, 1), ("timeouts", np.float64, 1),
    ("svc", SVC_DTYPE, 1), ("state", np.int64, 1), ("dest_svc", np.int32, 1), ("svc_keys", np.int64, 1),
    ("svc_keys_idx", np.int32, 1), ("fwm_keys", np.int64, 1), ("fwm_idx", np.int32, 1),
    ("reasons", np.int64, 1), ("svc_stats", np.int64, 2), ("dest_stats", np.int64, 2), ("ip_id", np.uint64, 1),
    ("ct_key", np.uint64, 1), ("ct_drow", np.int64, 1), ("ct_rid", np.int64, 1),
)  # fmt: skip
BATCH_SLOTS = (
    ("buf", np.uint8, 2), ("off", np.uint32, 1), ("lens", np.uint32, 1), ("marks", np.uint32, 1),
    ("fields", np.int64, 2), ("ops", rw.OP_DTYPE, 1), ("verdict", np.uint8, 1), ("reason", np.int16, 1),
    ("dest_row", np.int64, 1),
)  # fmt: skip

_ENTRY = from_dtype(ctm.ENTRY_DTYPE)
_SVC = from_dtype(SVC_DTYPE)
_OP = from_dtype(rw.OP_DTYPE)


@intrinsic
def _ptr_at(typingctx, addr, ty):
    """An integer address as a typed pointer (LLVM inttoptr), for ``carray``."""
    if isinstance(addr, types.Integer) and hasattr(ty, "instance_type"):
        ptr = types.CPointer(ty.instance_type)

        def codegen(context, builder, sig, args):
            return builder.inttoptr(args[0], context.get_value_type(ptr))

        return ptr(addr, ty), codegen
    return None


# One view per slot.  `k` is a slot number; the word offsets are literal multiples of
# WORDS_PER_SLOT so the reads below stay simple loads.
def _slot(k: int) -> int:
    return k * WORDS_PER_SLOT


_SIG = types.int64(types.CPointer(types.uint64), types.CPointer(types.uint64), types.int64, types.float64,
                   types.int64, types.int64, types.int64, types.int64)  # fmt: skip


@njit(cache=True, error_model="numpy", inline="always")
def _conn_table(s):
    """The connection table of a state descriptor."""
    return ctm.ConnTable(
        carray(_ptr_at(s[0], _ENTRY), (np.intp(s[1]),)),
        carray(_ptr_at(s[3], types.int32), (np.intp(s[4]),)),
        carray(_ptr_at(s[6], types.int32), (np.intp(s[7]),)),
        carray(_ptr_at(s[9], types.int32), (np.intp(s[10]),)),
        carray(_ptr_at(s[12], types.int64), (np.intp(s[13]),)),
        carray(_ptr_at(s[15], types.int64), (np.intp(s[16]),)),
        carray(_ptr_at(s[18], types.int64), (np.intp(s[19]), np.intp(s[20]))),
        carray(_ptr_at(s[21], types.int64), (np.intp(s[22]),)),
        carray(_ptr_at(s[24], types.int64), (np.intp(s[25]),)),
        carray(_ptr_at(s[27], types.float64), (np.intp(s[28]),)),
        carray(_ptr_at(s[63], types.uint64), (np.intp(s[64]),)),
        carray(_ptr_at(s[66], types.int64), (np.intp(s[67]),)),
        carray(_ptr_at(s[69], types.int64), (np.intp(s[70]),)),
    )


@njit(cache=True, error_model="numpy", inline="always")
def _batch(b):
    """The arrays of a batch descriptor, in BATCH_SLOTS order."""
    return (carray(_ptr_at(b[0], types.uint8), (np.intp(b[1]), np.intp(b[2]))),
            carray(_ptr_at(b[3], types.uint32), (np.intp(b[4]),)),
            carray(_ptr_at(b[6], types.uint32), (np.intp(b[7]),)),
            carray(_ptr_at(b[9], types.uint32), (np.intp(b[10]),)),
            carray(_ptr_at(b[12], types.int64), (np.intp(b[13]), np.intp(b[14]))),
            carray(_ptr_at(b[15], _OP), (np.intp(b[16]),)),
            carray(_ptr_at(b[18], types.uint8), (np.intp(b[19]),)),
            carray(_ptr_at(b[21], types.int16), (np.intp(b[22]),)),
            carray(_ptr_at(b[24], types.int64), (np.intp(b[25]),)))  # fmt: skip


@cfunc(_SIG, cache=True, error_model="numpy")
def ENGINE(s, b, n, now, now_ms, opts, sweep_budget, tunnel_src):  # noqa: N802 - a C symbol
    ct = _conn_table(s)
    svc = carray(_ptr_at(s[30], _SVC), (np.intp(s[31]),))
    state = carray(_ptr_at(s[33], types.int64), (np.intp(s[34]),))
    dest_svc = carray(_ptr_at(s[36], types.int32), (np.intp(s[37]),))
    svc_keys = carray(_ptr_at(s[39], types.int64), (np.intp(s[40]),))
    svc_keys_idx = carray(_ptr_at(s[42], types.int32), (np.intp(s[43]),))
    fwm_keys = carray(_ptr_at(s[45], types.int64), (np.intp(s[46]),))
    fwm_idx = carray(_ptr_at(s[48], types.int32), (np.intp(s[49]),))
    reasons = carray(_ptr_at(s[51], types.int64), (np.intp(s[52]),))
    svc_stats = carray(_ptr_at(s[54], types.int64), (np.intp(s[55]), np.intp(s[56])))
    dest_stats = carray(_ptr_at(s[57], types.int64), (np.intp(s[58]), np.intp(s[59])))
    ip_id = carray(_ptr_at(s[60], types.uint64), (np.intp(s[61]),))

    buf, off, lens, marks, fields, ops, verdict, reason, dest_row = _batch(b)
    if n < 0 or n > buf.shape[0] or n > fields.shape[0] or n > ops.shape[0] or n > verdict.shape[0]:
        return 0  # a caller bug; the C side checks n against its rows first
    return _process_kernel(buf, off, lens, marks, n, fields, now, now_ms, opts, sweep_budget, ct, svc,
                           ct.dest, state, dest_svc, svc_keys, svc_keys_idx, fwm_keys, fwm_idx, reasons,
                           svc_stats, dest_stats, ip_id, tunnel_src, ops, verdict, reason, dest_row)


@cfunc(_SIG, cache=True, error_model="numpy")
def CLASSIFY(s, b, n, now, now_ms, opts, sweep_budget, tunnel_src):  # noqa: N802 - a C symbol
    """The classify pass (``engine._classify_kernel``): the C loop's PL_LOOP_F_CLASSIFY
    queue calls it with the engine's signature; it writes only ``verdict`` (V_NAT: ours)."""
    ct = _conn_table(s)
    buf, off, lens, _marks, fields, _ops, verdict, _reason, _dest_row = _batch(b)
    if n < 0 or n > buf.shape[0] or n > fields.shape[0] or n > verdict.shape[0]:
        return 0
    en._classify_kernel(buf, off, lens, n, fields, ct, now, verdict)
    return 0


assert len(STATE_SLOTS) * WORDS_PER_SLOT == 72 and len(BATCH_SLOTS) * WORDS_PER_SLOT == 27  # the reads above


def _describe(slots: tuple, arrays: tuple) -> np.ndarray:
    """The descriptor of ``arrays`` for ``slots``; every layout mistake is a ValueError."""
    if len(arrays) != len(slots):
        raise ValueError(f"{len(arrays)} arrays for {len(slots)} slots")
    d = np.zeros(len(slots) * WORDS_PER_SLOT, dtype=np.uint64)
    for k, ((name, dtype, ndim), a) in enumerate(zip(slots, arrays, strict=True)):
        if not isinstance(a, np.ndarray) or a.dtype != np.dtype(dtype) or a.ndim != ndim:
            raise ValueError(f"slot {name}: need a {ndim}-d {np.dtype(dtype)} array")
        if not a.flags.c_contiguous or not a.flags.writeable:
            raise ValueError(f"slot {name}: the array must be C-contiguous and writable")
        d[_slot(k)] = a.ctypes.data
        d[_slot(k) + 1] = a.shape[0]
        d[_slot(k) + 2] = a.shape[1] if ndim == 2 else 0
    return d


def describe_state(ct: ctm.ConnTable, tables: Tables, counters: Counters) -> np.ndarray:
    """The state descriptor; the caller keeps ``ct``, ``tables`` and ``counters`` alive
    for as long as the descriptor is published."""
    en._check_state(tables, ct, counters)  # the same refusals as engine.process
    return _describe(STATE_SLOTS, (
        ct.entries, ct.next_free, ct.in_index, ct.out_index, ct.meta, ct.counters, ct.dest, ct.persist,
        ct.touched, ct.timeouts, tables.svc, tables.state, tables.dest_svc, tables.svc_keys, tables.svc_keys_idx,
        tables.fwm_keys, tables.fwm_idx, counters.reasons, counters.svc, counters.dest, counters.ip_id,
        ct.key, ct.drow, ct.rid))  # fmt: skip


class NativeState:
    """A ``struct pl_fwd`` (csrc/loop.h): the cfunc, this generation's state descriptor,
    options and next hops, as the C loop and ``pl_engine_batch`` read them.  ``point``
    re-aims it (at a swap: the caller holds the gate) and keeps what it points into alive."""

    def __init__(self, *, opts: int, tunnel_src: int) -> None:
        c = ffi.new("struct pl_fwd *")
        c.engine = ffi.cast("pl_engine_fn", ENGINE.address)
        c.classify = ffi.cast("pl_engine_fn", CLASSIFY.address)
        c.opts = opts
        c.tunnel_src = tunnel_src
        c.rewrite_base = en.C_REWRITE_BASE
        c.sweep_per_packet = en.SWEEP_PER_PACKET
        c.sweep_base = en.SWEEP_BASE
        self.c = c
        self._kept: tuple = ()

    def point(self, ct: ctm.ConnTable, tables: Tables, counters: Counters, neigh: np.ndarray) -> None:
        """Aim at ``ct``/``tables``/``counters`` and ``neigh`` (struct pl_neigh per dest row)."""
        self.publish(self.stage(ct, tables, counters, neigh))

    def stage(self, ct: ctm.ConnTable, tables: Tables, counters: Counters, neigh: np.ndarray) -> tuple:
        """The descriptor of a generation, made ahead (outside the gate: the checks and
        the descriptor are most of a swap's cost); ``publish`` aims at it."""
        return (describe_state(ct, tables, counters), neigh, ct, tables, counters)

    def publish(self, staged: tuple) -> None:
        """Aim at a staged generation (the caller holds the gate)."""
        state, neigh, _ct, _tables, counters = staged
        c = self.c
        c.state = ffi.cast("uint64_t *", state.ctypes.data)
        c.reasons = ffi.cast("int64_t *", counters.reasons.ctypes.data)
        c.neigh = ffi.cast("struct pl_neigh *", neigh.ctypes.data)
        c.n_neigh = neigh.shape[0]
        self._kept = staged


class BatchArrays:
    """An adapter's rows and per-packet scratch, and their descriptor (made once)."""

    def __init__(self, rows: int, stride: int) -> None:
        if rows < 1 or stride < rw.HEADROOM + 20:
            raise ValueError(f"rows={rows}, stride={stride}: no room for a packet")
        self.rows, self.stride = rows, stride
        self.buf = np.zeros((rows, stride), dtype=np.uint8)
        self.off = np.zeros(rows, dtype=np.uint32)
        self.lens = np.zeros(rows, dtype=np.uint32)
        self.marks = np.zeros(rows, dtype=np.uint32)
        self.fields = hd.new_fields(rows)
        self.ops = np.zeros(rows, dtype=rw.OP_DTYPE)
        self.verdict = np.zeros(rows, dtype=np.uint8)
        self.reason = np.zeros(rows, dtype=np.int16)
        self.dest_row = np.zeros(rows, dtype=np.int64)
        self.results = np.zeros(rows, dtype=np.uint8)  # rewrite.RW_* per packet (C writes it)
        self.desc = _describe(BATCH_SLOTS, (self.buf, self.off, self.lens, self.marks, self.fields, self.ops,
                                            self.verdict, self.reason, self.dest_row))  # fmt: skip
        c = ffi.new("struct pl_batch *")  # the same arrays for the C side (csrc/loop.h)
        c.desc = ffi.cast("uint64_t *", self.desc.ctypes.data)
        c.rows, c.stride = rows, stride
        for name, ctype in (("buf", "uint8_t *"), ("off", "uint32_t *"), ("lens", "uint32_t *"),
                            ("marks", "uint32_t *"), ("ops", "struct pl_rewrite_op *"), ("verdict", "uint8_t *"),
                            ("reason", "int16_t *"), ("dest_row", "int64_t *"), ("res", "uint8_t *")):
            setattr(c, name, ffi.cast(ctype, getattr(self, "results" if name == "res" else name).ctypes.data))
        self.c = c

    def load(self, packets, marks=None) -> int:
        """Put packets in the rows at ``rewrite.HEADROOM`` (tests, replay); returns n."""
        n = len(packets)
        if n > self.rows:
            raise ValueError(f"{n} packets for {self.rows} rows")
        self.off[:] = rw.HEADROOM
        self.lens[:] = 0
        self.marks[:] = 0
        for i, p in enumerate(packets):
            p = bytes(p)
            if rw.HEADROOM + len(p) > self.stride:
                raise ValueError(f"packet {i} ({len(p)} bytes) does not fit a row of {self.stride}")
            self.buf[i, rw.HEADROOM:rw.HEADROOM + len(p)] = np.frombuffer(p, dtype=np.uint8)
            self.lens[i] = len(p)
        if marks is not None:
            self.marks[:n] = np.asarray(marks, dtype=np.uint32)
        return n
