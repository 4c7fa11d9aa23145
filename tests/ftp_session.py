"""A control connection to a NAT FTP service through ``Twin`` (both entry points of the
engine), packet by packet, with the checksums of every translated packet checked: shared
by tests/unit/test_ftp_helper.py, test_conntab_sync.py and tests/property/test_ftp_fuzz.py."""

from __future__ import annotations

from golden import CLIENT, HEAD, RIP1, VIP, ip2int, virtual
from scapy.layers.inet import IP, TCP
from scapy.packet import Raw
from twin import Twin

from pylvs.dataplane import conntab as ctm
from pylvs.dataplane import engine as en

FTP_CF = HEAD.format(network="nat") + virtual("ftp", VIP, 21, servers=[("ftp1", RIP1, None, 1)])
FWM_FTP_CF = HEAD.format(network="nat") + virtual(
    "ftp", VIP, 21, servers=[("ftp1", RIP1, None, 1)], extra="     fwmark = 21\n     persistent = 600")
CPORT = 40021
OTHER = "198.51.100.9"
S0, C0 = 5000, 1000  # the server's and the client's initial sequence numbers


def seg(src, dst, sport, dport, flags="PA", payload=b"", seq=0, ack=0):
    p = IP(src=src, dst=dst, id=5, ttl=64) / TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack,
                                                 window=64240)
    return p / Raw(payload) if payload else p


def checksums_ok(data: bytes) -> bool:
    p = IP(data)
    ip_ck, tcp_ck = p.chksum, p[TCP].chksum
    del p.chksum
    del p[TCP].chksum
    q = IP(bytes(p))
    return q.chksum == ip_ck and q[TCP].chksum == tcp_ck


class Session:
    """A control connection CLIENT:CPORT -> VIP:21, handshake done, through a Twin."""

    def __init__(self, cf: str = FTP_CF, mark: int = 0) -> None:
        self.t = Twin(cf)
        self.mark = mark
        self.cseq, self.sseq = C0 + 1, S0 + 1  # next bytes each side sends (its own numbers)
        assert self.send(seg(CLIENT, VIP, CPORT, 21, "S", seq=C0))[0] == "nat_in"
        assert self.send(seg(RIP1, CLIENT, 21, CPORT, "SA", seq=S0, ack=C0 + 1))[0] == "nat_out"
        assert self.send(seg(CLIENT, VIP, CPORT, 21, "A", seq=C0 + 1, ack=S0 + 1))[0] == "nat_in"

    def send(self, p) -> tuple[str, IP | None]:
        v = self.t.send([p], marks=[self.mark])
        reason = en.REASON_NAMES[v.reason[0]]
        out = self.t.out[0] if v.verdict[0] == en.V_NAT else None
        if out is not None:
            assert checksums_ok(out), reason
        return reason, (IP(out) if out is not None else None)

    def command(self, text: bytes) -> IP:
        reason, out = self.send(seg(CLIENT, VIP, CPORT, 21, payload=text, seq=self.cseq, ack=self.sseq_seen()))
        assert reason == "nat_in"
        self.cseq += len(text)
        return out

    def reply(self, text: bytes) -> IP:
        reason, out = self.send(seg(RIP1, CLIENT, 21, CPORT, payload=text, seq=self.sseq, ack=self.cseq))
        assert reason == "nat_out"
        self.sseq += len(text)
        return out

    def sseq_seen(self) -> int:
        """What the client has seen of the server's stream, in the client's numbers."""
        return self.sseq + self.delta()

    def delta(self) -> int:
        e = self.control()
        return int(e["seq_delta"]) if e["flags"] & ctm.F_OUT_SEQ else 0

    def control(self):
        n = ctm.lookup_in(self.t.py.ct, 6, ip2int(CLIENT), CPORT, ip2int(VIP), 21, 0.0)
        assert n >= 0
        return self.t.py.ct.entries[n]

    def entry(self, cport: int, vport: int):
        n = ctm.lookup_in(self.t.py.ct, 6, ip2int(CLIENT), cport, ip2int(VIP), vport, 0.0)
        return None if n < 0 else self.t.py.ct.entries[n]
