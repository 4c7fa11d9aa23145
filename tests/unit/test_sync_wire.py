"""The IPVS sync protocol on the wire (pylvs.ha.sync), against bytes built by hand from
reference section 10 (ip_vs_sync.c's struct ip_vs_sync_mesg / ip_vs_sync_v4 / _v0)."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pylvs.dataplane import connsync as cs
from pylvs.dataplane import conntab as ctm
from pylvs.ha import sync

CADDR, VADDR, DADDR = 0xCB007107, 0xC000020A, 0x0A000002  # 203.0.113.7, 192.0.2.10, 10.0.0.2
TPL_CADDR = 0xCB007100  # 203.0.113.0: the /24 template key


def conn(**kw):
    base = dict(proto=6, caddr=CADDR, cport=40000, vaddr=VADDR, vport=80, daddr=DADDR, dport=8080,
                flags=0, state=ctm.S_ESTABLISHED, fwmark=0, timeout=900)
    base.update(kw)
    return sync.conns_from([base])


TPL = dict(proto=6, caddr=TPL_CADDR, cport=0, vaddr=VADDR, vport=80, daddr=DADDR, dport=80,
           flags=ctm.F_TEMPLATE, state=0, fwmark=0, timeout=300)


def entry_v4(typ, proto, size, flags, state, cport, vport, dport, fwmark, timeout, caddr, vaddr, daddr):
    return struct.pack(">BBHIHHHHIIIII", typ, proto, size, flags, state, cport, vport, dport, fwmark, timeout,
                       caddr, vaddr, daddr)


def header_v1(syncid, size, nr):
    return struct.pack(">BBHBbH", 0, syncid, size, nr, 1, 0)


def test_golden_bytes_one_tcp_connection_and_one_template():
    body = (entry_v4(0, 6, 36, 0x0000, 1, 40000, 80, 8080, 0, 900, CADDR, VADDR, DADDR)
            + entry_v4(0, 6, 36, 0x1000, 0, 0, 80, 80, 0, 300, TPL_CADDR, VADDR, DADDR))
    want = header_v1(9, 8 + 72, 2) + body
    got = sync.encode_v1(9, np.concatenate([conn(), sync.conns_from([TPL])]))
    assert got == [want]
    assert want[:8].hex() == "0009005002010000"
    d = sync.decode(want)
    assert d.syncid == 9 and d.problems == {}
    assert d.conns.tolist() == np.concatenate([conn(), sync.conns_from([TPL])]).tolist()


def test_udp_state_is_zero_on_the_wire_and_s_udp_in_records():
    c = conn(proto=17, state=ctm.S_UDP, timeout=300)
    (msg,) = sync.encode_v1(1, c)
    assert struct.unpack_from(">H", msg, 8 + 8)[0] == 0
    assert sync.decode(msg).conns["state"].tolist() == [ctm.S_UDP]


def test_flags_outside_the_backup_mask_are_not_sent():
    c = conn(flags=ctm.F_INACTIVE | ctm.F_SYNC | ctm.F_UNCOUNTED | 0x40 | ctm.FWD_DROUTE | ctm.F_NOOUTPUT)
    (msg,) = sync.encode_v1(1, c)
    assert struct.unpack_from(">I", msg, 8 + 4)[0] == ctm.F_INACTIVE | ctm.FWD_DROUTE | ctm.F_NOOUTPUT


def test_split_by_max_size_and_255_entries():
    assert len(sync.encode_v1(3, conn(), max_size=44)[0]) == 44  # one plain entry fits 8 + 36
    with pytest.raises(ValueError, match="cannot hold one entry"):
        sync.encode_v1(3, conn(flags=ctm.F_OUT_SEQ), max_size=44)
    many = np.repeat(conn(), 100)
    msgs = sync.encode_v1(3, many)
    assert [len(m) for m in msgs] == [8 + 40 * 36, 8 + 40 * 36, 8 + 20 * 36]
    assert all(len(m) <= sync.SYNC_MESG_MAX for m in msgs)
    assert sum(sync.decode(m).conns.shape[0] for m in msgs) == 100
    big = sync.encode_v1(3, np.repeat(conn(), 300), max_size=65000)
    assert [m[4] for m in big] == [255, 45]
    assert sync.encode_v1(3, np.zeros(0, dtype=cs.SYNC_DTYPE)) == []


records = st.fixed_dictionaries({
    "proto": st.sampled_from([6, 17]), "caddr": st.integers(0, 2**32 - 1), "cport": st.integers(0, 65535),
    "vaddr": st.integers(0, 2**32 - 1), "vport": st.integers(0, 65535), "daddr": st.integers(0, 2**32 - 1),
    "dport": st.integers(0, 65535), "fwmark": st.integers(0, 2**32 - 1), "timeout": st.integers(0, 2**32 - 1),
    "flags": st.integers(0, 0xFFFF).map(lambda f: f & cs.IP_VS_CONN_F_BACKUP_MASK & ~ctm.F_TEMPLATE),
    "state": st.integers(0, 10),
})  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(st.lists(records, max_size=90), st.integers(0, 255), st.integers(72, 3000))
def test_round_trip(rows, syncid, max_size):
    """72: the smallest message that holds an entry with the SEQ_DATA option (8 + 64)."""
    for r in rows:
        if r["proto"] == 17:
            r["state"] = ctm.S_UDP
    c = sync.conns_from(rows)
    msgs = sync.encode_v1(syncid, c, max_size)
    assert all(len(m) <= max_size for m in msgs)
    back = [sync.decode(m) for m in msgs]
    assert all(d.syncid == syncid and d.problems == {} for d in back)
    got = np.concatenate([d.conns for d in back]) if back else np.zeros(0, dtype=cs.SYNC_DTYPE)
    assert got.tolist() == c.tolist()


@settings(max_examples=80, deadline=None)
@given(st.binary(max_size=300))
def test_decode_never_raises(data):
    d = sync.decode(data)
    assert set(d.problems) <= set(sync.PROBLEM_NAMES)


def _with_size(msg: bytes) -> bytes:
    return msg[:2] + struct.pack(">H", len(msg)) + msg[4:]


def _one(entry: bytes, nr: int = 1) -> bytes:
    return _with_size(header_v1(1, 0, nr) + entry)


PLAIN = entry_v4(0, 6, 36, 0, 1, 40000, 80, 8080, 0, 900, CADDR, VADDR, DADDR)


def with_options(opts: bytes, *, pad_to_4=True) -> bytes:
    body = PLAIN[:2] + struct.pack(">H", 36 + len(opts)) + PLAIN[4:] + opts
    if pad_to_4:
        body += bytes(-len(body) % 4)
    return body


def test_malformed_messages_each_land_in_their_counter():
    (good,) = sync.encode_v1(1, conn())
    cases = {
        "short_header": good[:3],
        "bad_size": good + b"\0\0\0\0",
        "entry_overrun": _one(PLAIN, nr=2),
        "entry_too_short": _one(PLAIN[:2] + struct.pack(">H", 20) + PLAIN[4:]),
        "bad_entry_version": _one(PLAIN[:2] + struct.pack(">H", 0x1000 | 36) + PLAIN[4:]),
        "bad_entry_type": _one(b"\x02" + PLAIN[1:]),
        "option_zero_length": _one(with_options(b"\x41\x00")),
        "option_overrun": _one(with_options(b"\x41\x09abc", pad_to_4=False)),
        "bad_option": _one(with_options(b"\x01\x04abcd")),  # SEQ_DATA must be 24 bytes
    }
    for name, msg in cases.items():
        d = sync.decode(msg)
        assert d.problems == {name: 1}, name
        assert d.conns.shape[0] == 0, name
    assert sync.decode(_with_size(good[:4] + good[4:5] + b"\x01" + good[6:])).problems == {}


def test_entry_problems_skip_only_that_entry():
    v6 = struct.pack(">BBH", 1, 6, 72) + bytes(68)
    unknown = with_options(b"\x05\x02ab")
    optional = with_options(b"\x45\x02ab")
    pe = with_options(b"\x03\x03sip")
    bad_state = entry_v4(0, 6, 36, 0, 11, 1, 80, 80, 0, 9, CADDR, VADDR, DADDR)
    udp_bad = entry_v4(0, 17, 36, 0, 1, 1, 80, 80, 0, 9, CADDR, VADDR, DADDR)
    sctp = entry_v4(0, 132, 36, 0, 0, 1, 80, 80, 0, 9, CADDR, VADDR, DADDR)
    seq = with_options(b"\x01\x18" + bytes(24))
    body = PLAIN + v6 + unknown + optional + pe + bad_state + udp_bad + sctp + seq
    d = sync.decode(_one(body, nr=9))
    assert d.problems == {"ipv6": 1, "unknown_mandatory_option": 1, "pe_unsupported": 1, "bad_state": 2,
                          "bad_proto": 1}
    assert d.conns.shape[0] == 3  # the plain one, the one with an optional unknown option, the SEQ one


def test_template_state_beyond_the_template_states_reads_as_none():
    e = entry_v4(0, 6, 36, ctm.F_TEMPLATE, 7, 0, 80, 80, 0, 300, TPL_CADDR, VADDR, DADDR)
    assert sync.decode(_one(e)).conns["state"].tolist() == [0]


def entry_v0(proto, cport, vport, dport, caddr, vaddr, daddr, flags, state):
    return struct.pack(">BBHHHIIIHH", 0, proto, cport, vport, dport, caddr, vaddr, daddr, flags, state)


def test_version_0_messages():
    body = (entry_v0(6, 40000, 80, 8080, CADDR, VADDR, DADDR, 0x0040 | 0x0100, 3)
            + entry_v0(6, 40001, 80, 8080, CADDR, VADDR, DADDR, 0x0200, 1) + bytes(24)  # + seq options
            + entry_v0(0, 0, 0, 0, TPL_CADDR, 7, DADDR, 0x1000, 0))  # a fwmark template: vaddr = mark 7
    msg = struct.pack(">BBH", 3, 5, 4 + len(body)) + body
    d = sync.decode(msg)
    assert d.syncid == 5 and d.problems == {}
    assert d.conns["cport"].tolist() == [40000, 40001, 0]
    assert d.conns["flags"].tolist() == [0x0100, 0x0200, 0x1000]  # HASHED dropped
    assert d.conns["state"].tolist() == [3, 1, 0]
    assert d.conns["timeout"].tolist() == [0, 0, 0]  # v0 has none: the receiver uses its own
    assert d.conns["fwmark"].tolist() == [0, 0, 7]
    assert sync.decode(msg[:-4]).problems == {"bad_size": 1}
    short = struct.pack(">BBH", 2, 5, 28) + body[:24]
    assert sync.decode(short).problems == {"entry_overrun": 1}


def test_seq_data_option_carries_the_ftp_helpers_adjustment():
    """An entry with F_OUT_SEQ carries SEQ_DATA (ip_vs_sync_conn: in_seq, then out_seq),
    62 bytes padded to 64; a negative delta survives the u32 on the wire."""
    c = conn(vport=21, dport=21, flags=ctm.F_OUT_SEQ, seq_init=0xFFFFFFF0, seq_delta=-3, seq_prev=2)
    (msg,) = sync.encode_v1(4, np.concatenate([c, conn()]))
    entry = (entry_v4(0, 6, 62, 0x0200, 1, 40000, 21, 21, 0, 900, CADDR, VADDR, DADDR)
             + struct.pack(">BB6I", 1, 24, 0, 0, 0, 0xFFFFFFF0, 0xFFFFFFFD, 2) + b"\0\0")
    assert msg == header_v1(4, 8 + 64 + 36, 2) + entry + entry_v4(0, 6, 36, 0, 1, 40000, 80, 8080, 0, 900,
                                                                  CADDR, VADDR, DADDR)
    d = sync.decode(msg)
    assert d.problems == {}
    assert d.conns[["seq_init", "seq_delta", "seq_prev"]].tolist() == [(0xFFFFFFF0, -3, 2), (0, 0, 0)]
    # the option is read only when the flags say so, as the kernel's ip_vs_proc_conn does
    no_flag = msg[:8] + msg[8:12] + struct.pack(">I", 0) + msg[16:]
    assert sync.decode(no_flag).conns[["seq_init", "seq_delta", "seq_prev"]].tolist()[0] == (0, 0, 0)
    # many of them still split within the size
    msgs = sync.encode_v1(4, np.repeat(c, 50))
    assert all(len(m) <= sync.SYNC_MESG_MAX for m in msgs) and sum(m[4] for m in msgs) == 50
    assert [len(m) for m in msgs][0] == 8 + 22 * 64


def test_constants_say_where_they_come_from():
    assert sync.SYNC_MCAST_GROUP == "224.0.0.81" and sync.SYNC_PORT == 8848
    assert sync.SYNC_MESG_MAX == 1472
    assert cs.IP_VS_CONN_F_BACKUP_MASK == 0x1F87
