"""What both NFQUEUE adapters share: engine verdict -> NFQUEUE action, the direct-routing
hand-off, the row stride, and the counters.  Pure Python and numpy (no sockets), so the
mapping is tested without root.

Verdict mapping (engine ``V_*`` -> what the kernel is told):

=========== ============================================================================
V_PASS      NF_ACCEPT, packet unchanged
V_DROP      NF_DROP
V_NAT       NF_ACCEPT with the rewritten packet ``buf[i, off[i]:off[i]+lens[i]]``
V_TUNNEL    the same, 20 bytes longer (the IPIP header): nfqnl_mangle grows the skb;
            tests/netns/test_io_nfqueue.py captures the encapsulated packet
V_DR        ``on_dr(batch, idx, dest_rows)`` sends it (AF_PACKET), then NF_DROP; without
            ``on_dr``: NF_DROP, counted in ``dr_without_sender``
V_REJECT    ``on_reject(batch, idx, dest_rows)`` sends the ICMP error the packet became (rawip), then
            NF_DROP; without ``on_reject``: NF_DROP, counted in ``reject_without_sender``
other       NF_DROP (no engine verdict has another value; never forward the unknown)
=========== ============================================================================
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pylvs.dataplane import engine as en
from pylvs.dataplane import rewrite as rw

# NFQUEUE actions; the values are csrc/nfq.h's PL_NFQ_ACCEPT/DROP/ACCEPT_PAYLOAD
# (nfq_native checks they agree).
ACCEPT, DROP, ACCEPT_PAYLOAD = 0, 1, 2

_ACTION_OF = np.full(256, DROP, dtype=np.uint8)
_ACTION_OF[en.V_PASS] = ACCEPT
_ACTION_OF[en.V_DROP] = DROP
_ACTION_OF[en.V_NAT] = ACCEPT_PAYLOAD
_ACTION_OF[en.V_TUNNEL] = ACCEPT_PAYLOAD
_ACTION_OF[en.V_DR] = DROP
_ACTION_OF[en.V_REJECT] = DROP

# Row stride.  Without GSO the kernel hands over packets of at most the MTU (veth and
# Ethernet: 1500), so the engine's 2 KiB rows hold them with headroom.  With
# NFQA_CFG_F_GSO a packet can be a whole super-packet: up to 65535 bytes (IPv4 total
# length).  The native adapter receives each netlink message straight into its row
# before moving the packet to HEADROOM, so a GSO row holds the headroom, the largest
# packet and the netlink headers that precede it (NETLINK_META, generous: about 100
# bytes are used), rounded up to whole pages: 68 KiB.  256 such rows are 17 MiB.
IPV4_MAX = 65535
NETLINK_META = 1024  # = csrc/nfq.h PL_NFQ_META_MAX
PAGE = 4096
STRIDE_GSO = -(-(rw.HEADROOM + IPV4_MAX + NETLINK_META) // PAGE) * PAGE
STRIDE_PLAIN = en.STRIDE_DEFAULT

OnSend = Callable[[en.Batch, np.ndarray, np.ndarray], None]  # (batch, idx, dest_rows): on_dr, on_reject
Handle = Callable[[en.Batch], en.Verdicts]

STAT_KEYS = (
    "packets",            # every packet the queue handed us (oversize ones included)
    "batches",            # handle() calls
    "accepted",           # NF_ACCEPT unchanged (PASS, oversize)
    "dropped",            # NF_DROP (DROP, DR, refused payloads)
    "mangled",            # NF_ACCEPT with a payload (NAT, TUNNEL)
    "dr_sent",            # DR packets handed to on_dr
    "dr_without_sender",  # DR packets dropped: no on_dr
    "rejected",           # V_REJECT packets handed to on_reject (ICMP port unreachable)
    "reject_without_sender",  # V_REJECT packets dropped: no on_reject
    "recv_errors",        # receive errors, ENOBUFS (socket buffer overflow) included
    "gso_packets",        # GSO super-packets received whole
    "csum_fixed",         # partial L4 checksums completed before the engine
    "oversize",           # packets bigger than a row: accepted unchanged
    "handler_errors",     # batches whose handle()/on_dr raised: fail-open/closed verdicts
)


def stride_for(gso: bool) -> int:
    return STRIDE_GSO if gso else STRIDE_PLAIN


def actions(verdict: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """NFQUEUE action (ACCEPT/DROP/ACCEPT_PAYLOAD) per engine verdict."""
    v = np.asarray(verdict, dtype=np.uint8)
    if out is None:
        return _ACTION_OF[v]
    np.take(_ACTION_OF, v, out=out[: v.shape[0]])
    return out[: v.shape[0]]


def fallback_action(fail_open: bool) -> int:
    """The action for every packet of a batch whose handler raised."""
    return ACCEPT if fail_open else DROP


def new_stats() -> dict[str, int]:
    return dict.fromkeys(STAT_KEYS, 0)


def count_actions(stats: dict[str, int], acts: np.ndarray) -> None:
    if acts.shape[0] == 0:
        return
    c = np.bincount(acts, minlength=3)
    stats["accepted"] += int(c[ACCEPT])
    stats["dropped"] += int(c[DROP])
    stats["mangled"] += int(c[ACCEPT_PAYLOAD])


# What each sending verdict is handed to, and its two counters (sent, no sender).
_HAND_OFFS = ((en.V_DR, "dr_sent", "dr_without_sender"), (en.V_REJECT, "rejected", "reject_without_sender"))


def hand_off(batch: en.Batch, verdicts: en.Verdicts, on_dr: OnSend | None, on_reject: OnSend | None,
             stats: dict[str, int]) -> None:  # fmt: skip
    """Give the batch's V_DR packets to ``on_dr`` and its V_REJECT packets (now ICMP
    errors) to ``on_reject``, each as ``(batch, idx, dest_rows)``; their NFQUEUE verdict
    is DROP either way.  Without a sender they are counted and dropped."""
    v = verdicts.verdict[: batch.n]
    for (kind, sent, missing), send in zip(_HAND_OFFS, (on_dr, on_reject), strict=True):
        idx = np.flatnonzero(v == kind)
        if idx.size == 0:
            continue
        if send is None:
            stats[missing] += int(idx.size)
            continue
        send(batch, idx, verdicts.dest_row[idx])
        stats[sent] += int(idx.size)


def check_verdicts(verdicts: en.Verdicts, n: int) -> None:
    if verdicts.verdict.shape[0] < n:
        raise ValueError(f"handle() returned {verdicts.verdict.shape[0]} verdicts for {n} packets")
