"""fo -- weighted failover.  Follows net/netfilter/ipvs/ip_vs_fo.c.

Rule: the dest with the highest weight among those with weight > 0 that are not
OVERLOADed; the first in list order wins ties (replacement needs a strictly
higher weight).

Beyond the kernel: answered from the tournament tree of ``_tree.py`` (key =
-weight), O(log n) per change instead of a scan per decision; tests prove the same
answers as the scan.  The tree reads OVERLOAD, so call ``_update_kernel`` after
counter changes as for every scheduler.
"""

from __future__ import annotations

import numpy as np

from ._tree import (  # the tree-backed kernels shared by lc wlc sed nq fo ovf
    KIND_FO,
    _batch_kernel,
    _config_kernel,
    _linear_batch_kernel,
    _linear_kernel,
    _schedule_kernel,
    _update_kernel,
    new_state_for,
)

NAME = "fo"
KERNEL_FILE = "net/netfilter/ipvs/ip_vs_fo.c"
KIND = KIND_FO

__all__ = [
    "NAME", "KERNEL_FILE", "KIND", "new_state", "_config_kernel", "_update_kernel",
    "_schedule_kernel", "_linear_kernel", "_batch_kernel", "_linear_batch_kernel",
]


def new_state(dest: np.ndarray) -> np.ndarray:
    return new_state_for(dest, KIND)
