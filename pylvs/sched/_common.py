"""Shared pieces of the schedulers: the real-server array layout, the connection
counters and OVERLOAD rule (ip_vs_conn.c), the kernel's hash functions.

Real servers of one service live in one ``int64`` array ``dest[rows, NFIELDS]``.
Row order IS the kernel's destination list order (row 0 = list head): the kernel
inserts a new destination at the head (``list_add``), so the caller fills rows from
the end of the array towards row 0 (``Scheduler.add_dest`` does exactly that).  A row
without ``F_AVAILABLE`` is not in the list (never added, or deleted) and every
scheduler ignores it, as the kernel ignores dests in its trash.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# Columns of the dest array (one row per real server).
W = 0  # weight (0..2**31-1 as ipvsadm 1.31 and the kernel; 0 = quiesced, no new connections)
ACT = 1  # activeconns
INACT = 2  # inactconns
FLAGS = 3  # F_AVAILABLE | F_OVERLOAD
UTHR = 4  # u_threshold (ipvsadm -x), 0 = none
LTHR = 5  # l_threshold (ipvsadm -y), 0 = none
LASTW = 6  # last_weight: last non-zero weight (ip_vs_ctl.c __ip_vs_update_dest); mh uses it
ADDR = 7  # real server IPv4 address, host order (mh hashes it)
PORT = 8  # real server port, host order (mh hashes it)
# Forwarding method of the connections made to this server: the conntab FWD_* value
# (IP_VS_CONN_F_MASQ 0, _TUNNEL 2, _DROUTE 3), as the kernel's dest->conn_flags (ipvsadm
# -m/-i/-g per real server).  No scheduler reads it; the engine and connection sync do.
FWD = 9
NFIELDS = 10

WEIGHT_MAX = 2**31 - 1  # ipvsadm 1.31 -w range (string_to_number(optarg, 0, INT_MAX)), the kernel's
FWD_MAX = 7  # conntab F_FWD_MASK: FWD holds a forwarding method, nothing else

F_AVAILABLE = 0x1  # IP_VS_DEST_F_AVAILABLE (include/net/ip_vs.h)
F_OVERLOAD = 0x2  # IP_VS_DEST_F_OVERLOAD (include/net/ip_vs.h)

GOLDEN_RATIO_32 = 0x61C88647  # include/linux/hash.h, used by hash_32()
MASK32 = 0xFFFFFFFF

# SipHash initial state words (lib/siphash.c SIPHASH_CONST_0..3).
SIP_C0 = 0x736F6D6570736575
SIP_C1 = 0x646F72616E646F6D
SIP_C2 = 0x6C7967656E657261
SIP_C3 = 0x7465646279746573

# `now` is an int64 in milliseconds everywhere (the kernel uses jiffies).

# Hot-path kernels are compiled with _nrt=False: they never allocate, and without
# the runtime's reference counting a call from another numba function does not pay
# an atomic incref/decref per array argument (measured: 54 -> 430 M dh decisions/s
# when called from a numba loop).  The per-decision kernels are also
# inline="always" (numba IR inlining): mh went from 40 to 70 M/s in a batch loop.
MS_PER_SECOND = 1000


# ---------------------------------------------------------------- predicates


@njit(cache=True, error_model="numpy", _nrt=False)
def _in_list(dest, i):
    return (dest[i, FLAGS] & F_AVAILABLE) != 0


@njit(cache=True, error_model="numpy")  # allocates: for config kernels only, never the hot path
def _listed_rows(dest):
    """(rows, n): the rows in the list, in list order, in rows[:n]."""
    rows = np.empty(dest.shape[0], dtype=np.int64)
    n = 0
    for i in range(dest.shape[0]):
        if _in_list(dest, i):
            rows[n] = i
            n += 1
    return rows, n


@njit(cache=True, error_model="numpy", _nrt=False)
def _eligible(dest, i):
    """In the list, weight > 0 and not OVERLOADed: may take a new connection."""
    f = dest[i, FLAGS]
    return (f & F_AVAILABLE) != 0 and (f & F_OVERLOAD) == 0 and dest[i, W] > 0


@njit(cache=True, error_model="numpy", _nrt=False)
def _overhead(dest, i):
    """ip_vs_dest_conn_overhead(): activeconns << 8 + inactconns (include/net/ip_vs.h)."""
    return (dest[i, ACT] << 8) + dest[i, INACT]


# --------------------------------------------------------- connection counters


@njit(cache=True, error_model="numpy", _nrt=False, inline="always")
def _bind_kernel(dest, i):
    """ip_vs_bind_dest() for a new non-template connection: it starts INACTIVE
    (reference 7.5), then OVERLOAD is set when total >= u_threshold (6.2)."""
    dest[i, INACT] += 1
    u = dest[i, UTHR]
    if u != 0 and dest[i, ACT] + dest[i, INACT] >= u:
        dest[i, FLAGS] |= F_OVERLOAD


BIND_NONE = 0  # batch: decide only
BIND_NEW = 1  # batch: charge each chosen server a new connection (inactive, as the kernel does)
BIND_ACTIVE = 2  # batch: ... and count it active at once (stresses sed/nq, which ignore inactive)


@njit(cache=True, error_model="numpy", _nrt=False, inline="always")
def _charge_kernel(dest, i, mode):
    """Batch helper: account a new connection on row i per the BIND_* mode."""
    _bind_kernel(dest, i)
    if mode == BIND_ACTIVE:
        dest[i, INACT] -= 1
        dest[i, ACT] += 1


@njit(cache=True, error_model="numpy", _nrt=False)
def _unbind_kernel(dest, i, active):
    """ip_vs_unbind_dest(): decrement, then the lower-threshold / 3/4 rule (6.2)."""
    if active:
        dest[i, ACT] -= 1
    else:
        dest[i, INACT] -= 1
    total = dest[i, ACT] + dest[i, INACT]
    lo = dest[i, LTHR]
    up = dest[i, UTHR]
    if lo != 0:
        if total < lo:
            dest[i, FLAGS] &= ~F_OVERLOAD
    elif up != 0:
        if total * 4 < up * 3:
            dest[i, FLAGS] &= ~F_OVERLOAD
    else:
        dest[i, FLAGS] &= ~F_OVERLOAD


@njit(cache=True, error_model="numpy", _nrt=False)
def _set_active_kernel(dest, i, active):
    """A connection enters (active=True) or leaves ESTABLISHED (reference 7.5)."""
    if active:
        dest[i, INACT] -= 1
        dest[i, ACT] += 1
    else:
        dest[i, ACT] -= 1
        dest[i, INACT] += 1


# -------------------------------------------------------------------- hashes


@njit(cache=True, error_model="numpy", _nrt=False)
def _hash_32(v, bits):
    """hash_32(v, bits) = (v * GOLDEN_RATIO_32 mod 2^32) >> (32 - bits)."""
    return ((v & MASK32) * GOLDEN_RATIO_32 & MASK32) >> (32 - bits)


@njit(cache=True, error_model="numpy", _nrt=False)
def _rol64(x, b):
    return (x << np.uint64(b)) | (x >> np.uint64(64 - b))


@njit(cache=True, error_model="numpy", _nrt=False, inline="always")
def _sipround(v0, v1, v2, v3):
    """One SipRound (lib/siphash.c SIPROUND); the connection table's index hash uses it too."""
    v0 += v1
    v1 = _rol64(v1, 13)
    v1 ^= v0
    v0 = _rol64(v0, 32)
    v2 += v3
    v3 = _rol64(v3, 16)
    v3 ^= v2
    v0 += v3
    v3 = _rol64(v3, 21)
    v3 ^= v0
    v2 += v1
    v1 = _rol64(v1, 17)
    v1 ^= v2
    v2 = _rol64(v2, 32)
    return v0, v1, v2, v3


@njit(cache=True, error_model="numpy", _nrt=False, inline="always")
def _sip_init(k0, k1):
    """SipHash's state under the key (k0, k1)."""
    k0 = np.uint64(k0)
    k1 = np.uint64(k1)
    return np.uint64(SIP_C0) ^ k0, np.uint64(SIP_C1) ^ k1, np.uint64(SIP_C2) ^ k0, np.uint64(SIP_C3) ^ k1


@njit(cache=True, error_model="numpy", _nrt=False, inline="always")
def _sip13_finish(v0, v1, v2, v3, b):
    """SipHash-1-3's last block ``b`` (the message length in its top byte, the tail bytes
    below) and its three finalisation rounds: the 64-bit result."""
    v3 ^= b
    v0, v1, v2, v3 = _sipround(v0, v1, v2, v3)
    v0 ^= b
    v2 ^= np.uint64(0xFF)
    for _ in range(3):
        v0, v1, v2, v3 = _sipround(v0, v1, v2, v3)
    return (v0 ^ v1) ^ (v2 ^ v3)


@njit(cache=True, error_model="numpy", _nrt=False)
def _siphash13_u32(v, k0, k1):
    """SipHash-1-3 of the 4-byte little-endian message ``v`` with key (k0, k1),
    full 64-bit result.  On 64-bit kernels hsiphash() *is* this function,
    truncated to u32 (lib/siphash.c, "on 64-bit, we make HalfSipHash1-3 actually
    be SipHash1-3")."""
    v0, v1, v2, v3 = _sip_init(k0, k1)
    return _sip13_finish(v0, v1, v2, v3, (np.uint64(4) << np.uint64(56)) | np.uint64(v & MASK32))


@njit(cache=True, error_model="numpy", _nrt=False)
def _hsiphash_u32(v, k0, k1):
    """hsiphash(&v, 4, key) as a 64-bit kernel computes it (u32 result)."""
    return np.int64(_siphash13_u32(v, k0, k1) & np.uint64(MASK32))


# -------------------------------------------------------------- Python helpers


def new_dests(capacity: int) -> np.ndarray:
    """An empty real-server array with room for ``capacity`` servers."""
    if not isinstance(capacity, (int, np.integer)) or capacity < 1:
        raise ValueError(f"capacity must be a positive int, got {capacity!r}")
    return np.zeros((int(capacity), NFIELDS), dtype=np.int64)


def check_dests(dest: np.ndarray) -> None:
    """Raise ValueError unless ``dest`` is a C-contiguous int64 [rows, NFIELDS] array."""
    if not isinstance(dest, np.ndarray):
        raise ValueError(f"dest must be a numpy array, got {type(dest).__name__}")  # noqa: TRY004 (house rule: wrappers raise ValueError)
    if dest.dtype != np.int64 or dest.ndim != 2 or dest.shape[1] != NFIELDS:
        raise ValueError(
            f"dest must be int64 with shape (rows, {NFIELDS}); got {dest.dtype} {dest.shape}"
            " -- build it with pylvs.sched.new_dests(capacity)"
        )
    if dest.shape[0] < 1:
        raise ValueError("dest needs at least one row")
    if not dest.flags.c_contiguous:
        raise ValueError("dest must be C-contiguous (np.ascontiguousarray(dest))")
    w = dest[:, W]
    if (w < 0).any() or (w > WEIGHT_MAX).any():
        raise ValueError(f"weights must be in 0..{WEIGHT_MAX} (ipvsadm -w range)")
    if (dest[:, UTHR] < 0).any() or (dest[:, LTHR] < 0).any():
        raise ValueError("connection thresholds must be >= 0 (0 = no threshold)")
    f = dest[:, FWD]
    if (f < 0).any() or (f > FWD_MAX).any():
        raise ValueError(f"forwarding methods (column FWD) must be conntab FWD_* values (0..{FWD_MAX})")
