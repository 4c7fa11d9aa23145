"""The FTP helper (pylvs.dataplane.ftp, the kernel's ip_vs_ftp) through the engine, packet
by packet, on a NAT service at port 21: both entry points (``engine.process`` and the
cfunc the C loop calls) fed the same packets through ``Twin``, which holds their bytes and
state equal; the packets built with scapy and every rewritten one checked for valid
checksums."""

from __future__ import annotations

from ftp_session import CPORT, FWM_FTP_CF, OTHER, S0, Session, seg
from golden import CLIENT, RIP1, VIP, ip2int
from scapy.layers.inet import TCP

from pylvs.dataplane import conntab as ctm
from pylvs.dataplane import ftp


def test_pasv_rewrites_the_227_and_moves_the_sequence_numbers_after_it():
    s = Session()
    assert s.control()["flags"] & ctm.F_APP_FTP
    s.command(b"PASV\r\n")
    assert s.control()["app"] == ftp.APP_PASV
    out = s.reply(b"227 Entering Passive Mode (10,0,0,2,39,16).\r\n")
    assert out.src == VIP and out[TCP].sport == 21
    assert bytes(out[TCP].payload) == b"227 Entering Passive Mode (192,0,2,10,39,16).\r\n"
    assert out[TCP].seq == S0 + 1  # the rewritten segment itself starts where it did
    c = s.control()
    assert c["flags"] & ctm.F_OUT_SEQ and (int(c["seq_delta"]), int(c["seq_prev"])) == (2, 0)
    # the data entry: client:any -> VIP:10000 -> RIP1:10000, in LISTEN, under the control connection
    d = s.entry(0, 10000)
    assert d is not None and d["flags"] & ctm.F_NO_CPORT and d["state"] == ctm.S_LISTEN
    assert d["dport"] == 10000 and d["daddr"] == ip2int(RIP1) and c["n_control"] == 1
    # the server's next segment moves by 2; the client's acknowledgement comes back by 2
    out = s.reply(b"150 Here comes the directory listing.\r\n")
    assert out[TCP].seq == S0 + 1 + len(b"227 Entering Passive Mode (10,0,0,2,39,16).\r\n") + 2
    reason, out = s.send(seg(CLIENT, VIP, CPORT, 21, "A", seq=s.cseq, ack=s.sseq + 2))
    assert reason == "nat_in" and out[TCP].ack == s.sseq and out.dst == RIP1
    # the client's data connection finds the entry and fills in its port
    reason, out = s.send(seg(CLIENT, VIP, 45000, 10000, "S", seq=77))
    assert reason == "nat_in" and (out.dst, out[TCP].dport) == (RIP1, 10000)
    assert s.entry(0, 10000) is None and not s.entry(45000, 10000)["flags"] & ctm.F_NO_CPORT
    reason, out = s.send(seg(RIP1, CLIENT, 10000, 45000, "SA", seq=900, ack=78))
    assert reason == "nat_out" and (out.src, out[TCP].sport) == (VIP, 10000)


def test_two_rewrites_keep_the_stream_in_step():
    s = Session()
    s.command(b"PASV\r\n")
    first = b"227 Entering Passive Mode (10,0,0,2,39,16)\r\n"
    s.reply(first)
    s.command(b"PASV\r\n")
    out = s.reply(b"227 Entering Passive Mode (10,0,0,2,39,17)\r\n")
    assert out[TCP].seq == S0 + 1 + len(first) + 2
    c = s.control()
    assert (int(c["seq_delta"]), int(c["seq_prev"])) == (4, 2)
    # an ACK for the server's bytes before the second rewrite comes back by the first delta only
    reason, out = s.send(seg(CLIENT, VIP, CPORT, 21, "A", seq=s.cseq, ack=S0 + 1 + len(first) + 2))
    assert out[TCP].ack == S0 + 1 + len(first)


def test_epsv_makes_the_data_entry_and_rewrites_nothing():
    s = Session()
    s.command(b"EPSV\r\n")
    text = b"229 Entering Extended Passive Mode (|||10001|)\r\n"
    out = s.reply(text)
    assert bytes(out[TCP].payload) == text and not s.control()["flags"] & ctm.F_OUT_SEQ
    assert s.entry(0, 10001) is not None
    reason, out = s.send(seg(CLIENT, VIP, 45001, 10001, "S"))
    assert reason == "nat_in" and (out.dst, out[TCP].dport) == (RIP1, 10001)


def test_port_and_eprt_give_the_servers_connection_from_port_20_its_entry():
    s = Session()
    s.command(b"PORT 203,0,113,7,200,10\r\n")
    e = s.entry(200 * 256 + 10, 20)
    assert e is not None and (e["daddr"], e["dport"], e["state"]) == (ip2int(RIP1), 20, ctm.S_LISTEN)
    reason, out = s.send(seg(RIP1, CLIENT, 20, 51210, "S", seq=1))
    assert reason == "nat_out" and (out.src, out[TCP].sport) == (VIP, 20)
    reason, out = s.send(seg(CLIENT, VIP, 51210, 20, "SA", seq=9, ack=2))
    assert reason == "nat_in" and (out.dst, out[TCP].dport) == (RIP1, 20)
    s.command(b"EPRT |1|203.0.113.7|51300|\r\n")
    assert s.entry(51300, 20) is not None
    assert s.control()["n_control"] == 2
    # the commands themselves go through untouched, and no sequence adjustment starts
    assert not s.control()["flags"] & ctm.F_OUT_SEQ


def test_what_is_not_ours_to_rewrite_is_left_alone():
    s = Session()
    s.command(b"PORT 198,51,100,9,200,10\r\n")  # another host: an FTP bounce
    s.command(b"EPRT |2|2001:db8::7|51300|\r\n")  # IPv6
    assert s.control()["n_control"] == 0
    reason, _ = s.send(seg(RIP1, OTHER, 20, 51210, "S"))
    assert reason != "nat_out"
    s.command(b"PASV\r\n")
    text = b"227 Entering Passive Mode (192,0,2,10,39,16).\r\n"  # pasv_address = VIP already
    out = s.reply(text)
    assert bytes(out[TCP].payload) == text and s.control()["n_control"] == 0
    # a 227 without a PASV before it is someone's text, not a reply to rewrite
    s2 = Session()
    text = b"227 Entering Passive Mode (10,0,0,2,39,16).\r\n"
    assert bytes(s2.reply(text)[TCP].payload) == text


def test_a_227_split_over_two_segments_is_not_rewritten():
    s = Session()
    s.command(b"PASV\r\n")
    out = s.reply(b"227 Entering Passive Mode (10,0,")
    assert bytes(out[TCP].payload) == b"227 Entering Passive Mode (10,0,"
    out = s.reply(b"0,2,39,16).\r\n")
    assert bytes(out[TCP].payload) == b"0,2,39,16).\r\n" and s.control()["n_control"] == 0


def test_a_firewall_mark_service_gets_no_helper():
    """The guide's fwmark recipe announces the VIP itself (pasv_address) and marks the
    passive range: the helper stays out of it (docs/ftp.md)."""
    s = Session(FWM_FTP_CF, mark=21)
    assert not s.control()["flags"] & ctm.F_APP_FTP
