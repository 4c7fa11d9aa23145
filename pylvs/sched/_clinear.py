"""Calls into csrc/sched_linear.c (the kernel's linear algorithms in C) over the
same dest/state arrays: the benchmark's C anchor and a cross-check in tests."""

from __future__ import annotations

import numpy as np

from pylvs._native import ffi, lib


def c_function(name: str):
    fn = getattr(lib, f"pl_sched_{name}", None)
    if fn is None:
        raise ValueError(f"no C version of scheduler {name!r}")
    return fn


def _p(t: str, a: np.ndarray):
    return ffi.cast(t, a.ctypes.data)


def c_batch(name: str, dest: np.ndarray, state: np.ndarray, caddr: np.ndarray, cport: np.ndarray,
            daddr: np.ndarray, dport: np.ndarray, now: int, bind: int, out: np.ndarray) -> np.ndarray:
    """Batch decisions with the C linear scheduler (arrays as for ``_batch_kernel``)."""
    for a, dt in ((dest, np.int64), (state, np.int64), (out, np.int64), (caddr, np.uint32),
                  (daddr, np.uint32), (cport, np.uint16), (dport, np.uint16)):
        if a.dtype != dt or not a.flags.c_contiguous:
            raise ValueError(f"C scheduler needs C-contiguous {np.dtype(dt).name} arrays")
    n = caddr.shape[0]
    if not (cport.shape[0] == daddr.shape[0] == dport.shape[0] == out.shape[0] == n):
        raise ValueError("key arrays and out must have the same length")
    c_function(name)(_p("int64_t *", dest), dest.shape[0], _p("int64_t *", state), _p("uint32_t *", caddr),
                     _p("uint16_t *", cport), _p("uint32_t *", daddr), _p("uint16_t *", dport),
                     n, now, bind, _p("int64_t *", out))
    return out


class CSingle:
    """One decision per call through cffi with pre-cast pointers (bench anchor)."""

    def __init__(self, name: str, dest: np.ndarray, state: np.ndarray) -> None:
        self._fn = c_function(name)
        self._dest, self._state = dest, state  # keep the buffers alive
        self._dp = _p("int64_t *", dest)
        self._sp = _p("int64_t *", state)
        self._rows = dest.shape[0]
        self._keys32 = ffi.new("uint32_t[2]")
        self._keys16 = ffi.new("uint16_t[2]")
        self._out = ffi.new("int64_t[1]")

    def pick(self, caddr: int, cport: int, daddr: int, dport: int, now: int) -> int:
        k32, k16 = self._keys32, self._keys16
        k32[0] = caddr
        k32[1] = daddr
        k16[0] = cport
        k16[1] = dport
        self._fn(self._dp, self._rows, self._sp, k32, k16, k32 + 1, k16 + 1, 1, now, 0, self._out)
        return self._out[0]
