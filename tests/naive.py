"""Plain-Python twins of the numba kernels: the IPVS schedulers, the connection table,
connection sync's due rule and, at the end, the FTP helper's parsers.  The schedulers
are written straight from the reference (spec/lvs-reference.md section 6 and the kernel's ip_vs_*.c): objects, a Python
list in kernel list order, linear scans, no numpy, no cleverness.

A service is a ``Service(name, **options)``; dests are ``Dest`` objects added at
the list head.  ``svc.schedule(caddr, cport, daddr, dport, now)`` returns a Dest or
None.  Dests carry ``row`` so tests can compare with the array kernels.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import gcd

from pylvs.dataplane import conntab as ct

F_OVERLOAD_RULE = "ip_vs_conn.c"

# ------------------------------------------------------------------ hashes


def hash_32(v: int, bits: int) -> int:
    """include/linux/hash.h hash_32 with GOLDEN_RATIO_32."""
    return ((v & 0xFFFFFFFF) * 0x61C88647 & 0xFFFFFFFF) >> (32 - bits)


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & 0xFFFFFFFFFFFFFFFF


def siphash(msg: bytes, k0: int, k1: int, c: int = 2, d: int = 4) -> int:
    """Generic SipHash-c-d (Aumasson & Bernstein), 64-bit result."""
    M = 0xFFFFFFFFFFFFFFFF
    v = [0x736F6D6570736575 ^ k0, 0x646F72616E646F6D ^ k1, 0x6C7967656E657261 ^ k0, 0x7465646279746573 ^ k1]

    def rnd():
        v[0] = (v[0] + v[1]) & M; v[1] = _rotl(v[1], 13); v[1] ^= v[0]; v[0] = _rotl(v[0], 32)
        v[2] = (v[2] + v[3]) & M; v[3] = _rotl(v[3], 16); v[3] ^= v[2]
        v[0] = (v[0] + v[3]) & M; v[3] = _rotl(v[3], 21); v[3] ^= v[0]
        v[2] = (v[2] + v[1]) & M; v[1] = _rotl(v[1], 17); v[1] ^= v[2]; v[2] = _rotl(v[2], 32)

    full = len(msg) - len(msg) % 8
    for i in range(0, full, 8):
        m = int.from_bytes(msg[i:i + 8], "little")
        v[3] ^= m
        for _ in range(c):
            rnd()
        v[0] ^= m
    b = ((len(msg) & 0xFF) << 56) | int.from_bytes(msg[full:], "little")
    v[3] ^= b
    for _ in range(c):
        rnd()
    v[0] ^= b
    v[2] ^= 0xFF
    for _ in range(d):
        rnd()
    return v[0] ^ v[1] ^ v[2] ^ v[3]


def hsiphash_u32(value: int, key: int) -> int:
    """64-bit kernel hsiphash(&value, 4, {key, key}): SipHash-1-3, low 32 bits."""
    return siphash((value & 0xFFFFFFFF).to_bytes(4, "little"), key, key, 1, 3) & 0xFFFFFFFF


# ------------------------------------------------------------------ dests


class Dest:
    def __init__(self, row: int, weight: int, addr: int = 0, port: int = 0, u: int = 0, l: int = 0):
        self.row = row
        self.weight = weight
        self.last_weight = weight
        self.addr = addr
        self.port = port
        self.u_threshold = u
        self.l_threshold = l
        self.activeconns = 0
        self.inactconns = 0
        self.available = True
        self.overload = False

    def overhead(self) -> int:
        return self.activeconns * 256 + self.inactconns

    def __repr__(self) -> str:
        return f"Dest(row={self.row}, w={self.weight}, a={self.activeconns}, i={self.inactconns}, ovl={self.overload})"


def bind(d: Dest) -> None:
    """New connection: counted inactive; OVERLOAD at total >= upper threshold."""
    d.inactconns += 1
    if d.u_threshold and d.activeconns + d.inactconns >= d.u_threshold:
        d.overload = True


def unbind(d: Dest, active: bool) -> None:
    if active:
        d.activeconns -= 1
    else:
        d.inactconns -= 1
    total = d.activeconns + d.inactconns
    if d.l_threshold:
        if total < d.l_threshold:
            d.overload = False
    elif d.u_threshold:
        if total * 4 < d.u_threshold * 3:
            d.overload = False
    else:
        d.overload = False


def set_active(d: Dest, active: bool) -> None:
    if active:
        d.inactconns -= 1
        d.activeconns += 1
    else:
        d.activeconns -= 1
        d.inactconns += 1


def usable(d: Dest) -> bool:
    return d.available and d.weight > 0 and not d.overload


# ------------------------------------------------------------------ service


class Service:
    def __init__(self, name: str, initial: list[Dest] | None = None, **options):
        self.name = name
        self.options = options
        # kernel list order, head first; `initial` is present when the service
        # is created (ip_vs_*_init_svc sees all of them at once)
        self.dests: list[Dest] = list(initial or [])
        self.algo = TWINS[name](self, **options)

    def add(self, d: Dest) -> None:
        self.dests.insert(0, d)  # list_add: at the head
        self.algo.changed("add", d)

    def remove(self, d: Dest) -> None:
        self.algo.before_remove(d)
        self.dests.remove(d)
        d.available = False
        self.algo.changed("del", d)

    def edit(self, d: Dest, weight=None, u=None, l=None) -> None:
        if weight is not None:
            if weight != 0:
                d.last_weight = weight
            d.weight = weight
        new_u = d.u_threshold if u is None else u
        if new_u == 0 or new_u > d.u_threshold:
            d.overload = False
        d.u_threshold = new_u
        if l is not None:
            d.l_threshold = l
        self.algo.changed("edit", d)

    def schedule(self, caddr=0, cport=0, daddr=0, dport=0, now=0):
        return self.algo.schedule(caddr, cport, daddr, dport, now)

    def gc(self, now: int) -> None:
        self.algo.gc(now)


class _Algo:
    def __init__(self, svc: Service):
        self.svc = svc

    def changed(self, what, d):
        pass

    def before_remove(self, d):
        pass

    def gc(self, now):
        raise ValueError("no cache")


class RR(_Algo):
    """Cursor on a dest (None = head); scan after it, wrapping once."""

    def __init__(self, svc):
        super().__init__(svc)
        self.cursor = None

    def before_remove(self, d):
        if self.cursor is d:  # ip_vs_rr_del_dest: step back to the previous entry
            i = self.svc.dests.index(d)
            self.cursor = self.svc.dests[i - 1] if i > 0 else None

    def schedule(self, *key):
        L = self.svc.dests
        start = 0 if self.cursor is None else L.index(self.cursor) + 1
        for k in range(len(L)):
            d = L[(start + k) % len(L)]
            if usable(d):
                self.cursor = d
                return d
        return None


class WRR(_Algo):
    """ip_vs_wrr.c, transcribed onto a Python list (cl = index, -1 = head)."""

    def __init__(self, svc):
        super().__init__(svc)
        self.cw = 0
        self.changed(None, None)

    def changed(self, what, d):
        ws = [x.weight for x in self.svc.dests]
        g = 0
        for w in ws:
            if w > 0:
                g = gcd(g, w)
        self.di = g or 1
        self.mw = max(ws, default=0) - (self.di - 1)
        self.cl = -1
        if self.cw > self.mw or self.cw == 0:
            self.cw = self.mw
        elif self.di > 1:
            self.cw = (self.cw // self.di) * self.di + 1

    def schedule(self, *key):
        L = self.svc.dests
        if self.mw == 0:
            return None
        last = self.cl
        pos = self.cl
        stop = None
        last_pass = restarted = False
        while True:
            for i in range(pos + 1, len(L)):
                if not L[i].overload and L[i].weight >= self.cw:
                    self.cl = i
                    return L[i]
                if i == stop:
                    self.cl = i
                    return None
            pos = -1
            self.cw -= self.di
            if self.cw <= 0:
                self.cw = self.mw
                if last_pass or last == -1:
                    self.cl = -1
                    return None
                restarted = True
            last_pass = self.cw <= self.di
            if last_pass and restarted and last != -1:
                stop = last


def _scan_least(dests, better):
    """First eligible dest, then later ones replace it only when strictly better."""
    least = None
    for d in dests:
        if not usable(d):
            continue
        if least is None or better(d, least):
            least = d
    return least


class LC(_Algo):
    def schedule(self, *key):
        return _scan_least(self.svc.dests, lambda d, b: d.overhead() < b.overhead())


class WLC(_Algo):
    def schedule(self, *key):
        return _scan_least(self.svc.dests, lambda d, b: b.overhead() * d.weight > d.overhead() * b.weight)


def _sed_better(d, b):
    return (b.activeconns + 1) * d.weight > (d.activeconns + 1) * b.weight


class SED(_Algo):
    def schedule(self, *key):
        return _scan_least(self.svc.dests, _sed_better)


class NQ(_Algo):
    def schedule(self, *key):
        least = None
        for d in self.svc.dests:
            if not usable(d):
                continue
            if d.activeconns == 0:
                return d
            if least is None or _sed_better(d, least):
                least = d
        return least


class FO(_Algo):
    def schedule(self, *key):
        best = None
        for d in self.svc.dests:
            if usable(d) and (best is None or d.weight > best.weight):
                best = d
        return best


class OVF(_Algo):
    def schedule(self, *key):
        best = None
        for d in self.svc.dests:
            if usable(d) and d.activeconns <= d.weight and (best is None or d.weight > best.weight):
                best = d
        return best


class DH(_Algo):
    SIZE = 256

    def __init__(self, svc):
        super().__init__(svc)
        self.changed(None, None)

    def changed(self, what, d):
        L = self.svc.dests
        self.table = [L[b % len(L)] if L else None for b in range(self.SIZE)]

    def schedule(self, caddr, cport, daddr, dport, now):
        d = self.table[hash_32(daddr, 8)]
        return d if d is not None and usable(d) else None


class SH(_Algo):
    SIZE = 256

    def __init__(self, svc, fallback=False, port=False):
        super().__init__(svc)
        self.fallback = fallback
        self.use_port = port
        self.changed(None, None)

    def changed(self, what, d):
        L = self.svc.dests
        self.table = []
        p = 0
        count = 0
        while len(self.table) < self.SIZE:
            if not L:
                self.table.append(None)
                continue
            self.table.append(L[p])
            count += 1
            if count >= L[p].weight:
                p = (p + 1) % len(L)
                count = 0

    def key(self, addr, port, offset):
        return (offset + hash_32((port + addr) & 0xFFFFFFFF, 8)) & 255

    def schedule(self, caddr, cport, daddr, dport, now):
        port = cport if self.use_port else 0
        ihash = self.key(caddr, port, 0)
        d = self.table[ihash]
        if d is None:
            return None
        if usable(d):
            return d
        if not self.fallback:
            return None
        for off in range(self.SIZE):
            d = self.table[self.key(caddr, port, (off + ihash) % self.SIZE)]
            if d is None:
                return None
            if usable(d):
                return d
        return None


class MH(_Algo):
    def __init__(self, svc, fallback=False, port=False, table_size=4093, tab_bits=6,
                 key1=2654435761, key2=2654446892):
        super().__init__(svc)
        self.fallback = fallback
        self.use_port = port
        self.M = table_size
        self.bits = tab_bits
        self.k1 = key1
        self.k2 = key2
        self.changed(None, None)

    def changed(self, what, d):
        L = self.svc.dests
        M = self.M
        g = 0
        for x in L:
            if x.last_weight > 0:
                g = gcd(g, x.last_weight)
        self.table = [None] * M
        if g < 1:
            return
        mw = max(x.last_weight for x in L) // g
        rshift = max(0, mw.bit_length() - self.bits)
        setup = []
        for x in L:
            offset = hsiphash_u32(x.port + x.addr, self.k1) % M
            skip = hsiphash_u32(x.port + x.addr, self.k2) % (M - 1) + 1
            t = (x.last_weight // g) >> rshift
            turns = t if t else (1 if x.last_weight else 0)
            setup.append([offset, skip, turns])
        # Each dest's preference list is offset, offset+skip, ...; dests take turns.
        filled = 0
        nexti = [0] * len(L)
        while filled < M:
            for j, (offset, skip, turns) in enumerate(setup):
                for _ in range(turns):
                    while True:
                        c = (offset + nexti[j] * skip) % M
                        if self.table[c] is None:
                            break
                        nexti[j] += 1
                    self.table[c] = L[j]
                    filled += 1
                    if filled == M:
                        return

    def schedule(self, caddr, cport, daddr, dport, now):
        port = cport if self.use_port else 0
        ihash = hsiphash_u32(port + caddr, self.k1) % self.M
        d = self.table[ihash]
        if d is None:
            return None
        if usable(d):
            return d
        if not self.fallback:
            return None
        for off in range(self.M):
            r = (off + ihash) % self.M
            d = self.table[hsiphash_u32(r + port + caddr, self.k1) % self.M]
            if d is None:
                return None
            if usable(d):
                return d
        return None


LBLC_BITS = 10
LBLC_MAX_SIZE = 1024 * 16
ENTRY_TIMEOUT_MS = 6 * 60 * 1000
DAY_MS = 24 * 3600 * 1000


def _lblc_overloaded(svc, d):
    return d.activeconns > d.weight and any(x.activeconns * 2 < x.weight for x in svc.dests)


def _wlc(svc):
    return WLC.schedule(svc.algo)


class _Cache(_Algo):
    """The kernel's chained table: buckets of entries, newest first."""

    def __init__(self, svc, expiration_ms=DAY_MS, **_):
        super().__init__(svc)
        self.expire = expiration_ms
        self.buckets = [[] for _ in range(1 << LBLC_BITS)]
        self.entries = 0
        self.rover = 0
        self.counter = 1

    def get(self, addr):
        for e in self.buckets[hash_32(addr, LBLC_BITS)]:
            if e["addr"] == addr:
                return e
        return None

    def insert(self, e):
        self.buckets[hash_32(e["addr"], LBLC_BITS)].insert(0, e)
        self.entries += 1

    def gc(self, now):
        if self.counter % 30 == 0:
            j = self.rover
            for _ in range(1 << LBLC_BITS):
                j = (j + 1) & 1023
                keep = [e for e in self.buckets[j] if now < e["lastuse"] + self.expire]
                self.entries -= len(self.buckets[j]) - len(keep)
                self.buckets[j] = keep
            self.rover = j
            self.counter = 1
            return
        if self.entries <= LBLC_MAX_SIZE:
            self.counter += 1
            return
        goal = min((self.entries - LBLC_MAX_SIZE) * 4 // 3, LBLC_MAX_SIZE // 2)
        j = self.rover
        for _ in range(1 << LBLC_BITS):
            j = (j + 1) & 1023
            keep = [e for e in self.buckets[j] if now < e["lastuse"] + ENTRY_TIMEOUT_MS]
            gone = len(self.buckets[j]) - len(keep)
            self.entries -= gone
            goal -= gone
            self.buckets[j] = keep
            if goal <= 0:
                break
        self.rover = j


class LBLC(_Cache):
    def schedule(self, caddr, cport, daddr, dport, now):
        e = self.get(daddr)
        if e is not None:
            e["lastuse"] = now
            d = e["dest"]
            if d.available and d.weight > 0 and not _lblc_overloaded(self.svc, d):
                return d
        d = _wlc(self.svc)
        if d is None:
            return None
        if e is not None:
            if e["dest"] is d:
                return d
            self.buckets[hash_32(daddr, LBLC_BITS)].remove(e)  # entries not decremented (kernel)
        self.insert({"addr": daddr, "dest": d, "lastuse": now})
        return d


class LBLCR(_Cache):
    def set_min(self, e):
        least = None
        for d in e["set"]:
            if d.overload:
                continue
            if least is None:
                if d.weight > 0 and d.available:
                    least = d
                continue
            if least.overhead() * d.weight > d.overhead() * least.weight and d.available:
                least = d
        return least

    def set_max(self, e):
        most = None
        for d in e["set"]:
            if most is None:
                if d.weight > 0:
                    most = d
                continue
            if most.overhead() * d.weight < d.overhead() * most.weight and d.weight > 0:
                most = d
        return most

    def schedule(self, caddr, cport, daddr, dport, now):
        e = self.get(daddr)
        if e is not None:
            e["lastuse"] = now
            d = self.set_min(e)
            if len(e["set"]) > 1 and now > e["lastmod"] + self.expire:
                m = self.set_max(e)
                if m is not None:
                    e["set"].remove(m)
                    e["lastmod"] = now
            if d is not None and not _lblc_overloaded(self.svc, d):
                return d
            d = _wlc(self.svc)
            if d is None:
                return None
            if d not in e["set"]:
                e["set"].insert(0, d)
                e["lastmod"] = now
            return d
        d = _wlc(self.svc)
        if d is None:
            return None
        self.insert({"addr": daddr, "set": [d], "lastuse": now, "lastmod": now})
        return d


TWINS = {
    "rr": RR, "wrr": WRR, "lc": LC, "wlc": WLC, "sed": SED, "nq": NQ, "fo": FO, "ovf": OVF,
    "dh": DH, "sh": SH, "mh": MH, "lblc": LBLC, "lblcr": LBLCR,
}


# ------------------------------------------------------------ connection table
# The twin of pylvs/dataplane/conntab.py: the TCP transitions read straight from the
# reference's literal rows (7.4) and a plain record per entry; the dict model that
# uses them is the state machine in tests/property/test_conntab_model.py.

STATE_ABBREV = dict(
    zip(("NO", "ES", "SS", "SR", "FW", "TW", "CL", "CW", "LA", "LI", "SA"), ct.TCP_STATE_NAMES, strict=True)
)


def tcp_next_state(direction: str, flags: int, state: str, secure: bool = False) -> str:
    """Reference 7.4 read straight from the literal table (secure_tcp: the DoS table)."""
    table = ct.TCP_TRANSITIONS_DOS if secure else ct.TCP_TRANSITIONS
    for bit, event in ((ct.TCP_RST, "rst"), (ct.TCP_SYN, "syn"), (ct.TCP_FIN, "fin"), (ct.TCP_ACK, "ack")):
        if flags & bit:
            row = table[direction][event].split()
            return STATE_ABBREV[row[ct.TCP_STATE_NAMES.index(state)]]
    return "CLOSE"


def update_defense_level(modes: dict, free: int, amemthresh: int, am_droprate: int) -> tuple[dict, dict]:
    """ip_vs_ctl.c update_defense_level, case by case, on free entries instead of pages:
    (the modes afterwards, {"dropentry", "drop_rate", "secure"})."""
    nomem = free < amemthresh
    m = dict(modes)
    out = {"dropentry": 0, "drop_rate": 0, "secure": 0}
    if m["drop_entry"] == 1:
        if nomem:
            out["dropentry"], m["drop_entry"] = 1, 2
    elif m["drop_entry"] == 2:
        if nomem:
            out["dropentry"] = 1
        else:
            m["drop_entry"] = 1
    elif m["drop_entry"] == 3:
        out["dropentry"] = 1
    if m["drop_packet"] == 1:
        if nomem:
            out["drop_rate"], m["drop_packet"] = amemthresh // (amemthresh - free), 2
    elif m["drop_packet"] == 2:
        if nomem:
            out["drop_rate"] = amemthresh // (amemthresh - free)
        else:
            m["drop_packet"] = 1
    elif m["drop_packet"] == 3:
        out["drop_rate"] = am_droprate
    if m["secure_tcp"] == 1 and nomem:
        m["secure_tcp"] = 2
    elif m["secure_tcp"] == 2 and not nomem:
        m["secure_tcp"] = 1
    out["secure"] = int(m["secure_tcp"] >= 2)
    return m, out


@dataclass
class ConnRecord:
    key: tuple
    proto: int
    daddr: int
    dport: int
    dest: int
    template: bool
    nat: bool
    state: str
    expires: float
    timeout: float
    control: int  # entry number of the template, -1
    noout: bool
    inactive: bool = True
    in_pkts: int = 0

    def dead(self, now: float, model) -> bool:
        """Reference 7.7: past its time and controlling nothing (``model.n_control``)."""
        return self.expires <= now and model.n_control(self) == 0


# ------------------------------------------------------------------ connection sync


def sync_due(*, live: bool, expired: bool, flags: int, proto: int, state: int, in_pkts: int,
             sync_state: int | None, sync_pkts: int) -> bool:
    """Plain twin of connsync's collect_sync due rule (ip_vs_sync_conn_needed with the
    default sysctls, plus LAST_ACK): ``sync_state`` None = never sent."""
    if not live or expired or flags & (ct.F_TEMPLATE | ct.F_ONE_PACKET):
        return False
    name = ct.STATE_NAMES[state]
    synced = {"ESTABLISHED", "FIN_WAIT", "CLOSE", "CLOSE_WAIT", "TIME_WAIT", "LAST_ACK"}
    closing = synced - {"ESTABLISHED"}
    if proto == ct.IPPROTO_TCP and name not in synced:
        return False
    changed = sync_state != state
    if changed and in_pkts >= 3:  # sync_threshold
        return True
    if changed and name in closing:
        return True
    return sync_state is not None and (in_pkts - sync_pkts) % 2**32 >= 50  # sync_period


# ------------------------------------------------------------------ the FTP helper


def _ftp_line(data: bytes) -> str | None:
    """The first line of a segment, without CR LF, when it ends in the segment within
    512 bytes (ftp.MAX_LINE); else None."""
    nl = data.find(b"\n", 0, 512)
    if nl < 0:
        return None
    line = data[:nl]
    if line.endswith(b"\r"):
        line = line[:-1]
    return line.decode("latin-1")


def _ftp_delimiter(d: str) -> bool:
    return 33 <= ord(d) <= 126 and not d.isdigit() and d != "."


def _byte_numbers(text: str, count: int, sep: str) -> list[int] | None:
    parts = text.split(sep)
    if len(parts) != count or not all(p.isdigit() and p.isascii() and len(p) <= 3 for p in parts):
        return None
    nums = [int(p) for p in parts]
    return nums if all(n <= 255 for n in nums) else None


def _as_addr(nums: list[int]) -> int:
    return nums[0] << 24 | nums[1] << 16 | nums[2] << 8 | nums[3]


def ftp_command(data: bytes) -> tuple[str, int, int]:
    """What ip_vs_ftp_in makes of a client segment, line-wise (pylvs.dataplane.ftp)."""
    line = _ftp_line(data)
    if line is None:
        return "none", 0, 0
    word, rest = line[:4].upper(), line[4:]
    if word == "PASV" and rest == "":
        return "PASV", 0, 0
    if word == "EPSV" and (rest == "" or rest.startswith(" ")):
        return "EPSV", 0, 0
    if word == "PORT" and rest.startswith(" "):
        nums = _byte_numbers(rest[1:], 6, ",")
        if nums is not None and nums[4] << 8 | nums[5]:
            return "PORT", _as_addr(nums), nums[4] << 8 | nums[5]
        return "none", 0, 0
    if word == "EPRT" and rest.startswith(" ") and len(rest) >= 2:
        d = rest[1]
        if not _ftp_delimiter(d):
            return "none", 0, 0
        fields = rest[2:].split(d)
        # |1|a.b.c.d|port| splits into ["1", addr, port, ""]
        if len(fields) != 4 or fields[0] != "1" or fields[3] != "":
            return "none", 0, 0
        nums = _byte_numbers(fields[1], 4, ".")
        port = fields[2]
        if nums is None or not (port.isdigit() and port.isascii() and len(port) <= 5) or not 0 < int(port) <= 65535:
            return "none", 0, 0
        return "EPRT", _as_addr(nums), int(port)
    return "none", 0, 0


def ftp_reply(data: bytes) -> tuple[str, int, int, int, int]:
    """What ip_vs_ftp_out finds at the start of a server segment: a 227 (the address text
    [start, stop) to rewrite) or a 229 (its port's digits)."""
    line = _ftp_line(data)
    none = ("none", 0, 0, 0, 0)
    if line is None or len(line) < 4 or line[3] != " ":
        return none
    if line.startswith("227"):
        first = next((i for i in range(4, len(line)) if line[i].isdigit() and line[i].isascii()), None)
        if first is None:
            return none
        # the longest run of digits and commas from there, cut at six numbers
        stop = first
        numbers, digits = 0, 0
        while stop < len(line):
            c = line[stop]
            if c.isascii() and c.isdigit():
                if digits == 3:
                    return none  # a number of 4+ digits
                digits += 1
            elif c == "," and digits and numbers < 5:
                numbers += 1
                digits = 0
            else:
                break
            stop += 1
        if numbers != 5 or not digits:
            return none
        nums = _byte_numbers(line[first:stop], 6, ",")
        if nums is None or not nums[4] << 8 | nums[5]:
            return none
        return "227", _as_addr(nums), nums[4] << 8 | nums[5], first, stop
    if line.startswith("229"):
        lp = line.find("(", 4)
        if lp < 0 or lp + 5 > len(line):
            return none
        d = line[lp + 1]
        if not _ftp_delimiter(d) or line[lp + 2] != d or line[lp + 3] != d:
            return none
        end = lp + 4
        while end < len(line) and line[end].isascii() and line[end].isdigit() and end - (lp + 4) < 5:
            end += 1
        digits = line[lp + 4:end]
        if not digits or (end < len(line) and line[end].isdigit()) or end >= len(line) or line[end] != d:
            return none
        if not 0 < int(digits) <= 65535:
            return none
        return "229", 0, int(digits), lp + 4, end
    return none


def ftp_rewrite_227(data: bytes, start: int, stop: int, addr: int, port: int) -> bytes:
    """The segment with [start, stop) replaced by addr's and port's six numbers."""
    nums = [addr >> 24 & 255, addr >> 16 & 255, addr >> 8 & 255, addr & 255, port >> 8, port & 255]
    return data[:start] + ",".join(str(n) for n in nums).encode() + data[stop:]
