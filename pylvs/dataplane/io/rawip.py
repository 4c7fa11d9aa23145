"""Packets the director itself sends as IP (not frames): the engine's V_REJECT.

With an NFQUEUE adapter a V_REJECT packet has become the ICMP port unreachable for the
client (source: the VIP, a local address), so it is handed to the local stack through
a raw socket, which routes it like any packet the director sends (ip_vs_leave's
icmp_send), and the queued original is dropped.  Giving it back in the verdict instead
would route it in PREROUTING, where a packet from a local address is a martian.
"""

from __future__ import annotations

import socket

import numpy as np

from pylvs.dataplane import engine as en

IP_DST = slice(16, 20)


class RejectSender:
    """``on_reject(batch, idx, dest_rows)`` for the NFQUEUE adapters (the rows are not
    needed: the ICMP error carries its own destination); counters in ``stats``."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)  # IP_HDRINCL
        self.stats = dict.fromkeys(("rejected_sent", "send_errors"), 0)

    def __call__(self, batch: en.Batch, idx: np.ndarray, dest_rows: np.ndarray | None = None) -> None:
        for i in idx.tolist():
            off, n = int(batch.off[i]), int(batch.lens[i])
            pkt = memoryview(batch.buf[i])[off:off + n]
            try:
                self.sock.sendto(pkt, (socket.inet_ntoa(bytes(pkt[IP_DST])), 0))
                self.stats["rejected_sent"] += 1
            except OSError:
                self.stats["send_errors"] += 1

    def close(self) -> None:
        self.sock.close()
