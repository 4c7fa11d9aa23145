"""ovf -- weighted overflow.  Follows net/netfilter/ipvs/ip_vs_ovf.c.

Rule: the highest-weight dest among those with weight > 0, not OVERLOADed and
``activeconns <= weight``; the first in list order wins ties.

Beyond the kernel: answered from the tournament tree of ``_tree.py`` (key =
-weight, leaves with activeconns > weight ineligible), O(log n) per change; tests
prove the same answers as the scan.
"""

from __future__ import annotations

import numpy as np

from ._tree import (  # the tree-backed kernels shared by lc wlc sed nq fo ovf
    KIND_OVF,
    _batch_kernel,
    _config_kernel,
    _linear_batch_kernel,
    _linear_kernel,
    _schedule_kernel,
    _update_kernel,
    new_state_for,
)

NAME = "ovf"
KERNEL_FILE = "net/netfilter/ipvs/ip_vs_ovf.c"
KIND = KIND_OVF

__all__ = [
    "NAME", "KERNEL_FILE", "KIND", "new_state", "_config_kernel", "_update_kernel",
    "_schedule_kernel", "_linear_kernel", "_batch_kernel", "_linear_batch_kernel",
]


def new_state(dest: np.ndarray) -> np.ndarray:
    return new_state_for(dest, KIND)
