"""Tournament tree for the least-connection family (lc, wlc, sed, nq) and fo/ovf.

The kernel scans the destination list and keeps the current best, replacing it only
when a later dest is *strictly* better.  For eligible dests (weight > 0, not
OVERLOADed, in the list) every one of the four comparisons is an exact comparison
of a key:

* lc:  overhead                      (integers)
* wlc: overhead / weight             (rationals; ``a*wb > b*wa`` with positive
                                      weights is exact, hence transitive)
* sed: (activeconns + 1) / weight    (rationals, same argument)
* nq:  (activeconns != 0, sed key)   (lexicographic: the first idle dest is
                                      returned at once, else the sed minimum)
* fo, ovf: -weight                   (the heaviest; ovf only among dests with
                                      activeconns <= weight)

so the scan returns the *first row holding the minimum key*.  ``min`` with "left
wins ties" is associative, so a complete binary tree whose every node holds the
winner of its two children (left = earlier rows) has the scan's answer at the root.
A counter, weight or flag change of one row recomputes its leaf-to-root path:
O(log n).  Weight-0 dests can never win in the kernel (``loh*0 > doh*w`` is false),
so they are simply ineligible leaves.

State layout (int64): ``state[0] = P`` (leaf count, a power of two >= rows),
``state[1] = kind``, node k (1 <= k < 2P, leaf of row i at k = P + i) at
``state[TREE_OFF + 3k : TREE_OFF + 3k + 3]`` = (winning row or -1, key numerator,
key denominator).  Nodes carry their winner's key so an update reads only the
tree, never the dest rows of the other candidates.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._common import ACT, W, _charge_kernel, _eligible, _overhead

KIND_LC = 0
KIND_WLC = 1
KIND_SED = 2
KIND_NQ = 3
KIND_FO = 4  # highest weight wins (ip_vs_fo.c)
KIND_OVF = 5  # highest weight among activeconns <= weight (ip_vs_ovf.c)
FO_KEY_BASE = 1 << 31  # fo/ovf key = FO_KEY_BASE - weight: smaller key = heavier dest
TREE_OFF = 2  # two header words before node 1 (node 0 unused)
NODE = 3  # words per node: winning row (-1 none), key numerator, key denominator


@njit(cache=True, error_model="numpy", _nrt=False)
def _b_beats_a(dest, kind, a, b):
    """True when row b (later in the list) strictly beats row a (earlier)."""
    if kind == KIND_LC:
        return _overhead(dest, b) < _overhead(dest, a)  # ip_vs_lc.c: doh < loh
    if kind == KIND_WLC:
        return _overhead(dest, a) * dest[b, W] > _overhead(dest, b) * dest[a, W]
    if kind == KIND_FO or kind == KIND_OVF:
        return dest[b, W] > dest[a, W]  # replace only on a strictly higher weight
    if kind == KIND_NQ:
        if dest[a, ACT] == 0:  # ip_vs_nq.c returns the first idle dest at once
            return False
        if dest[b, ACT] == 0:
            return True
    # sed (and nq when neither is idle): overhead = activeconns + 1
    return (dest[a, ACT] + 1) * dest[b, W] > (dest[b, ACT] + 1) * dest[a, W]


@njit(cache=True, error_model="numpy", _nrt=False)
def _combine(dest, kind, a, b):
    if a < 0:
        return b
    if b < 0:
        return a
    if _b_beats_a(dest, kind, a, b):
        return b
    return a


def tree_state_size(rows: int) -> int:
    p = 1
    while p < rows:
        p *= 2
    return TREE_OFF + NODE * 2 * p


@njit(cache=True, error_model="numpy", _nrt=False)
def _tree_init(state, rows, kind):
    p = 1
    while p < rows:
        p *= 2
    state[0] = p
    state[1] = kind


@njit(cache=True, error_model="numpy", _nrt=False)
def _leaf_key(dest, kind, i):
    """Row i's (row, num, den) key; row -1 if not eligible.  b beats a iff
    num_a * den_b > num_b * den_a, which is exactly _b_beats_a for each kind."""
    if not _eligible(dest, i) or (kind == KIND_OVF and dest[i, ACT] > dest[i, W]):
        return -1, 0, 1
    if kind == KIND_FO or kind == KIND_OVF:
        return i, FO_KEY_BASE - dest[i, W], 1
    if kind == KIND_LC:
        return i, _overhead(dest, i), 1
    if kind == KIND_WLC:
        return i, _overhead(dest, i), dest[i, W]
    a = dest[i, ACT]
    # nq: an idle dest gets key 0, so it beats every busy one and the first idle
    # one wins; otherwise the sed key (activeconns + 1) / weight
    if kind == KIND_NQ and a == 0:
        return i, 0, dest[i, W]
    return i, a + 1, dest[i, W]


@njit(cache=True, error_model="numpy", _nrt=False)
def _leaf(dest, kind, i, state, o):
    r, nu, de = _leaf_key(dest, kind, i)
    state[o] = r
    state[o + 1] = nu
    state[o + 2] = de


@njit(cache=True, error_model="numpy", _nrt=False)
def _pull(state, k):
    """Recompute node k from its children; True if it changed."""
    o = TREE_OFF + NODE * k
    left = TREE_OFF + NODE * 2 * k
    r = left + NODE
    src = left
    if state[left] < 0 or state[r] >= 0 and state[left + 1] * state[r + 2] > state[r + 1] * state[left + 2]:
        src = r
    if state[o] == state[src] and state[o + 1] == state[src + 1] and state[o + 2] == state[src + 2]:
        return False
    state[o] = state[src]
    state[o + 1] = state[src + 1]
    state[o + 2] = state[src + 2]
    return True


@njit(cache=True, error_model="numpy", _nrt=False)
def _tree_rebuild(dest, state):
    p = state[0]
    kind = state[1]
    rows = dest.shape[0]
    for i in range(p):
        o = TREE_OFF + NODE * (p + i)
        if i < rows:
            _leaf(dest, kind, i, state, o)
        else:  # padding leaf: the same "no dest" triple _leaf_key gives
            state[o] = -1
            state[o + 1] = 0
            state[o + 2] = 1
    for k in range(p - 1, 0, -1):
        o = TREE_OFF + NODE * k
        state[o] = -2  # force the copy
        _pull(state, k)


@njit(cache=True, error_model="numpy", _nrt=False, inline="always")
def _tree_update(dest, state, i):
    """Row i's counters, weight or flags changed: fix its leaf-to-root path,
    stopping as soon as a node comes out unchanged.  The winner climbing the path
    stays in registers; only the sibling is read from memory, so the levels do not
    wait on each other's stores."""
    k = state[0] + i
    r, nu, de = _leaf_key(dest, state[1], i)
    o = TREE_OFF + NODE * k
    state[o] = r
    state[o + 1] = nu
    state[o + 2] = de
    while k > 1:
        so = TREE_OFF + NODE * (k ^ 1)
        sr = state[so]
        sn = state[so + 1]
        sd = state[so + 2]
        if sr >= 0:
            if k & 1:  # we are the right child: the sibling (left) wins ties
                if r < 0 or not sn * de > nu * sd:
                    r, nu, de = sr, sn, sd
            elif r < 0 or nu * sd > sn * de:  # we are left: the right one must be strictly better
                r, nu, de = sr, sn, sd
        k >>= 1
        o = TREE_OFF + NODE * k
        if state[o] == r and state[o + 1] == nu and state[o + 2] == de:
            return
        state[o] = r
        state[o + 1] = nu
        state[o + 2] = de


@njit(cache=True, error_model="numpy", _nrt=False)
def _tree_best(state):
    return state[TREE_OFF + NODE]


@njit(cache=True, error_model="numpy", _nrt=False, inline="always")
def _linear_scan(dest, kind):
    """The kernel's own linear scan (used by tests and as the `linear` variant)."""
    best = -1
    for i in range(dest.shape[0]):
        if not _eligible(dest, i):
            continue
        if kind == KIND_OVF and dest[i, ACT] > dest[i, W]:
            continue
        if best < 0:
            best = i
            if kind == KIND_NQ and dest[i, ACT] == 0:
                return i
            continue
        if kind == KIND_NQ and dest[i, ACT] == 0:
            return i
        if _b_beats_a(dest, kind, best, i):
            best = i
    return best


def new_tree_state(rows: int, kind: int) -> np.ndarray:
    st = np.full(tree_state_size(rows), -1, dtype=np.int64)
    _tree_init(st, rows, kind)
    return st


# ---------------------------------------------------------- the scheduler kernels
# lc, wlc, sed, nq, fo and ovf differ only in their comparison, and the tree state
# carries which one (state[1]), so these kernels serve all six modules: each module
# re-exports them under the registry's names and adds its NAME, KERNEL_FILE, KIND.


def new_state_for(dest: np.ndarray, kind: int) -> np.ndarray:
    """A built tree for ``dest`` ordered by ``kind``'s comparison."""
    st = new_tree_state(dest.shape[0], kind)
    _tree_rebuild(dest, st)
    return st


@njit(cache=True, error_model="numpy", _nrt=False)
def _config_kernel(dest, state):
    _tree_rebuild(dest, state)


@njit(cache=True, error_model="numpy", _nrt=False, inline="always")
def _update_kernel(dest, state, i):
    _tree_update(dest, state, i)


@njit(cache=True, error_model="numpy", _nrt=False, inline="always")
def _schedule_kernel(dest, state, caddr, cport, daddr, dport, now):
    return _tree_best(state)


@njit(cache=True, error_model="numpy", _nrt=False)
def _linear_kernel(dest, state, caddr, cport, daddr, dport, now):
    """The kernel's linear scan, kept for tests and benchmarks."""
    return _linear_scan(dest, state[1])


@njit(cache=True, error_model="numpy", _nrt=False, inline="always")
def _linear_batch_loop(dest, kind, n, bind, out):
    for j in range(n):
        i = _linear_scan(dest, kind)
        out[j] = i
        if bind and i >= 0:
            _charge_kernel(dest, i, bind)


@njit(cache=True, error_model="numpy", _nrt=False)
def _batch_kernel(dest, state, caddr, cport, daddr, dport, now, bind, out):
    for j in range(caddr.shape[0]):
        i = _tree_best(state)
        out[j] = i
        if bind and i >= 0:
            _charge_kernel(dest, i, bind)
            _tree_update(dest, state, i)


@njit(cache=True, error_model="numpy", _nrt=False)
def _linear_batch_kernel(dest, state, caddr, cport, daddr, dport, now, bind, out):
    # One branch per kind with the kind as a literal: after inlining, the scan's
    # comparisons fold to constants (a kind read at run time inside the loop made
    # this benchmark anchor 6x slower).
    kind = state[1]
    n = caddr.shape[0]
    if kind == KIND_LC:
        _linear_batch_loop(dest, KIND_LC, n, bind, out)
    elif kind == KIND_WLC:
        _linear_batch_loop(dest, KIND_WLC, n, bind, out)
    elif kind == KIND_SED:
        _linear_batch_loop(dest, KIND_SED, n, bind, out)
    elif kind == KIND_NQ:
        _linear_batch_loop(dest, KIND_NQ, n, bind, out)
    elif kind == KIND_FO:
        _linear_batch_loop(dest, KIND_FO, n, bind, out)
    else:
        _linear_batch_loop(dest, KIND_OVF, n, bind, out)
