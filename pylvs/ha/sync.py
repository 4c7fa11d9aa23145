"""The IPVS connection synchronisation protocol on the wire: pure bytes <-> records.

Follows reference section 10 and the kernel's ``net/netfilter/ipvs/ip_vs_sync.c``
(``ip_vs_sync_conn``, ``ip_vs_process_message``, ``ip_vs_proc_sync_conn``,
``ip_vs_process_message_v0``).  No sockets, no clock: ``pylvs.ha.syncd`` sends and
receives; ``pylvs.dataplane.conntab`` makes and applies the records.

Records are ``SYNC_DTYPE`` rows (``connsync.SYNC_DTYPE``): addresses in host order and
pylvs state numbers (``conntab.STATE_NAMES``), so a UDP connection is ``S_UDP`` in a
record and 0 (``IP_VS_UDP_S_NORMAL``) on the wire.

Version 1 message (what ``encode_v1`` writes; all fields network order)::

    header (8):  u8 reserved 0 | u8 syncid | u16 size | u8 nr_conns | s8 version 1 | u16 spare 0
    IPv4 entry (36, at 4-byte offsets): u8 type 0 | u8 protocol | u16 ver_size (version 0
      in the high 4 bits, entry length incl. options in the low 12) | u32 flags | u16 state |
      u16 cport | u16 vport | u16 dport | u32 fwmark | u32 timeout (s) | caddr | vaddr | daddr
      then options: u8 type | u8 len | data (type bit 0x40: optional); an entry with
      F_OUT_SEQ / F_IN_SEQ carries SEQ_DATA (type 1, 24 bytes: in_seq then out_seq, each
      u32 init_seq | u32 delta | u32 previous_delta), the FTP helper's adjustment, and
      is padded to the next 4-byte offset

``decode`` never raises on bytes: it returns ``Decoded(syncid, conns, problems)`` where
``problems`` counts what it refused by name (PROBLEM_NAMES).  A *message* problem
rejects the whole message (no records); an *entry* problem skips that entry only.
The kernel applies the entries before a message fault and drops the rest; here the
message is refused whole (reference 10: "whole message rejected").
"""

from __future__ import annotations

import struct
from typing import NamedTuple

import numpy as np

from pylvs.dataplane.connsync import F_SEQ_MASK, IP_VS_CONN_F_BACKUP_MASK, SYNC_DTYPE
from pylvs.dataplane.conntab import F_TEMPLATE, IPPROTO_IP, IPPROTO_TCP, IPPROTO_UDP, S_UDP, TCP_STATE_NAMES

# --- Where the numbers come from -------------------------------------------------------
SYNC_MCAST_GROUP = "224.0.0.81"  # IP_VS_SYNC_GROUP (ip_vs_sync.c), reference 10
SYNC_PORT = 8848  # IP_VS_SYNC_PORT
SYNC_TTL = 1  # the kernel's default mcast_ttl: the sync segment only
# IPv4 (20) + UDP (8) headers out of a 1500-byte Ethernet MTU: the largest message that
# leaves without fragments (the kernel sizes its buffers from the interface MTU the same way).
SYNC_MESG_MAX = 1500 - 20 - 8
SYNC_PROTO_VER = 1  # SYNC_PROTO_VER
HEADER_V1 = struct.Struct(">BBHBbH")  # struct ip_vs_sync_mesg
HEADER_V0 = struct.Struct(">BBH")  # struct ip_vs_sync_mesg_v0
HEADER_V1_SIZE = HEADER_V1.size  # 8
HEADER_V0_SIZE = HEADER_V0.size  # 4
MAX_CONNS_PER_MESG = 255  # nr_conns is a u8
STYPE_INET6 = 0x01  # STYPE_F_INET6: the entry's addresses are IPv6
SVER_SHIFT = 12  # ver_size: version in the top 4 bits
SVER_MASK = 0x0FFF  # ... length in the low 12
ENTRY_V4_SIZE = 36  # sizeof(struct ip_vs_sync_v4)
ENTRY_V6_SIZE = 72  # sizeof(struct ip_vs_sync_v6)
ENTRY_V0_SIZE = 24  # SIMPLE_CONN_SIZE (struct ip_vs_sync_conn_v0)
SEQ_OPTIONS_SIZE = 24  # sizeof(struct ip_vs_sync_conn_options): in_seq, out_seq (3 x u32 each)
ALIGN = 4  # entries start at 4-byte offsets
OPT_F_PARAM = 0x40  # IPVS_OPT_F_PARAM: an option the receiver may skip when unknown
OPT_SEQ_DATA, OPT_PE_DATA, OPT_PE_NAME = 1, 2, 3  # IPVS_OPT_*
PE_DATA_MAXLEN = 255  # IP_VS_PEDATA_MAXLEN
PE_NAME_MAXLEN = 16  # IP_VS_PENAME_MAXLEN
N_TCP_STATES = len(TCP_STATE_NAMES)  # IP_VS_TCP_S_LAST
UDP_WIRE_STATE = 0  # IP_VS_UDP_S_NORMAL, the only UDP state (pylvs: S_UDP)
N_TEMPLATE_STATES = 2  # IP_VS_CTPL_S_LAST: a template state beyond it is read as NONE
F_HASHED = 0x0040  # IP_VS_CONN_F_HASHED: never meaningful on the wire

# The 36-byte IPv4 entry without options, as numpy sees it (big-endian fields).
WIRE_V4_DTYPE = np.dtype([
    ("type", "u1"), ("protocol", "u1"), ("ver_size", ">u2"), ("flags", ">u4"), ("state", ">u2"),
    ("cport", ">u2"), ("vport", ">u2"), ("dport", ">u2"), ("fwmark", ">u4"), ("timeout", ">u4"),
    ("caddr", ">u4"), ("vaddr", ">u4"), ("daddr", ">u4"),
])  # fmt: skip
assert WIRE_V4_DTYPE.itemsize == ENTRY_V4_SIZE
WIRE_V0_DTYPE = np.dtype([
    ("reserved", "u1"), ("protocol", "u1"), ("cport", ">u2"), ("vport", ">u2"), ("dport", ">u2"),
    ("caddr", ">u4"), ("vaddr", ">u4"), ("daddr", ">u4"), ("flags", ">u2"), ("state", ">u2"),
])  # fmt: skip
assert WIRE_V0_DTYPE.itemsize == ENTRY_V0_SIZE

# Problems decode counts.  Message problems reject the whole message:
MESSAGE_PROBLEMS = (
    "short_header",        # fewer bytes than a header
    "bad_size",            # the size field differs from the datagram length
    "entry_overrun",       # an entry (or its length field) runs past the message
    "entry_too_short",     # an entry's length is below its base size
    "bad_entry_version",   # ver_size has a version other than 0
    "bad_entry_type",      # type is neither IPv4 (0) nor has the IPv6 bit
    "option_zero_length",  # an option of length 0
    "option_overrun",      # an option runs past its entry
    "bad_option",          # SEQ_DATA not 24 bytes, PE_NAME too long, or an option given twice
)  # fmt: skip
# ... entry problems skip one entry:
ENTRY_PROBLEMS = (
    "ipv6",                      # an IPv6 entry (pylvs forwards IPv4 only)
    "unknown_mandatory_option",  # an option without 0x40 that we do not know
    "pe_unsupported",            # a persistence-engine entry (sip): no PE here
    "bad_proto",                 # a connection neither TCP nor UDP
    "bad_state",                 # a state number its protocol does not have
)  # fmt: skip
PROBLEM_NAMES = MESSAGE_PROBLEMS + ENTRY_PROBLEMS

SyncConn = SYNC_DTYPE  # the record type: one row per connection or template


class Decoded(NamedTuple):
    syncid: int  # -1 when the header could not be read
    conns: np.ndarray  # SYNC_DTYPE[n]
    problems: dict[str, int]  # PROBLEM_NAMES -> count; empty for a clean message


def conns_from(rows) -> np.ndarray:
    """A SYNC_DTYPE array from an array or an iterable of dicts (tests, callers)."""
    if isinstance(rows, np.ndarray) and rows.dtype == SYNC_DTYPE:
        return rows
    rows = list(rows)
    out = np.zeros(len(rows), dtype=SYNC_DTYPE)
    for i, r in enumerate(rows):
        for k, v in r.items():
            out[i][k] = v
    return out


def _wire_states(conns: np.ndarray) -> np.ndarray:
    udp = (conns["proto"] == IPPROTO_UDP) & ((conns["flags"] & F_TEMPLATE) == 0)
    return np.where(udp, UDP_WIRE_STATE, conns["state"])


SEQ_OPTION = struct.Struct(">BB6I")  # type, length, in_seq (3 x u32), out_seq (3 x u32)
ENTRY_V4_SEQ_SIZE = ENTRY_V4_SIZE + SEQ_OPTION.size  # 62, padded to 64 in a message


def encode_v1(syncid: int, conns, max_size: int = SYNC_MESG_MAX) -> list[bytes]:
    """Version 1 messages carrying ``conns`` (SYNC_DTYPE), each at most ``max_size``
    bytes and 255 entries; an entry with sequence data (F_SEQ_MASK: the FTP helper)
    carries the SEQ_DATA option, none other (pylvs keeps no PE data)."""
    if not 0 <= syncid <= 255:
        raise ValueError(f"syncid must be 0..255, got {syncid}")
    seq_size = (ENTRY_V4_SEQ_SIZE + ALIGN - 1) & ~(ALIGN - 1)
    conns = conns_from(conns)
    w = np.zeros(conns.shape[0], dtype=WIRE_V4_DTYPE)
    w["protocol"] = conns["proto"]
    flags = conns["flags"] & IP_VS_CONN_F_BACKUP_MASK
    seq = (flags & F_SEQ_MASK) != 0
    w["ver_size"] = np.where(seq, ENTRY_V4_SEQ_SIZE, ENTRY_V4_SIZE)  # version 0 in the top bits
    w["flags"] = flags
    w["state"] = _wire_states(conns)
    for name in ("cport", "vport", "dport", "fwmark", "timeout", "caddr", "vaddr", "daddr"):
        w[name] = conns[name]
    if not seq.any():  # the common message: fixed 36-byte entries, cut in whole chunks
        per = min(MAX_CONNS_PER_MESG, (max_size - HEADER_V1_SIZE) // ENTRY_V4_SIZE)
        if per < 1:
            raise ValueError(f"max_size {max_size} cannot hold one entry ({HEADER_V1_SIZE + ENTRY_V4_SIZE} bytes)")
        return [HEADER_V1.pack(0, syncid, HEADER_V1_SIZE + w[i:i + per].nbytes, w[i:i + per].shape[0],
                               SYNC_PROTO_VER, 0) + w[i:i + per].tobytes() for i in range(0, w.shape[0], per)]
    out: list[bytes] = []
    parts: list[bytes] = []
    size = HEADER_V1_SIZE
    for i in range(w.shape[0]):
        entry = w[i].tobytes()
        if seq[i]:  # only out_seq is ever kept (ip_vs_ftp rewrites the server's side only)
            c = conns[i]
            entry += SEQ_OPTION.pack(OPT_SEQ_DATA, SEQ_OPTIONS_SIZE, 0, 0, 0, int(c["seq_init"]),
                                     int(c["seq_delta"]) & 0xFFFFFFFF, int(c["seq_prev"]) & 0xFFFFFFFF)
            entry += b"\0" * (seq_size - len(entry))
        if HEADER_V1_SIZE + len(entry) > max_size:
            raise ValueError(f"max_size {max_size} cannot hold one entry ({HEADER_V1_SIZE + len(entry)} bytes)")
        if parts and (size + len(entry) > max_size or len(parts) == MAX_CONNS_PER_MESG):
            out.append(HEADER_V1.pack(0, syncid, size, len(parts), SYNC_PROTO_VER, 0) + b"".join(parts))
            parts, size = [], HEADER_V1_SIZE
        parts.append(entry)
        size += len(entry)
    if parts:
        out.append(HEADER_V1.pack(0, syncid, size, len(parts), SYNC_PROTO_VER, 0) + b"".join(parts))
    return out


def _reject(syncid: int, name: str) -> Decoded:
    return Decoded(syncid, np.zeros(0, dtype=SYNC_DTYPE), {name: 1})


def _record_state(proto: int, flags: int, state: int) -> int | str:
    """The pylvs state of a received entry, or the entry problem that skips it."""
    if flags & F_TEMPLATE:
        return state if state < N_TEMPLATE_STATES else 0  # ip_vs_proc_sync_conn: read as NONE
    if proto == IPPROTO_TCP:
        return state if state < N_TCP_STATES else "bad_state"
    if proto == IPPROTO_UDP:
        return S_UDP if state == UDP_WIRE_STATE else "bad_state"
    return "bad_proto"


def decode(data: bytes) -> Decoded:
    """Read one sync message (version 1, or version 0 when the header is not a v1 one,
    as ip_vs_process_message decides).  Never raises on the bytes."""
    data = bytes(data)
    if len(data) < HEADER_V0_SIZE:
        return _reject(-1, "short_header")
    first, syncid, size = HEADER_V0.unpack_from(data)
    if size != len(data):
        return _reject(syncid, "bad_size")
    if len(data) >= HEADER_V1_SIZE:
        reserved, _, _, nr, version, spare = HEADER_V1.unpack_from(data)
        if version == SYNC_PROTO_VER and reserved == 0 and spare == 0:
            return _decode_v1(data, syncid, nr)
    return _decode_v0(data, syncid, first)


def _fast_v1(data: bytes, syncid: int, nr: int) -> Decoded | None:
    """The common message: nr plain 36-byte IPv4 entries, read in one go."""
    if len(data) != HEADER_V1_SIZE + nr * ENTRY_V4_SIZE:
        return None
    w = np.frombuffer(data, dtype=WIRE_V4_DTYPE, count=nr, offset=HEADER_V1_SIZE)
    if (w["type"] != 0).any() or (w["ver_size"] != ENTRY_V4_SIZE).any():
        return None
    flags = w["flags"].astype(np.uint32) & IP_VS_CONN_F_BACKUP_MASK
    proto = w["protocol"]
    state = w["state"].astype(np.int64)
    tpl = (flags & F_TEMPLATE) != 0
    tcp_ok = (proto == IPPROTO_TCP) & (state < N_TCP_STATES)
    udp_ok = (proto == IPPROTO_UDP) & (state == UDP_WIRE_STATE)
    if not (tpl | tcp_ok | udp_ok).all():
        return None  # something to count: the careful path does it
    out = np.zeros(nr, dtype=SYNC_DTYPE)
    for name in ("cport", "vport", "dport", "fwmark", "timeout", "caddr", "vaddr", "daddr"):
        out[name] = w[name]
    out["proto"] = proto
    out["flags"] = flags
    out["state"] = np.where(tpl, np.where(state < N_TEMPLATE_STATES, state, 0), np.where(udp_ok, S_UDP, state))
    return Decoded(syncid, out, {})


def _decode_v1(data: bytes, syncid: int, nr: int) -> Decoded:
    fast = _fast_v1(data, syncid, nr)
    if fast is not None:
        return fast
    end_all = len(data)
    rows: list[tuple] = []
    problems: dict[str, int] = {}
    p = HEADER_V1_SIZE
    for _ in range(nr):
        if p + ENTRY_V4_SIZE > end_all:
            return _reject(syncid, "entry_overrun")
        typ, proto, ver_size = struct.unpack_from(">BBH", data, p)
        length = ver_size & SVER_MASK
        end = p + length
        if end > end_all:
            return _reject(syncid, "entry_overrun")
        if ver_size >> SVER_SHIFT:
            return _reject(syncid, "bad_entry_version")
        if typ & STYPE_INET6:
            base = ENTRY_V6_SIZE
        elif typ == 0:
            base = ENTRY_V4_SIZE
        else:
            return _reject(syncid, "bad_entry_type")
        if p + base > end:
            return _reject(syncid, "entry_too_short")
        skip, seq = _options(data, p + base, end)
        if skip in MESSAGE_PROBLEMS:
            return _reject(syncid, skip)
        if skip is None and base == ENTRY_V6_SIZE:
            skip = "ipv6"
        if skip is None:
            w = np.frombuffer(data, dtype=WIRE_V4_DTYPE, count=1, offset=p)[0]
            flags = int(w["flags"]) & IP_VS_CONN_F_BACKUP_MASK
            state = _record_state(proto, flags, int(w["state"]))
            if isinstance(state, str):
                skip = state
            else:
                rows.append((int(w["caddr"]), int(w["vaddr"]), int(w["daddr"]), int(w["fwmark"]),
                             int(w["timeout"]), flags, int(w["cport"]), int(w["vport"]), int(w["dport"]),
                             state, proto, *_out_seq(seq, flags)))  # fmt: skip
        if skip is not None:
            problems[skip] = problems.get(skip, 0) + 1
        p += (length + ALIGN - 1) & ~(ALIGN - 1)
    return Decoded(syncid, _rows(rows), problems)


def _options(data: bytes, q: int, end: int) -> tuple[str | None, bytes | None]:
    """Check an entry's options (ip_vs_proc_sync_conn): (None when the entry is usable,
    else a message or entry problem; the SEQ_DATA option's 24 bytes or None)."""
    seen: set[int] = set()
    skip = None
    seq = None
    while q < end:
        if q + 2 > end:
            return "option_overrun", None
        ptype, plen = data[q], data[q + 1]
        q += 2
        if plen == 0:
            return "option_zero_length", None
        if q + plen > end:
            return "option_overrun", None
        kind = ptype & ~OPT_F_PARAM
        if kind in (OPT_SEQ_DATA, OPT_PE_DATA, OPT_PE_NAME):
            if kind in seen:
                return "bad_option", None
            seen.add(kind)
            if kind == OPT_SEQ_DATA and plen != SEQ_OPTIONS_SIZE:
                return "bad_option", None
            if kind == OPT_PE_NAME and plen > PE_NAME_MAXLEN:
                return "bad_option", None
            if kind == OPT_SEQ_DATA:
                seq = data[q:q + plen]
            # PE_DATA: a u8 length cannot exceed PE_DATA_MAXLEN.
        elif not ptype & OPT_F_PARAM:
            return "unknown_mandatory_option", None  # the kernel stops reading this entry here
        q += plen
    if OPT_PE_NAME in seen:
        skip = "pe_unsupported"  # ip_vs_conn_fill_param_sync finds no such PE here
    return skip, seq


def _out_seq(seq: bytes | None, flags: int) -> tuple[int, int, int]:
    """out_seq (init, delta, previous delta) of a SEQ_DATA option's 24 bytes (in_seq
    first): the delta fields as signed.  Zeros without the option or without the flag
    (the kernel reads the option only when the flags say so)."""
    if seq is None or not flags & F_SEQ_MASK:
        return 0, 0, 0
    init, delta, prev = struct.unpack_from(">3I", seq, 12)
    return init, _signed(delta), _signed(prev)


def _signed(v: int) -> int:
    return v - (1 << 32) if v & 0x80000000 else v


def _rows(rows: list[tuple]) -> np.ndarray:
    """Tuples in SYNC_DTYPE field order -> records."""
    return np.array(rows, dtype=SYNC_DTYPE) if rows else np.zeros(0, dtype=SYNC_DTYPE)


def _decode_v0(data: bytes, syncid: int, nr: int) -> Decoded:
    """ip_vs_process_message_v0: 24-byte entries (+24 of sequence data when the flags
    say so); no timeout (the receiver uses the state's) and no fwmark."""
    rows: list[tuple] = []
    problems: dict[str, int] = {}
    p = HEADER_V0_SIZE
    for _ in range(nr):
        if p + ENTRY_V0_SIZE > len(data):
            return _reject(syncid, "entry_overrun")
        w = np.frombuffer(data, dtype=WIRE_V0_DTYPE, count=1, offset=p)[0]
        raw_flags = int(w["flags"])
        seq = data[p + ENTRY_V0_SIZE:p + ENTRY_V0_SIZE + SEQ_OPTIONS_SIZE] if raw_flags & F_SEQ_MASK else None
        p += ENTRY_V0_SIZE + (SEQ_OPTIONS_SIZE if raw_flags & F_SEQ_MASK else 0)
        if p > len(data):
            return _reject(syncid, "entry_overrun")
        flags = raw_flags & ~F_HASHED & IP_VS_CONN_F_BACKUP_MASK
        proto = int(w["protocol"])
        state = _record_state(proto, flags, int(w["state"]))
        if isinstance(state, str):
            problems[state] = problems.get(state, 0) + 1
            continue
        rows.append((int(w["caddr"]), int(w["vaddr"]), int(w["daddr"]),
                     int(w["vaddr"]) if proto == IPPROTO_IP and flags & F_TEMPLATE else 0, 0, flags,
                     int(w["cport"]), int(w["vport"]), int(w["dport"]), state, proto,
                     *_out_seq(seq, flags)))  # fmt: skip
    return Decoded(syncid, _rows(rows), problems)
