"""mh -- Maglev hashing.  Follows net/netfilter/ipvs/ip_vs_mh.c.

Table size M is a prime; the kernel default is 4093 (CONFIG_IP_VS_MH_TAB_INDEX =
12 picks primes[12 - 8] from {251, 509, 1021, 2039, 4093, 8191, 16381, 32749,
65521, 131071}).  Hashes are the kernel's: hsiphash (on 64-bit kernels that is
SipHash-1-3 truncated to 32 bits) with the *fixed* keys {2654435761, 2654435761}
and {2654446892, 2654446892} of generate_hash_secret(), over the u32
``offset + port + addr`` -- so every director builds the same table.

Per dest, in list order: ``offset = h1(addr, port) % M``, ``skip = h2(addr, port)
% (M - 1) + 1``, ``turns = (last_weight / gcd) >> rshift`` (1 if that is 0 and
last_weight != 0), gcd over non-zero last_weights, ``rshift = max(0,
fls(max_last_weight / gcd) - MH_TAB_BITS)``.  Populate: dests take turns, each
claiming ``turns`` slots per round at its next free preference.  Lookup: slot =
``h1(client addr, client port if mh-port) % M``; a dest with weight 0 (its slots
stay, from last_weight) or OVERLOADed gives no destination unless ``mh-fallback``
probes the way ip_vs_mh_get_fallback() does.  Rebuilt on every add/delete/edit.

State: header (see the H_* offsets) then the M-slot table (row or -1).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._common import (
    ADDR,
    LASTW,
    PORT,
    _charge_kernel,
    _eligible,
    _hsiphash_u32,
    _listed_rows,
)

NAME = "mh"
KERNEL_FILE = "net/netfilter/ipvs/ip_vs_mh.c"
MH_TAB_INDEX_CONFIG = 12  # CONFIG_IP_VS_MH_TAB_INDEX default (Kconfig, range 8..17)
MH_PRIMES = (251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071)  # ip_vs_mh.c primes[]
MH_TAB_SIZE = MH_PRIMES[MH_TAB_INDEX_CONFIG - 8]  # 4093
MH_TAB_BITS = MH_TAB_INDEX_CONFIG // 2  # IP_VS_MH_TAB_BITS = CONFIG index / 2 = 6
MH_KEY1 = 2654435761  # generate_hash_secret(): hash1 key words
MH_KEY2 = 2654446892  # generate_hash_secret(): hash2 key words
FLAG_FALLBACK = 1  # ipvsadm -b mh-fallback (IP_VS_SVC_F_SCHED_MH_FALLBACK)
FLAG_PORT = 2  # ipvsadm -b mh-port (IP_VS_SVC_F_SCHED_MH_PORT)

H_FLAGS, H_M, H_BITS, H_K1, H_K2, H_GCD, H_RSHIFT = 0, 1, 2, 3, 4, 5, 6
TAB_OFF = 8


def _is_prime(m: int) -> bool:
    if m < 2:
        return False
    f = 2
    while f * f <= m:
        if m % f == 0:
            return False
        f += 1
    return True


def new_state(
    dest: np.ndarray,
    fallback: bool = False,
    port: bool = False,
    table_size: int = MH_TAB_SIZE,
    tab_bits: int | None = None,
    key1: int = MH_KEY1,
    key2: int = MH_KEY2,
) -> np.ndarray:
    """``table_size``/``key1``/``key2`` default to the kernel's; other primes and
    keys exist for small pinned test tables.  ``tab_bits`` defaults to the kernel's
    CONFIG index / 2 for a kernel prime, else 6."""
    if not isinstance(table_size, (int, np.integer)) or not _is_prime(int(table_size)):
        raise ValueError(f"mh table_size must be a prime (kernel default {MH_TAB_SIZE}), got {table_size!r}")
    if tab_bits is None:
        tab_bits = (MH_PRIMES.index(table_size) + 8) // 2 if table_size in MH_PRIMES else MH_TAB_BITS
    for k in (key1, key2):
        if not 0 <= k < 2**63:
            raise ValueError("mh keys must be in 0..2**63-1")
    st = np.full(TAB_OFF + int(table_size), -1, dtype=np.int64)
    st[H_FLAGS] = (FLAG_FALLBACK if fallback else 0) | (FLAG_PORT if port else 0)
    st[H_M] = table_size
    st[H_BITS] = tab_bits
    st[H_K1] = key1
    st[H_K2] = key2
    _config_kernel(dest, st)
    return st


@njit(cache=True, error_model="numpy", _nrt=False)
def _hashkey(addr, port, key, offset):
    """ip_vs_mh_hashkey: hsiphash of the u32 offset + port + addr, key {key, key}."""
    return _hsiphash_u32((offset + port + addr) & 0xFFFFFFFF, key, key)


@njit(cache=True, error_model="numpy", _nrt=False)
def _mod_m(h, m):
    """h % m; the kernel's M is a compile-time constant, so give LLVM the same
    chance to turn the division into a multiply for the default size."""
    if m == MH_TAB_SIZE:
        return h % MH_TAB_SIZE
    return h % m


@njit(cache=True, error_model="numpy", _nrt=False)
def _fls(x):
    r = 0
    while x:
        x >>= 1
        r += 1
    return r


@njit(cache=True, error_model="numpy", _nrt=False)
def _gcd(a, b):
    while b:
        a, b = b, a % b
    return a


@njit(cache=True, error_model="numpy")  # allocates scratch arrays: needs NRT; not on the hot path
def _config_kernel(dest, state):
    m = state[H_M]
    rows, n = _listed_rows(dest)
    g = 0
    mx = 0
    for k in range(n):
        lw = dest[rows[k], LASTW]
        if lw > 0:
            g = _gcd(lw, g) if g > 0 else lw
        mx = max(mx, lw)
    rshift = 0
    if g >= 1:
        rshift = _fls(mx // g) - state[H_BITS]
        rshift = max(rshift, 0)
    state[H_GCD] = g
    state[H_RSHIFT] = rshift
    for c in range(m):
        state[TAB_OFF + c] = -1
    if g < 1:
        return  # no dest with a non-zero last_weight: empty table
    skip = np.empty(n, dtype=np.int64)
    perm = np.empty(n, dtype=np.int64)
    turns = np.empty(n, dtype=np.int64)
    for j in range(n):
        d = rows[j]
        perm[j] = _hashkey(dest[d, ADDR], dest[d, PORT], state[H_K1], 0) % m
        skip[j] = _hashkey(dest[d, ADDR], dest[d, PORT], state[H_K2], 0) % (m - 1) + 1
        lw = dest[d, LASTW]
        t = (lw // g) >> rshift
        turns[j] = t if t != 0 else (1 if lw != 0 else 0)
    filled = np.zeros(m, dtype=np.bool_)
    placed = 0
    dt_count = 0
    while placed < m:
        j = 0
        while j < n:
            if turns[j] < 1:
                j += 1
                continue
            c = perm[j]
            while filled[c]:
                perm[j] += skip[j]
                if perm[j] >= m:
                    perm[j] -= m
                c = perm[j]
            filled[c] = True
            state[TAB_OFF + c] = rows[j]
            placed += 1
            if placed == m:
                return
            dt_count += 1
            if dt_count >= turns[j]:
                dt_count = 0
                j += 1


@njit(cache=True, error_model="numpy", _nrt=False, inline="always")
def _update_kernel(dest, state, i):
    pass


@njit(cache=True, error_model="numpy", _nrt=False)
def _fallback(dest, state, caddr, port, ihash):
    """ip_vs_mh_get_fallback's probe loop (kept out of line: the hot path stays small)."""
    m = state[H_M]
    for off in range(m):
        roffset = (off + ihash) % m
        d = state[TAB_OFF + _mod_m(_hashkey(caddr, port, state[H_K1], roffset), m)]
        if d < 0:
            return -1
        if _eligible(dest, d):
            return d
    return -1


@njit(cache=True, error_model="numpy", _nrt=False, inline="always")
def _schedule_kernel(dest, state, caddr, cport, daddr, dport, now):
    port = cport if (state[H_FLAGS] & FLAG_PORT) else 0
    ihash = _mod_m(_hashkey(caddr, port, state[H_K1], 0), state[H_M])
    d = state[TAB_OFF + ihash]
    if d < 0:
        return -1
    if _eligible(dest, d):
        return d
    if (state[H_FLAGS] & FLAG_FALLBACK) == 0:
        return -1
    return _fallback(dest, state, caddr, port, ihash)


@njit(cache=True, error_model="numpy", _nrt=False)
def _batch_kernel(dest, state, caddr, cport, daddr, dport, now, bind, out):
    # Two passes: first every key's slot (pure arithmetic on the keys, which LLVM
    # can vectorise; `out` is the scratch space), then the lookups.  Same result as
    # deciding one by one: binding changes counters and flags, never the table.
    m = state[H_M]
    key = state[H_K1]
    use_port = (state[H_FLAGS] & FLAG_PORT) != 0
    for j in range(caddr.shape[0]):
        port = np.int64(cport[j]) if use_port else np.int64(0)
        out[j] = _mod_m(_hashkey(np.int64(caddr[j]), port, key, 0), m)
    for j in range(caddr.shape[0]):
        ihash = out[j]
        i = state[TAB_OFF + ihash]
        if i >= 0 and not _eligible(dest, i):
            if state[H_FLAGS] & FLAG_FALLBACK:
                port = np.int64(cport[j]) if use_port else np.int64(0)
                i = _fallback(dest, state, caddr[j], port, ihash)
            else:
                i = -1
        out[j] = i
        if bind and i >= 0:
            _charge_kernel(dest, i, bind)
