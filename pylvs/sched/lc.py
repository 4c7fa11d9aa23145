"""lc -- least-connection.  Follows net/netfilter/ipvs/ip_vs_lc.c.

Rule: among dests in the list with weight > 0 and not OVERLOADed, minimal overhead =
activeconns*256 + inactconns (ip_vs_dest_conn_overhead); weights only gate eligibility;
the first dest in list order wins ties.

Beyond the kernel: the pick is read from a tournament tree (see ``_tree.py``) kept
up to date in O(log n) per counter/weight/flag change, instead of a linear scan.
The tree's answer is the scan's answer, ties included (tests prove it against the
scan and the plain-Python twin).  State: the tree (``state[0]`` = leaf count).
"""

from __future__ import annotations

import numpy as np

from ._tree import (  # the tree-backed kernels shared by lc wlc sed nq fo ovf
    KIND_LC,
    _batch_kernel,
    _config_kernel,
    _linear_batch_kernel,
    _linear_kernel,
    _schedule_kernel,
    _update_kernel,
    new_state_for,
)

NAME = "lc"
KERNEL_FILE = "net/netfilter/ipvs/ip_vs_lc.c"
KIND = KIND_LC

__all__ = [
    "NAME", "KERNEL_FILE", "KIND", "new_state", "_config_kernel", "_update_kernel",
    "_schedule_kernel", "_linear_kernel", "_batch_kernel", "_linear_batch_kernel",
]


def new_state(dest: np.ndarray) -> np.ndarray:
    return new_state_for(dest, KIND)
