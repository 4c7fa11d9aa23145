"""The FTP helper of NAT port-21 services: the kernel's ``ip_vs_ftp`` (reference 8).

An FTP client names addresses inside the control connection: the server's ``227``
reply to ``PASV`` carries the address and port to connect to, the client's ``PORT``
and ``EPRT`` the address the server must connect back to.  Through a NAT director the
``227`` names the real server's private address, and the data connections are new
connections of their own.  For a connection to a NAT service on port 21 (not a
firewall-mark one) the helper, on the control connection once it is ESTABLISHED:

* client -> server ``PASV`` / ``EPSV``: remembers that a passive reply is due (``app``);
* server -> client ``227 ... (h1,h2,h3,h4,p1,p2)`` naming the real server: creates the
  data connection's entry (client:any -> VIP:port -> RIP:port, ``F_NO_CPORT``: the
  client's port is filled in by its first packet), and rewrites the address to the VIP.
  The reply's length may change (``10.0.0.2`` -> ``192.0.2.10``): every later packet of
  the control connection has its sequence number (server -> client) or acknowledgement
  (client -> server) moved by the difference, as ``ip_vs_app.c`` does (``vs_fix_seq``,
  ``vs_fix_ack_seq``, ``vs_seq_update``; the entry's ``seq_*`` fields, synced as the
  SEQ_DATA option);
* server -> client ``229 ... (|||port|)``: the data entry only (no address to rewrite);
* client -> server ``PORT h1,h2,h3,h4,p1,p2`` / ``EPRT |1|a.b.c.d|port|`` naming the
  client itself: creates the entry of the active data connection the server will open
  (client:port <- VIP:20 <- RIP:20, the control's ports minus one), so its packets are
  translated to come from the VIP.  Nothing is rewritten on this side.

Data entries are controlled by the control connection (``control``/``n_control``, as a
template controls persistent connections: the control connection outlives them), start
in LISTEN and are counted on the real server like any connection.

What is read: a command or reply at the *start* of a segment, whole (its line ends in
the same segment) and at most ``MAX_LINE`` bytes, as the kernel reads only the segment
start; a line split over two segments is left alone (never half rewritten).  Commands
are matched case-insensitively, replies by their code.  A ``227`` naming any address
but the connection's real server (a server configured with ``pasv_address`` = VIP, as
the guide's firewall-mark recipe does) is left as it is and creates nothing: the kernel
would file a data entry towards the named address.  ``PORT`` / ``EPRT`` naming another
host than the client are ignored (an FTP bounce gets no entry through the director).
IPv6 forms (``EPRT |2|...``) are ignored: pylvs forwards IPv4.

All of it is numba code called by the engine (both entry points); ``parse_command`` and
``parse_reply`` are the Python faces of the parsers, fuzzed against the plain-Python twin
in tests/naive.py.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from pylvs.dataplane.conntab import IPPROTO_TCP
from pylvs.dataplane.tables import FTP_CONTROL_PORT

MAX_LINE = 512  # the longest command or reply line read (the kernel reads within one segment)
IP_MAX_TOTAL = 65535  # an IPv4 total length is 16 bits: a longer 227 would not fit a full packet

# What a line is (parse_command / parse_reply).
K_NONE, K_PASV, K_EPSV, K_PORT, K_EPRT, K_227, K_229 = range(7)
KIND_NAMES = ("none", "PASV", "EPSV", "PORT", "EPRT", "227", "229")
# entry.app: the passive reply the client asked for last (ip_vs_ftp's cp->app_data).
APP_ACTIVE, APP_PASV, APP_EPSV = 0, 1, 2

_CR, _LF, _SP, _COMMA, _DOT, _LPAREN = 13, 10, 32, 44, 46, 40
_MASK32 = 0xFFFFFFFF


@njit(cache=True, error_model="numpy", _nrt=False, inline="always")
def binds(proto, svc_fwmark, svc_vport, vport):
    """ip_vs_bind_app for a NAT connection: the helper reads a TCP connection to port 21
    of a service on port 21 (ip_vs_ftp's default ports[]); not a firewall-mark one.  The
    engine asks it for a new connection, connection sync for an entry it creates."""
    return (proto == IPPROTO_TCP and svc_fwmark == 0 and svc_vport == FTP_CONTROL_PORT
            and vport == FTP_CONTROL_PORT)


# --- parsing -----------------------------------------------------------------------------


@njit(cache=True, error_model="numpy", _nrt=False, inline="always")
def _upper(c):
    return c - 32 if 97 <= c <= 122 else c


@njit(cache=True, error_model="numpy", _nrt=False)
def _starts(row, p, end, w0, w1, w2, w3):
    """The 4 bytes at p are the (upper-case) word w0..w3, case-insensitively."""
    return (p + 4 <= end and _upper(np.int64(row[p])) == w0 and _upper(np.int64(row[p + 1])) == w1
            and _upper(np.int64(row[p + 2])) == w2 and _upper(np.int64(row[p + 3])) == w3)


@njit(cache=True, error_model="numpy", _nrt=False)
def _line_end(row, p, end):
    """The index of the LF ending the line at p, or -1 when it is not in the segment or
    the line is longer than MAX_LINE."""
    stop = min(end, p + MAX_LINE)
    for i in range(p, stop):
        if row[i] == _LF:
            return i
    return np.int64(-1)


@njit(cache=True, error_model="numpy", _nrt=False)
def _number(row, p, end, most, digits):
    """A decimal number of 1..digits digits at p, at most `most`: (value, next), or
    (-1, p) when there is none."""
    v = np.int64(0)
    i = p
    while i < end and i - p < digits and 48 <= row[i] <= 57:
        v = v * 10 + np.int64(row[i]) - 48
        i += 1
    if i == p or (i < end and 48 <= row[i] <= 57) or v > most:
        return np.int64(-1), p
    return v, i


@njit(cache=True, error_model="numpy", _nrt=False)
def _six(row, p, end):
    """h1,h2,h3,h4,p1,p2 at p (each 0..255): (address, port, next) or (-1, 0, p)."""
    addr = np.int64(0)
    port = np.int64(0)
    i = p
    for k in range(6):
        if k > 0:
            if i >= end or row[i] != _COMMA:
                return np.int64(-1), np.int64(0), p
            i += 1
        v, i2 = _number(row, i, end, 255, 3)
        if v < 0:
            return np.int64(-1), np.int64(0), p
        i = i2
        if k < 4:
            addr = (addr << 8) | v
        else:
            port = (port << 8) | v
    return addr, port, i


@njit(cache=True, error_model="numpy", _nrt=False)
def _dotted(row, p, end):
    """a.b.c.d at p: (address, next) or (-1, p)."""
    addr = np.int64(0)
    i = p
    for k in range(4):
        if k > 0:
            if i >= end or row[i] != _DOT:
                return np.int64(-1), p
            i += 1
        v, i2 = _number(row, i, end, 255, 3)
        if v < 0:
            return np.int64(-1), p
        i = i2
        addr = (addr << 8) | v
    return addr, i


@njit(cache=True, error_model="numpy", _nrt=False, inline="always")
def _delimiter(d):
    """RFC 2428's delimiter: a printable character (33..126); pylvs also refuses digits
    and '.', which would make the fields ambiguous (everyone sends '|')."""
    return 33 <= d <= 126 and not (48 <= d <= 57) and d != _DOT


@njit(cache=True, error_model="numpy", _nrt=False)
def _command(row, p, end):
    """The client's command at the start of a segment's payload [p, end):
    (kind, address, port); address and port only for PORT and EPRT."""
    nl = _line_end(row, p, end)
    if nl < 0:
        return K_NONE, np.int64(0), np.int64(0)
    eol = nl - 1 if nl > p and row[nl - 1] == _CR else nl  # the line without its CR LF
    if _starts(row, p, eol, 80, 65, 83, 86) and eol == p + 4:  # PASV
        return K_PASV, np.int64(0), np.int64(0)
    if _starts(row, p, eol, 69, 80, 83, 86) and (eol == p + 4 or row[p + 4] == _SP):  # EPSV [ALL|n]
        return K_EPSV, np.int64(0), np.int64(0)
    if p + 5 <= eol and row[p + 4] == _SP and _starts(row, p, eol, 80, 79, 82, 84):  # PORT
        addr, port, i = _six(row, p + 5, eol)
        if addr >= 0 and i == eol and port > 0:
            return K_PORT, addr, port
        return K_NONE, np.int64(0), np.int64(0)
    if p + 5 <= eol and row[p + 4] == _SP and _starts(row, p, eol, 69, 80, 82, 84):  # EPRT
        # RFC 2428: <d><net-prt><d><net-addr><d><tcp-port><d>, d any of 33..126
        i = p + 5
        if i + 3 > eol:
            return K_NONE, np.int64(0), np.int64(0)
        d = row[i]
        if not _delimiter(d) or row[i + 1] != 49 or row[i + 2] != d:  # net-prt 1: IPv4 only
            return K_NONE, np.int64(0), np.int64(0)
        addr, i = _dotted(row, i + 3, eol)
        if addr < 0 or i >= eol or row[i] != d:
            return K_NONE, np.int64(0), np.int64(0)
        port, i = _number(row, i + 1, eol, 65535, 5)
        if port <= 0 or i >= eol or row[i] != d or i + 1 != eol:
            return K_NONE, np.int64(0), np.int64(0)
        return K_EPRT, addr, port
    return K_NONE, np.int64(0), np.int64(0)


@njit(cache=True, error_model="numpy", _nrt=False)
def _reply(row, p, end):
    """The server's reply at the start of a segment's payload [p, end):
    (kind, address, port, start, stop); for a 227 [start, stop) is the text
    h1,...,p2 (the address to rewrite), for a 229 the port's digits."""
    nl = _line_end(row, p, end)
    if nl < 0 or p + 4 > nl or row[p + 3] != _SP or row[p] != 50 or row[p + 1] != 50:
        return K_NONE, np.int64(0), np.int64(0), np.int64(0), np.int64(0)
    if row[p + 2] == 55:  # 227: the six numbers follow, usually in parentheses
        i = p + 4
        while i < nl and not (48 <= row[i] <= 57):
            i += 1
        addr, port, j = _six(row, i, nl)
        if addr >= 0 and port > 0:
            return K_227, addr, port, np.int64(i), np.int64(j)
    elif row[p + 2] == 57:  # 229: (<d><d><d><port><d>)
        i = p + 4
        while i < nl and row[i] != _LPAREN:
            i += 1
        if i + 5 <= nl:
            d = row[i + 1]
            if _delimiter(d) and row[i + 2] == d and row[i + 3] == d:
                port, j = _number(row, i + 4, nl, 65535, 5)
                if port > 0 and j < nl and row[j] == d:
                    return K_229, np.int64(0), port, np.int64(i + 4), np.int64(j)
    return K_NONE, np.int64(0), np.int64(0), np.int64(0), np.int64(0)


def parse_command(data: bytes) -> tuple[str, int, int]:
    """The Python face of the command parser: (kind name, address, port)."""
    row = np.frombuffer(bytes(data), dtype=np.uint8)
    kind, addr, port = _command(row, 0, row.shape[0])
    return KIND_NAMES[kind], int(addr), int(port)


def parse_reply(data: bytes) -> tuple[str, int, int, int, int]:
    """The Python face of the reply parser: (kind name, address, port, start, stop)."""
    row = np.frombuffer(bytes(data), dtype=np.uint8)
    kind, addr, port, start, stop = _reply(row, 0, row.shape[0])
    return KIND_NAMES[kind], int(addr), int(port), int(start), int(stop)


# --- sequence numbers (ip_vs_app.c) -------------------------------------------------------


@njit(cache=True, error_model="numpy", _nrt=False, inline="always")
def _after(a, b):
    """TCP's after(a, b): a is later than b, modulo 2**32."""
    d = (a - b) & _MASK32
    return d != 0 and d < 0x80000000


@njit(cache=True, error_model="numpy", _nrt=False, inline="always")
def _load32(row, p):
    return (np.int64(row[p]) << 24) | (np.int64(row[p + 1]) << 16) | (np.int64(row[p + 2]) << 8) | np.int64(row[p + 3])


@njit(cache=True, error_model="numpy", _nrt=False, inline="always")
def _store32(row, p, v):
    row[p] = (v >> 24) & 0xFF
    row[p + 1] = (v >> 16) & 0xFF
    row[p + 2] = (v >> 8) & 0xFF
    row[p + 3] = v & 0xFF


@njit(cache=True, error_model="numpy", _nrt=False)
def fix_seq(row, tcp, init, delta, prev):
    """vs_fix_seq: a server -> client segment's sequence number moved past the rewrite."""
    if delta == 0 and prev == 0:
        return
    seq = _load32(row, tcp + 4)
    seq = seq + (delta if _after(seq, init) else prev)
    _store32(row, tcp + 4, seq & _MASK32)


@njit(cache=True, error_model="numpy", _nrt=False)
def fix_ack(row, tcp, init, delta, prev):
    """vs_fix_ack_seq: a client -> server acknowledgement taken back to the server's numbers."""
    if delta == 0 and prev == 0:
        return
    ack = _load32(row, tcp + 8)
    ack = ack - (delta if _after(ack, (init + delta) & _MASK32) else prev)
    _store32(row, tcp + 8, ack & _MASK32)


# --- the rewrite of a 227 reply -----------------------------------------------------------


@njit(cache=True, error_model="numpy", _nrt=False, inline="always")
def _digits(v):
    return np.int64(3) if v >= 100 else (np.int64(2) if v >= 10 else np.int64(1))


@njit(cache=True, error_model="numpy", _nrt=False)
def _put(row, p, v):
    """Write v (0..255) in decimal at p; returns the next index."""
    n = _digits(v)
    for k in range(n):
        row[p + n - 1 - k] = 48 + v % 10
        v //= 10
    return p + n


@njit(cache=True, error_model="numpy", _nrt=False)
def rewrite_227(row, ip, pkt_end, start, stop, addr, port):
    """Replace the text [start, stop) of a 227 reply with addr's and port's six numbers,
    moving the rest of the packet; fixes the IP total length (checksums: the NAT op's
    full recompute).  Returns (done, length difference); not done when the row has no
    room for a longer reply or the packet would pass 65535 bytes (nothing is changed)."""
    nums = ((addr >> 24) & 0xFF, (addr >> 16) & 0xFF, (addr >> 8) & 0xFF, addr & 0xFF,
            (port >> 8) & 0xFF, port & 0xFF)  # fmt: skip
    new_len = np.int64(5)  # the commas
    for v in nums:
        new_len += _digits(v)
    diff = new_len - (stop - start)
    total = ((np.int64(row[ip + 2]) << 8) | np.int64(row[ip + 3])) + diff
    if pkt_end + diff > row.shape[0] or total > IP_MAX_TOTAL:
        return False, np.int64(0)
    if diff > 0:  # move the tail right, from its end
        for k in range(pkt_end - 1, stop - 1, -1):
            row[k + diff] = row[k]
    elif diff < 0:
        for k in range(stop, pkt_end):
            row[k + diff] = row[k]
    p = start
    for j in range(6):
        if j > 0:
            row[p] = _COMMA
            p += 1
        p = _put(row, p, nums[j])
    row[ip + 2] = (total >> 8) & 0xFF
    row[ip + 3] = total & 0xFF
    return True, diff
