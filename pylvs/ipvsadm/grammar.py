"""ipvsadm 1.31's command line grammar, byte for byte: argv in, a ``Command`` or a ``ParseError`` out.

    cmd = parse(["-A", "-t", "10.1.0.1:80", "-s", "rr"])       # Command(command="add-service", ...)
    parse(["-A", "-D"])                                         # ParseError: "invalid option `-D'\\n", rc 2

This mirrors ipvsadm.c (parse_options, process_options up to the kernel call) as Debian
12's ``ipvsadm 1:1.31-1+b1`` (the popt build) runs it, and the parts of popt 1.19 it
relies on (poptGetNextOpt: option clusters ``-Ln``, ``--long=arg``, ``-p``'s optional
argument, ``--``, leftovers, the ``!#:+`` argument expansion).  Checked against
``tests/data/kernel-ipvs`` and against that binary itself.

What is ipvsadm's own (userland) is here, with its words and exit codes: 2 for
``fail()``, 255 for "Try `ipvsadm -h' ..." and for popt's "OPT: unknown option".  What the
kernel refuses (an unknown scheduler, a service that exists, l-threshold > u-threshold...)
parses fine: ``pylvs.ipvsadm.table`` answers those.

``-R``: ``restore_argvs(stdin_text)`` splits stdin as config_stream.c does and
``parse_restore_line(line)`` parses one line; a ``ParseError`` whose ``exits`` is False
(popt's errors: parse_options returns -1) does not stop ipvsadm -R, the next line is read.

pylvs extension: ``-j``/``--json``, a list modifier (``Command.list.json``).

Pure code; the only I/O is name resolution (``gethostbyname``, ``getservbyname`` below),
which tests monkeypatch.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass, field

from pylvs.ipvsadm import command as c

PROG = "ipvsadm"  # argv[0] as the captures ran it; it is in "Try `%s -h' ..." and the usage text

# --- What ipvsadm prints for -v and -h ------------------------------------------------------

IPVSADM_VERSION = "v1.31 2019/12/24"  # ipvsadm.c IPVSADM_VERSION_NO " " IPVSADM_VERSION_DATE
IPVS_VERSION = "1.2.1"  # IP_VS_VERSION_CODE of the kernel headers it was built with
VERSION_TEXT = f"ipvsadm {IPVSADM_VERSION} (compiled with popt and IPVS v{IPVS_VERSION})\n"
SCHEDULERS = "rr|wrr|lc|wlc|lblc|lblcr|dh|sh|sed|nq|fo|ovf|mh"  # the SCHEDULERS file, built in
PE_LIST = "sip"  # the PERSISTENCE_ENGINES file
DEF_SCHED = "wlc"  # ipvsadm.c DEF_SCHED
DEF_TUNNEL_TYPE = "ipip"  # ipvsadm.c DEF_TUNNEL_TYPE

_USAGE = """\
Usage:
  {p} -A|E virtual-service [-s scheduler] [-p [timeout]] [-M netmask] [--pe persistence_engine] [-b sched-flags]
  {p} -D virtual-service
  {p} -C
  {p} -R
  {p} -S [-n]
  {p} -a|e virtual-service -r server-address [options]
  {p} -d virtual-service -r server-address
  {p} -L|l [virtual-service] [options]
  {p} -Z [virtual-service]
  {p} --set tcp tcpfin udp
  {p} --start-daemon {{master|backup}} [daemon-options]
  {p} --stop-daemon {{master|backup}}
  {p} -h

"""
_COMMANDS = """\
Commands:
Either long or short options are allowed.
  --add-service     -A        add virtual service with options
  --edit-service    -E        edit virtual service with options
  --delete-service  -D        delete virtual service
  --clear           -C        clear the whole table
  --restore         -R        restore rules from stdin
  --save            -S        save rules to stdout
  --add-server      -a        add real server with options
  --edit-server     -e        edit real server with options
  --delete-server   -d        delete real server
  --list            -L|-l     list the table
  --zero            -Z        zero counters in a service or all services
  --set tcp tcpfin udp        set connection timeout values
  --start-daemon              start connection sync daemon
  --stop-daemon               stop connection sync daemon
  --help            -h        display this help message

virtual-service:
  --tcp-service|-t  service-address   service-address is host[:port]
  --udp-service|-u  service-address   service-address is host[:port]
  --sctp-service    service-address   service-address is host[:port]
  --fwmark-service|-f fwmark          fwmark is an integer greater than zero

"""
_OPTIONS = f"""\
Options:
  --ipv6         -6                   fwmark entry uses IPv6
  --scheduler    -s scheduler         one of {SCHEDULERS},
                                      the default scheduler is {DEF_SCHED}.
  --pe            engine              alternate persistence engine may be {PE_LIST},
                                      not set by default.
  --persistent   -p [timeout]         persistent service
  --netmask      -M netmask           persistent granularity mask
  --real-server  -r server-address    server-address is host (and port)
  --gatewaying   -g                   gatewaying (direct routing) (default)
  --ipip         -i                   ipip encapsulation (tunneling)
  --masquerading -m                   masquerading (NAT)
  --tun-type      type                one of ipip|gue|gre,
                                      the default tunnel type is {DEF_TUNNEL_TYPE}.
  --tun-port      port                tunnel destination port
  --tun-nocsum                        tunnel encapsulation without checksum
  --tun-csum                          tunnel encapsulation with checksum
  --tun-remcsum                       tunnel encapsulation with remote checksum
  --weight       -w weight            capacity of real server
  --u-threshold  -x uthreshold        upper threshold of connections
  --l-threshold  -y lthreshold        lower threshold of connections
  --connection   -c                   output of current IPVS connections
  --timeout                           output of timeout (tcp tcpfin udp)
  --daemon                            output of daemon information
  --stats                             output of statistics information
  --rate                              output of rate information
  --exact                             expand numbers (display exact values)
  --thresholds                        output of thresholds information
  --persistent-conn                   output of persistent connection info
  --tun-info                          output of tunnel information
  --nosort                            disable sorting output of service/server entries
  --sort                              does nothing, for backwards compatibility
  --ops          -o                   one-packet scheduling
  --numeric      -n                   numeric output of addresses and ports
  --sched-flags  -b flags             scheduler flags (comma-separated)
Daemon Options:
  --syncid sid                        syncid for connection sync (default=255)
  --sync-maxlen length                Max sync message length (default=1472)
  --mcast-interface interface         multicast interface for connection sync
  --mcast-group address               IPv4/IPv6 group (default=224.0.0.81)
  --mcast-port port                   UDP port (default=8848)
  --mcast-ttl ttl                     Multicast TTL (default=1)
"""


def help_text(prog: str = PROG) -> str:
    """usage_exit(argv[0], 0): what ``ipvsadm -h`` prints on stdout (the program name is argv[0])."""
    return VERSION_TEXT + _USAGE.format(p=prog) + _COMMANDS + _OPTIONS


HELP_TEXT = help_text()

# --- Numbers ---------------------------------------------------------------------------------

INT_MAX = 2**31 - 1
UINT_MAX = 2**32 - 1
LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1  # strtol on amd64
MAX_TIMEOUT = 86400 * 31  # ipvsadm.c MAX_TIMEOUT (31 days): -p and --set values
PERSISTENT_DEFAULT = 6 * 60  # libipvs.h IPVS_SVC_PERSISTENT_TIMEOUT: -p without a value, 360 s as captured
WEIGHT_MAX = INT_MAX  # as captured: Debian's 1.31 binary takes -w 0..2147483647 (the 1.31 tag's source says 65535)
THRESHOLD_MAX = INT_MAX  # -x / -y: string_to_number(optarg, 0, INT_MAX)
PORT_MAX = 65535
SYNCID_MAX = 255  # --syncid 0..255
MCAST_TTL_MAX = 255  # --mcast-ttl 1..255
SYNC_MAXLEN_MAX = 65535 - 20 - 8  # --sync-maxlen 1..(IP datagram - IP header - UDP header)
IPV6_NETMASK_MAX = 128  # -M with an IPv6 service: atoi(), 1..128
SCHEDNAME_MAXLEN = 16  # IP_VS_SCHEDNAME_MAXLEN: strncpy(sched_name, optarg, MAXLEN - 1)
PENAME_MAXLEN = 16  # IP_VS_PENAME_MAXLEN: strncpy(pe_name, optarg, MAXLEN)
IFNAME_MAXLEN = 16  # IP_VS_IFNAME_MAXLEN: strncpy(mcast_ifn, optarg, MAXLEN - 1)
SCHED_FLAGS_ARG_LEN = 128  # char sched_flags_arg[128], filled with snprintf
MAX_LINE_LENGTH = 4096  # config_stream.h: -R reads tokens of at most this many characters

RC_FAIL = 2  # fail(2, ...): ipvsadm's own checks
RC_TRYHELP = 255  # tryhelp_exit(argv[0], -1), and parse_options' -1 after a popt error
HANG_MESSAGE = "pylvs: '!#:+' with no argument left to take (ipvsadm 1.31 loops forever here)\n"
RC_SEGV = 139  # what a shell reports for SIGSEGV: ipvsadm -b ',' dereferences strtok's NULL

# --- Errors ----------------------------------------------------------------------------------


class ParseError(Exception):
    """What ipvsadm prints and its exit code for a command line it refuses itself.

    ``exits`` is False for popt's errors ("-t: missing argument"): parse_options returns -1
    there instead of exiting, which ends ``ipvsadm`` with 255 but lets ``ipvsadm -R`` go on
    with the next line.  Every other error exits ipvsadm, in -R too.
    """

    def __init__(self, stderr: str, rc: int = RC_FAIL, stdout: str = "", exits: bool = True) -> None:
        super().__init__(stderr.rstrip("\n"))
        self.stderr = stderr
        self.rc = rc
        self.stdout = stdout
        self.exits = exits


def _fail(msg: str) -> ParseError:
    return ParseError(msg + "\n", RC_FAIL)  # fail(): vfprintf(msg), "\n", exit(2)


def _tryhelp(prog: str) -> ParseError:
    return ParseError(f"Try `{prog} -h' or '{prog} --help' for more information.\n", RC_TRYHELP)


# --- The option table (parse_options' poptOption table) --------------------------------------

NONE, STRING, OPTIONAL = 0, 1, 2  # POPT_ARG_NONE, POPT_ARG_STRING, POPT_ARG_STRING|POPT_ARGFLAG_OPTIONAL


@dataclass(frozen=True)
class _Opt:
    long: str
    short: str  # "" when it has none
    arg: int
    val: str  # what poptGetNextOpt returns: the short letter, or a TAG_* name


_TABLE = (
    _Opt("add-service", "A", NONE, "A"), _Opt("edit-service", "E", NONE, "E"),
    _Opt("delete-service", "D", NONE, "D"), _Opt("clear", "C", NONE, "C"),
    _Opt("list", "L", NONE, "L"), _Opt("list", "l", NONE, "l"),  # --list finds the first: -L
    _Opt("zero", "Z", NONE, "Z"), _Opt("add-server", "a", NONE, "a"),
    _Opt("edit-server", "e", NONE, "e"), _Opt("delete-server", "d", NONE, "d"),
    _Opt("set", "", NONE, "set"), _Opt("help", "h", NONE, "h"), _Opt("version", "v", NONE, "v"),
    _Opt("restore", "R", NONE, "R"), _Opt("save", "S", NONE, "S"),
    _Opt("start-daemon", "", STRING, "start-daemon"), _Opt("stop-daemon", "", STRING, "stop-daemon"),
    _Opt("tcp-service", "t", STRING, "t"), _Opt("udp-service", "u", STRING, "u"),
    _Opt("sctp-service", "", STRING, "sctp-service"), _Opt("fwmark-service", "f", STRING, "f"),
    _Opt("scheduler", "s", STRING, "s"), _Opt("persistent", "p", OPTIONAL, "p"),
    _Opt("netmask", "M", STRING, "M"), _Opt("real-server", "r", STRING, "r"),
    _Opt("masquerading", "m", NONE, "m"), _Opt("ipip", "i", NONE, "i"), _Opt("gatewaying", "g", NONE, "g"),
    _Opt("weight", "w", STRING, "w"), _Opt("u-threshold", "x", STRING, "x"), _Opt("l-threshold", "y", STRING, "y"),
    _Opt("numeric", "n", NONE, "n"), _Opt("connection", "c", NONE, "c"),
    _Opt("mcast-interface", "", STRING, "mcast-interface"),
    _Opt("syncid", "", STRING, "I"),  # val 'I' but no short name: -I is unknown
    _Opt("timeout", "", NONE, "timeout"), _Opt("daemon", "", NONE, "daemon"),
    _Opt("stats", "", NONE, "stats"), _Opt("rate", "", NONE, "rate"),
    _Opt("thresholds", "", NONE, "thresholds"), _Opt("persistent-conn", "", NONE, "persistent-conn"),
    _Opt("nosort", "", NONE, "nosort"), _Opt("sort", "", NONE, "sort"),
    _Opt("exact", "X", NONE, "X"), _Opt("ipv6", "6", NONE, "6"), _Opt("ops", "o", NONE, "o"),
    _Opt("pe", "", STRING, "pe"), _Opt("sched-flags", "b", STRING, "b"),
    _Opt("mcast-group", "", STRING, "mcast-group"), _Opt("mcast-port", "", STRING, "mcast-port"),
    _Opt("mcast-ttl", "", STRING, "mcast-ttl"), _Opt("sync-maxlen", "", STRING, "sync-maxlen"),
    _Opt("tun-info", "", NONE, "tun-info"), _Opt("tun-type", "", STRING, "tun-type"),
    _Opt("tun-port", "", STRING, "tun-port"), _Opt("tun-nocsum", "", NONE, "tun-nocsum"),
    _Opt("tun-csum", "", NONE, "tun-csum"), _Opt("tun-remcsum", "", NONE, "tun-remcsum"),
    _Opt("json", "j", NONE, "j"),  # pylvs extension (ipvsadm: unknown option)
)  # fmt: skip
_BY_LONG: dict[str, _Opt] = {}
_BY_SHORT: dict[str, _Opt] = {}
for _o in _TABLE:
    _BY_LONG.setdefault(_o.long, _o)
    if _o.short:
        _BY_SHORT.setdefault(_o.short, _o)

# poptGetNextOpt's results other than an option's val (popt.h)
END, BADOPT, NOARG, UNWANTEDARG = -1, -11, -10, -12
_POPT_ERRORS = {NOARG: "missing argument", UNWANTEDARG: "option does not take an argument",
                BADOPT: "unknown option"}  # fmt: skip

# --- The command/option table (commands_v_options) -------------------------------------------

# optnames[], in bit order; "json" is pylvs's (-j), legal with -L only.
OPTNAMES = (
    "numeric", "connection", "service-address", "scheduler", "persistent", "netmask", "real-server",
    "forwarding-method", "weight", "u-threshold", "l-threshold", "mcast-interface", "timeout", "daemon",
    "stats", "rate", "thresholds", "persistent-conn", "nosort", "syncid", "exact", "ops", "pe",
    "sched-flags", "mcast-group", "mcast-port", "mcast-ttl", "sync-maxlen", "tun-info", "tun-type",
    "tun-port", "tun-nocsum", "tun-csum", "tun-remcsum", "json",
)  # fmt: skip
_BIT = {name: i for i, name in enumerate(OPTNAMES)}

# cmdnames[]: the words of ipvsadm's messages (-C is 'flush' there, --clear on the command line).
CMD_ADD, CMD_EDIT, CMD_DEL, CMD_FLUSH, CMD_LIST, CMD_ADDDEST, CMD_DELDEST, CMD_EDITDEST = range(8)
CMD_TIMEOUT, CMD_STARTDAEMON, CMD_STOPDAEMON, CMD_RESTORE, CMD_SAVE, CMD_ZERO = range(8, 14)
CMDNAMES = ("add-service", "edit-service", "delete-service", "flush", "list", "add-server", "delete-server",
            "edit-server", "set", "start-daemon", "stop-daemon", "restore", "save", "zero")  # fmt: skip
_COMMAND_OF = (c.ADD_SERVICE, c.EDIT_SERVICE, c.DEL_SERVICE, c.FLUSH, c.LIST, c.ADD_DEST, c.DEL_DEST,
               c.EDIT_DEST, c.TIMEOUT, c.START_DAEMON, c.STOP_DAEMON, c.RESTORE, c.SAVE, c.ZERO)  # fmt: skip
_FIRST = {"A": CMD_ADD, "E": CMD_EDIT, "D": CMD_DEL, "a": CMD_ADDDEST, "e": CMD_EDITDEST, "d": CMD_DELDEST,
          "C": CMD_FLUSH, "L": CMD_LIST, "l": CMD_LIST, "Z": CMD_ZERO, "set": CMD_TIMEOUT, "R": CMD_RESTORE,
          "S": CMD_SAVE, "start-daemon": CMD_STARTDAEMON, "stop-daemon": CMD_STOPDAEMON}  # fmt: skip

# One row per command, one column per OPTNAMES entry: '+' compulsory, 'x' illegal,
# '1' exclusive (one '1' option at most), ' ' optional.  The 34 columns of ipvsadm.c, then
# pylvs's json column.  Columns: -n -c svc -s -p -M -r fwd -w -x -y mcast timeout daemon
# stats rate thresholds pconn nosort syncid exact ops pe -b group port ttl maxlen tun-info
# tun-type tun-port nocsum csum remcsum | json.
COMMANDS_V_OPTIONS = (
    "xx+   xxxxxxxxxxxxxxx   xxxxxxxxxx" "x",  # add-service
    "xx+   xxxxxxxxxxxxxxx   xxxxxxxxxx" "x",  # edit-service
    "xx+xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" "x",  # delete-service
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" "x",  # flush
    " 11xxxxxxxxx11       xxxxxxx xxxxx" " ",  # list
    "xx+xxx+    xxxxxxxxxxxxxxxxxx     " "x",  # add-server
    "xx+xxx+xxxxxxxxxxxxxxxxxxxxxxxxxxx" "x",  # delete-server
    "xx+xxx+    xxxxxxxxxxxxxxxxxx     " "x",  # edit-server
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" "x",  # set
    "xxxxxxxxxxx xxxxxxx xxxx    xxxxxx" "x",  # start-daemon
    "xxxxxxxxxxxxxxxxxxx xxxxxxxxxxxxxx" "x",  # stop-daemon
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" "x",  # restore
    " xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" "x",  # save
    "xx xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" "x",  # zero
)  # fmt: skip

# Tunnel types and their options (tunnel_types_v_options), columns tun-port nocsum csum remcsum.
TUN_TYPES = ("ipip", "gue", "gre")  # IP_VS_CONN_F_TUNNEL_TYPE_IPIP/GUE/GRE = 0, 1, 2
_TUN_OPTS = ("tun-port", "tun-nocsum", "tun-csum", "tun-remcsum")
TUNNEL_TYPES_V_OPTIONS = ("xxxx", "+111", "x11x")
_TUN_FLAG = {"tun-nocsum": "nocsum", "tun-csum": "csum", "tun-remcsum": "remcsum"}

# -b words and their bits (parse_sched_flags); sh-*/mh-* need that scheduler.
SCHED_FLAG_WORDS = {
    "flag-1": (c.SCHED_FLAG_1, None), "flag-2": (c.SCHED_FLAG_2, None), "flag-3": (c.SCHED_FLAG_3, None),
    "sh-fallback": (c.SCHED_FLAG_1, "sh"), "sh-port": (c.SCHED_FLAG_2, "sh"),
    "mh-fallback": (c.SCHED_FLAG_1, "mh"), "mh-port": (c.SCHED_FLAG_2, "mh"),
}  # fmt: skip

# --- C library look-alikes (glibc) -----------------------------------------------------------

_C_SPACE = " \t\n\v\f\r"  # isspace() in the C locale
_HEX = "0123456789abcdefABCDEF"


def _strtol(s: str) -> tuple[int, int]:
    """strtol(s, &end, 10): (value, characters used; 0 when there is no number)."""
    i, n = 0, len(s)
    while i < n and s[i] in _C_SPACE:
        i += 1
    neg = i < n and s[i] == "-"
    if i < n and s[i] in "+-":
        i += 1
    j = i
    while j < n and "0" <= s[j] <= "9":
        j += 1
    if j == i:
        return 0, 0
    value = int(s[i:j])
    return (-value if neg else value), j


def string_to_number(s: str, lo: int, hi: int) -> int | None:
    """ipvsadm.c string_to_number: strtol, the whole string, within [lo, hi]; None for -1."""
    value, used = _strtol(s)
    if used == 0 or used != len(s) or not LONG_MIN <= value <= LONG_MAX:  # ERANGE
        return None
    return value if lo <= value <= hi else None


def _atoi(s: str) -> int:
    """atoi: (int) strtol(s, NULL, 10), out-of-range values clamped to a long, then cut to 32 bits."""
    value = min(max(_strtol(s)[0], LONG_MIN), LONG_MAX) & UINT_MAX
    return value - 2**32 if value > INT_MAX else value


def inet_aton(s: str) -> int | None:
    """glibc inet_aton (it ignores what follows a white space): a, a.b, a.b.c, a.b.c.d with C
    numbers (0x hex, 0 octal); the address as a host-order int, None if it is not one."""
    parts: list[int] = []
    i = 0
    while True:
        if i >= len(s) or not s[i].isdigit() or not s[i].isascii():
            return None
        if s[i : i + 2] in ("0x", "0X"):
            j = i + 2
            while j < len(s) and s[j] in _HEX:
                j += 1
            val = int(s[i + 2 : j], 16) if j > i + 2 else 0
            if j == i + 2:
                j = i + 1  # strtoul takes "0" and stops at the x
        else:
            base = 8 if s[i] == "0" else 10
            j = i
            while j < len(s) and s[j] in "0123456789"[:base]:
                j += 1
            val = int(s[i:j], base)
        if val > UINT_MAX:
            return None
        i = j
        if i < len(s) and s[i] == ".":
            if len(parts) > 2 or val > 0xFF:
                return None
            parts.append(val)
            i += 1
            continue
        break
    if i < len(s) and s[i] not in _C_SPACE:
        return None
    if val > (0xFFFFFFFF, 0xFFFFFF, 0xFFFF, 0xFF)[len(parts)]:
        return None
    addr = 0
    for k, p in enumerate(parts):
        addr |= p << (24 - 8 * k)
    return addr | val


def inet_pton4(s: str) -> bytes | None:
    """glibc inet_pton(AF_INET): exactly d.d.d.d, no leading zeros."""
    octets: list[int] = []
    saw_digit = False
    for ch in s:
        if "0" <= ch <= "9":
            if saw_digit and octets[-1] == 0:
                return None
            if not saw_digit:
                if len(octets) == 4:
                    return None
                octets.append(0)
                saw_digit = True
            octets[-1] = octets[-1] * 10 + int(ch)
            if octets[-1] > 255:
                return None
        elif ch == "." and saw_digit:
            if len(octets) == 4:
                return None
            saw_digit = False
        else:
            return None
    return bytes(octets) if len(octets) == 4 and saw_digit else None


def inet_pton6(s: str) -> bytes | None:
    """glibc inet_pton(AF_INET6)."""
    if not s:
        return None
    i = 0
    if s[0] == ":":
        if len(s) < 2 or s[1] != ":":
            return None
        i = 1
    out = bytearray()
    colonp: int | None = None
    curtok, seen, val = i, 0, 0
    while i < len(s):
        ch = s[i]
        i += 1
        if ch in _HEX:
            if seen == 4:
                return None
            val, seen = (val << 4) | int(ch, 16), seen + 1
            continue
        if ch == ":":
            curtok = i
            if seen == 0:
                if colonp is not None:
                    return None
                colonp = len(out)
                continue
            if i == len(s) or len(out) + 2 > 16:
                return None
            out += bytes((val >> 8, val & 0xFF))
            seen, val = 0, 0
            continue
        if ch == "." and len(out) + 4 <= 16:
            v4 = inet_pton4(s[curtok:])
            if v4 is not None:
                out += v4
                seen = 0
                break
        return None
    if seen:
        if len(out) + 2 > 16:
            return None
        out += bytes((val >> 8, val & 0xFF))
    if colonp is not None:
        if len(out) == 16:
            return None
        out[colonp:colonp] = bytes(16 - len(out))
    return bytes(out) if len(out) == 16 else None


def inet_ntop6(b: bytes) -> str:
    """glibc inet_ntop(AF_INET6): the longest run (>= 2) of zero words as ::, IPv4 tails dotted."""
    words = [b[k] << 8 | b[k + 1] for k in range(0, 16, 2)]
    best, run = (-1, 0), (-1, 0)
    for k, w in enumerate(words + [1]):
        if w == 0:
            run = (k if run[0] < 0 else run[0], run[1] + 1)
        elif run[0] >= 0:
            if run[1] > best[1]:
                best = run
            run = (-1, 0)
    if best[1] < 2:
        best = (-1, 0)
    out, k = "", 0
    while k < 8:
        if best[0] <= k < best[0] + best[1]:
            if k == best[0]:
                out += ":"
            k += 1
            continue
        if k:
            out += ":"
        if k == 6 and best[0] == 0 and (best[1] == 6 or (best[1] == 5 and words[5] == 0xFFFF)):
            return out + ".".join(str(x) for x in b[12:])
        out += f"{words[k]:x}"
        k += 1
    if best[0] >= 0 and best[0] + best[1] == 8:
        out += ":"
    return out


def _dotted(addr: int) -> str:
    return ".".join(str((addr >> s) & 0xFF) for s in (24, 16, 8, 0))


# --- Name resolution (monkeypatch these two in tests) ----------------------------------------


def gethostbyname(name: str) -> str | None:
    """ipvsadm.c host_to_addr: the name's first IPv4 address (dotted), None if it has none.

    glibc's gethostbyname answers some names without a look-up: all digits and dots (not
    ending in a dot) are an address or nothing, a hex digit with a ':' is IPv6 (no AF_INET
    address)."""
    if not name:
        return None
    if name[0].isdigit() and name[0].isascii() and not name.endswith(".") and not name.strip("0123456789."):
        return None  # inet_aton already refused it
    if (name[0] in _HEX and ":" in name) or name[0] == ":":
        return None
    try:
        infos = socket.getaddrinfo(name, None, socket.AF_INET, socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return None
    return str(infos[0][4][0]) if infos else None


def getservbyname(name: str, proto: str) -> int | None:
    """ipvsadm.c service_to_port: the port of a service name (/etc/services), None if unknown."""
    try:
        return socket.getservbyname(name, proto)
    except (OSError, UnicodeError):
        return None


# --- popt ------------------------------------------------------------------------------------


class _Popt:
    """The part of popt 1.19's poptGetNextOpt that ipvsadm's table exercises (no aliases, no
    exec, no callbacks): argv[0] is skipped; args not starting with '-' (and '-') are leftovers;
    '--' makes the rest leftovers; '--name[=arg]'; '-abc' clusters of short options, where an
    option taking an argument takes the rest of the cluster ('-p60', '-t=1.2.3.4:80') or the
    next arg; an optional argument is not taken from an arg starting with '-'."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.next = 1
        self.char_arg: str | None = None  # nextCharArg: the rest of a short-option cluster
        self.rest_leftover = False
        self.leftovers: list[str] = []
        self.deleted: set[int] = set()  # args that !#:+ took
        self.arg: str | None = None  # the option's argument (poptGetOptArg)

    def get_next_opt(self) -> str | int:
        while True:
            opt: _Opt | None = None
            long_arg: str | None = None
            if self.char_arg is None and self.next == len(self.argv):
                return END
            if self.char_arg is None:
                if self.next in self.deleted:
                    self.next += 1
                    continue
                orig = self.argv[self.next]
                self.next += 1
                if self.rest_leftover or not orig.startswith("-") or orig == "-":
                    self.leftovers.append(orig)
                    continue
                if orig == "--":
                    self.rest_leftover = True
                    continue
                name = orig[1:]
                onedash = not name.startswith("-")
                if not onedash:
                    name = name[1:]
                name, eq, rest = name.partition("=")
                long_arg = rest if eq else None
                # No option here is POPT_ARGFLAG_ONEDASH: '-name' is a cluster of short ones.
                opt = None if onedash else _BY_LONG.get(name)
                if opt is None:
                    if not onedash:
                        return BADOPT
                    self.char_arg, long_arg = orig[1:], None
            if self.char_arg is not None:
                ch, rest = self.char_arg[0], self.char_arg[1:]
                self.char_arg = None
                opt = _BY_SHORT.get(ch)
                if opt is None:
                    return BADOPT
                if rest:
                    self.char_arg = rest
            assert opt is not None
            self.arg = None
            if opt.arg == NONE:
                if long_arg is not None or (self.char_arg is not None and self.char_arg.startswith("=")):
                    return UNWANTEDARG
            elif long_arg is not None:
                self.arg = self._expand(long_arg)
            elif self.char_arg is not None:
                ca, self.char_arg = self.char_arg, None
                self.arg = self._expand(ca[1:] if ca.startswith("=") else ca)
            elif self.next == len(self.argv):
                if opt.arg != OPTIONAL:
                    return NOARG
            elif not (opt.arg == OPTIONAL and self.argv[self.next].startswith("-")):
                self.next += 1
                self.arg = self._expand(self.argv[self.next - 1])
            return opt.val

    def _expand(self, s: str) -> str:
        """expandNextArg: '!#:+' in an argument is replaced by the next non-option arg,
        which is then skipped (popt's alias syntax, live in any argument)."""
        out: list[str] = []
        taken: str | None = None
        i = 0
        while i < len(s):
            ch = s[i]
            i += 1
            if ch == "!" and s[i : i + 3] == "#:+":
                if taken is None:
                    taken = self._find_next_arg()
                if taken is not None:
                    out.append(taken)
                    i += 3
                    continue
            out.append(ch)
        return "".join(out)

    def _find_next_arg(self) -> str | None:
        for k in range(self.next, len(self.argv)):
            if k not in self.deleted and not self.argv[k].startswith("-"):
                self.deleted.add(k)
                return self.argv[k]
        if self.next < len(self.argv):
            # findNextArg's do-while never ends when args remain but none fits: ipvsadm hangs
            raise ParseError(HANG_MESSAGE, RC_TRYHELP)
        return None

    def bad_option(self) -> str:
        """poptBadOption(con, POPT_BADOPTION_NOALIAS): the last arg read."""
        return self.argv[self.next - 1]

    def get_arg(self) -> str | None:
        return self.leftovers.pop(0) if self.leftovers else None


# --- ipvsadm's state while it parses (struct ipvs_command_entry, options, format) ------------

_PROTO = {"t": "tcp", "u": "udp", "sctp-service": "sctp"}
SERVICE_NONE, SERVICE_ADDR, SERVICE_PORT = 0, 1, 2


@dataclass
class _State:
    cmd: int = -1
    options: int = 0
    given: list[str] = field(default_factory=list)
    svc: c.ServiceSpec | None = None
    svc_af: int = 0  # AF_UNSPEC until a service is given
    svc_proto: str = ""  # ipvsadm's svc.protocol: tcp for -f too (service names for -r)
    dest: c.DestSpec | None = None
    forward: str = c.ROUTE  # ce.dest.conn_flags: IP_VS_CONN_F_DROUTE by default
    tun_type: int = 0
    sched_flags_arg: str = ""
    dest_extra: dict[str, object] = field(default_factory=dict)  # -w -x -y --tun-*: DestSpec fields
    fmt: c.ListFormat = field(default_factory=c.ListFormat)
    daemon: c.DaemonSpec = field(default_factory=c.DaemonSpec)
    timeouts: tuple[int, int, int] | None = None

    def set_option(self, name: str) -> None:
        bit = 1 << _BIT[name]
        if self.options & bit:
            raise _fail(f"multiple '{name}' options specified")
        self.options |= bit
        self.given.append(name)

    def has(self, name: str) -> bool:
        return bool(self.options & (1 << _BIT[name]))

    def service(self) -> c.ServiceSpec:
        if self.svc is None:
            self.svc = c.ServiceSpec(af=0)
        return self.svc


def _parse_service(buf: str, proto: str) -> tuple[int, str, int, int]:
    """ipvsadm.c parse_service: (SERVICE_* bits, address, af, port) of host[:port],
    [v6addr]:port or a bare IPv6 address."""
    if not buf or buf.isdigit() and buf.isascii():
        return SERVICE_NONE, "", 0, 0
    portp: str | None = None
    if buf[0] == "[":
        host, bracket, after = buf[1:].partition("]")
        if not bracket or not after.startswith(":"):
            return SERVICE_NONE, "", 0, 0
        buf, portp = host, after[1:]
    v6 = inet_pton6(buf)
    if v6 is not None:
        address, af = inet_ntop6(v6), 6
    else:
        # strrchr(buf, ':') again: for "[1.2.3.4]:80" the ':' was cut off, so no port at all
        host, colon, p = buf.rpartition(":")
        portp = p if colon else None
        if colon:
            buf = host
        a = inet_aton(buf)
        if a is not None:
            address, af = _dotted(a), 4
        else:
            resolved = gethostbyname(buf)
            if resolved is None:
                return SERVICE_NONE, "", 0, 0
            address, af = resolved, 4
    if portp is None:
        return SERVICE_ADDR, address, af, 0
    port = string_to_number(portp, 0, PORT_MAX)
    if port is None:
        port = getservbyname(portp, proto) if proto else None
        if port is None:
            return SERVICE_NONE, "", 0, 0
    return SERVICE_ADDR | SERVICE_PORT, address, af, port


def _parse_fwmark(buf: str) -> int:
    value, used = _strtol(buf)
    # an unsigned long: a negative value is huge, so "l <= 0 || l > UINT_MAX" leaves 1..UINT_MAX
    if used == 0 or used != len(buf) or not 1 <= value <= UINT_MAX:
        raise _fail(f"invalid fwmark value `{buf}' specified")
    return value


def _parse_timeout(buf: str | None, lo: int, hi: int) -> int:
    if buf is None:
        return PERSISTENT_DEFAULT  # "it is just for parsing timeout of persistent service"
    value = string_to_number(buf, lo, hi)
    if value is None:
        raise _fail(f"invalid timeout value `{buf}' specified")
    return value


def _parse_netmask(buf: str) -> str | None:
    a = inet_aton(buf)
    if a is not None:
        return _dotted(a)
    return gethostbyname(buf)


def _number(buf: str, lo: int, hi: int, what: str) -> int:
    value = string_to_number(buf, lo, hi)
    if value is None:
        raise _fail(f"illegal {what} specified")
    return value


def _parse_sched_flags(sched: str, arg: str) -> int:
    sched = sched or DEF_SCHED
    words = [w for w in arg.split(",") if w]  # strtok(optarg, ",")
    if not words:
        raise ParseError("", RC_SEGV)  # strcmp(NULL, ...): ipvsadm dies of SIGSEGV, says nothing
    flags = 0
    for word in words:
        if word not in SCHED_FLAG_WORDS:
            raise _fail(f"invalid scheduler flag `{word}'")
        bit, needs = SCHED_FLAG_WORDS[word]
        flags |= bit
        if needs is not None and sched != needs:
            raise _fail(f"incompatible scheduler flag `{word}'")
    return flags


def _option(st: _State, val: str, arg: str | None, popt: _Popt) -> None:
    """One option after the command: the switch in parse_options' while loop."""
    if val in ("t", "u", "sctp-service"):
        st.set_option("service-address")
        st.svc_proto = _PROTO[val]
        svc = st.service()
        parse, address, af, port = _parse_service(arg or "", st.svc_proto)
        if not parse & SERVICE_ADDR:
            raise _fail("illegal virtual server address[:port] specified")
        svc.protocol, svc.address, svc.af, svc.port = st.svc_proto, address, af, port
        st.svc_af = af
        if af == 6:
            svc.netmask = None  # svc->netmask = 128: an IPv6 service's default, whatever -M said before
    elif val == "f":
        st.set_option("service-address")
        st.svc_af, st.svc_proto = 4, "tcp"  # "a sane value, even though it is not used"
        svc = st.service()
        svc.af, svc.protocol, svc.fwmark = 4, "", _parse_fwmark(arg or "")
    elif val == "s":
        st.set_option("scheduler")
        st.service().scheduler = (arg or "")[: SCHEDNAME_MAXLEN - 1] or None
    elif val == "p":
        st.set_option("persistent")
        st.service().persistent = _parse_timeout(arg, 1, MAX_TIMEOUT)
    elif val == "M":
        st.set_option("netmask")
        if st.svc_af != 6:
            mask = _parse_netmask(arg or "")
            if mask is None:
                raise _fail("illegal virtual server persistent mask specified")
            st.service().netmask = mask
        else:
            bits = _atoi(arg or "")
            if not 1 <= bits <= IPV6_NETMASK_MAX:
                raise _fail("illegal ipv6 netmask specified")
            st.service().netmask = str(bits)
    elif val == "r":
        st.set_option("real-server")
        parse, address, af, port = _parse_service(arg or "", st.svc_proto)
        if not parse & SERVICE_ADDR:
            raise _fail("illegal real server address[:port] specified")
        # no port: ipvsadm copies the service's port now (None: the service's; 0 when -r came first)
        given_port = port if parse & SERVICE_PORT else (None if st.has("service-address") else 0)
        st.dest = st.dest or c.DestSpec()
        st.dest.address, st.dest.af, st.dest.port = address, af, given_port
    elif val in ("i", "g", "m"):
        st.set_option("forwarding-method")
        st.forward = {"i": c.TUNNEL, "g": c.ROUTE, "m": c.MASQ}[val]
    elif val == "w":
        st.set_option("weight")
        st.dest_extra["weight"] = _number(arg or "", 0, WEIGHT_MAX, "weight")
    elif val == "x":
        st.set_option("u-threshold")
        st.dest_extra["u_threshold"] = _number(arg or "", 0, THRESHOLD_MAX, "u_threshold")
    elif val == "y":
        st.set_option("l-threshold")
        st.dest_extra["l_threshold"] = _number(arg or "", 0, THRESHOLD_MAX, "l_threshold")
    elif val == "c":
        st.set_option("connection")
        st.fmt.connection = True
    elif val == "n":
        st.set_option("numeric")
        st.fmt.numeric = True
    elif val == "mcast-interface":
        st.set_option("mcast-interface")
        st.daemon.mcast_interface = (arg or "")[: IFNAME_MAXLEN - 1]
    elif val == "I":
        st.set_option("syncid")
        st.daemon.syncid = _number(arg or "", 0, SYNCID_MAX, "syncid")
    elif val in _LIST_FLAGS:
        name, attr = _LIST_FLAGS[val]
        st.set_option(name)
        setattr(st.fmt, attr, True)
    elif val == "sort":
        pass  # "Sort is the default, this is a no-op for compatibility"
    elif val == "6":
        if st.svc is None or not st.svc.fwmark:
            raise _fail("-6 used before -f\n")  # fail() adds its own "\n": a blank line follows
        st.svc.af, st.svc.netmask, st.svc_af = 6, None, 6
        if "ipv6" not in st.given:
            st.given.append("ipv6")
    elif val == "o":
        st.set_option("ops")
        st.service().ops = True
    elif val == "pe":
        st.set_option("pe")
        st.service().pe = (arg or "")[:PENAME_MAXLEN] or None
    elif val == "b":
        st.set_option("sched-flags")
        st.sched_flags_arg = (arg or "")[: SCHED_FLAGS_ARG_LEN - 1]
    elif val == "mcast-group":
        st.set_option("mcast-group")
        st.daemon.mcast_group = _mcast_group(arg or "")
    elif val == "mcast-port":
        st.set_option("mcast-port")
        st.daemon.mcast_port = _number(arg or "", 1, PORT_MAX, "mcast-port")
    elif val == "mcast-ttl":
        st.set_option("mcast-ttl")
        st.daemon.mcast_ttl = _number(arg or "", 1, MCAST_TTL_MAX, "mcast-ttl")
    elif val == "sync-maxlen":
        st.set_option("sync-maxlen")
        st.daemon.sync_maxlen = _number(arg or "", 1, SYNC_MAXLEN_MAX, "sync-maxlen")
    elif val == "tun-type":
        st.set_option("tun-type")
        if arg not in TUN_TYPES:
            raise _fail("illegal tunnel type specified")
        st.tun_type = TUN_TYPES.index(arg)
        st.dest_extra["tun_type"] = arg
    elif val == "tun-port":
        st.set_option("tun-port")
        st.dest_extra["tun_port"] = _number(arg or "", 1, PORT_MAX, "tunnel port")
    elif val in _TUN_FLAG:
        st.set_option(val)
        st.dest_extra["tun_flags"] = _TUN_FLAG[val]
    else:  # a second command, -h, -v, --set, --start-daemon... after the first option
        raise _fail(f"invalid option `{popt.bad_option()}'")


_LIST_FLAGS = {
    "timeout": ("timeout", "timeout"), "daemon": ("daemon", "daemon"), "stats": ("stats", "stats"),
    "rate": ("rate", "rate"), "thresholds": ("thresholds", "thresholds"),
    "persistent-conn": ("persistent-conn", "persistent_conn"), "nosort": ("nosort", "nosort"),
    "X": ("exact", "exact"), "tun-info": ("tun-info", "tun_info"), "j": ("json", "json"),
}  # fmt: skip


def _mcast_group(arg: str) -> str:
    if ":" in arg:
        b = inet_pton6(arg)
        if b is None or b[0] != 0xFF:  # IN6_IS_ADDR_MULTICAST
            raise _fail(f"invalid IPv6 mcast-group `{arg}'")
        return inet_ntop6(b)
    b = inet_pton4(arg)
    if b is None or b[0] & 0xF0 != 0xE0:  # IN_MULTICAST: 224.0.0.0/4
        raise _fail(f"invalid IPv4 mcast-group `{arg}'")
    return ".".join(str(x) for x in b)


def _generic_opt_check(cmd: int, options: int) -> None:
    row = COMMANDS_V_OPTIONS[cmd]
    last = -1
    for j, rule in enumerate(row):
        if not options & (1 << j):
            if rule == "+":
                raise _fail(f"You need to supply the '{OPTNAMES[j]}' option for the '{CMDNAMES[cmd]}' command")
            continue
        if rule == "x":
            raise _fail(f"Illegal '{OPTNAMES[j]}' option with the '{CMDNAMES[cmd]}' command")
        if rule == "1":
            if last < 0:
                last = j
                continue
            raise _fail(f"The option '{OPTNAMES[j]}' conflicts with the '{OPTNAMES[last]}' option "
                        f"in the '{CMDNAMES[cmd]}' command")  # fmt: skip


def _tunnel_opt_check(tun_type: int, options: int) -> None:
    row, name = TUNNEL_TYPES_V_OPTIONS[tun_type], TUN_TYPES[tun_type]
    last = ""
    for rule, opt in zip(row, _TUN_OPTS, strict=True):
        if not options & (1 << _BIT[opt]):
            if rule == "+":
                raise _fail(f"You need to supply the '{opt}' option for the '{name}' tunnel type")
            continue
        if rule == "x":
            raise _fail(f"Illegal '{opt}' option with the '{name}' tunnel type")
        if rule == "1":
            if not last:
                last = opt
                continue
            raise _fail(f"The option '{opt}' conflicts with the '{last}' option in the '{name}' tunnel type")


# --- parse -----------------------------------------------------------------------------------


def parse(argv: list[str], *, prog: str = PROG, restoring: bool = False) -> c.Command:
    """An ipvsadm command line (without the program name) as ipvsadm 1.31 reads it.

    ``prog`` is argv[0] (it is in the "Try ..." message); ``restoring``: a line of -R's
    stdin (a -R there is refused).  Raises ParseError for what ipvsadm refuses itself.
    """
    if not argv and not restoring:
        return c.Command(command=c.LIST)  # main(): no argument lists the table
    popt = _Popt([prog, *argv])
    st = _State()
    first = popt.get_next_opt()
    if isinstance(first, int) or first not in (*_FIRST, "h", "v"):
        raise _tryhelp(prog)
    if first == "h":
        return c.Command(command=c.HELP)  # usage_exit(argv[0], 0): the rest is never read
    if first == "v":
        return c.Command(command=c.VERSION)
    st.cmd = _FIRST[first]
    if st.cmd in (CMD_STARTDAEMON, CMD_STOPDAEMON):
        if popt.arg not in ("master", "backup"):
            what = "start-daemon parameter" if st.cmd == CMD_STARTDAEMON else "start_daemon"
            raise _fail(f"illegal {what} specified")
        st.daemon.state = popt.arg
    while True:
        val = popt.get_next_opt()
        if isinstance(val, int):
            break
        _option(st, val, popt.arg, popt)
    if val < END:  # popt's error: parse_options prints it and returns -1 (ipvsadm -R reads on)
        raise ParseError(f"{popt.bad_option()}: {_POPT_ERRORS[val]}\n", RC_TRYHELP, exits=False)
    if st.cmd == CMD_TIMEOUT:
        values = [popt.get_arg() for _ in range(3)]
        if None in values:
            raise _fail("--set option requires 3 timeout values")
        st.timeouts = tuple(_parse_timeout(v, 0, MAX_TIMEOUT) for v in values)  # type: ignore[assignment]
    extra = popt.get_arg()
    if extra is not None:
        raise _fail(f"unexpected argument {extra}")
    if st.sched_flags_arg:
        sched = st.svc.scheduler if st.svc is not None else None
        st.service().sched_flags = _parse_sched_flags(sched or "", st.sched_flags_arg)
    return _process(st, prog, restoring)


def _process(st: _State, prog: str, restoring: bool) -> c.Command:
    """process_options from generic_opt_check to the kernel call."""
    _generic_opt_check(st.cmd, st.options)
    svc = st.svc
    if st.cmd in (CMD_ADD, CMD_EDIT):
        assert svc is not None  # service-address is compulsory
        if not svc.fwmark and not svc.port and svc.persistent is None:
            raise _fail("Zero port specified for non-persistent service")
        if svc.ops and not svc.fwmark and svc.protocol != "udp":
            raise _fail("One-Packet Scheduling is only for UDP virtual services")
    if st.cmd in (CMD_ADDDEST, CMD_EDITDEST):
        assert svc is not None and st.dest is not None
        if st.dest.af != st.svc_af and st.forward != c.TUNNEL:
            raise _fail("Different address family is allowed only for tunneling servers")
        if any(st.has(o) for o in _TUN_OPTS + ("tun-type",)) and st.forward != c.TUNNEL:
            raise _fail("Tunnel options conflict with forward method")
        _tunnel_opt_check(st.tun_type, st.options)
    if st.cmd == CMD_LIST:
        o = st.has
        if ((o("connection") or o("timeout") or o("daemon")) and (o("stats") or o("rate") or o("thresholds"))) or (
            (o("timeout") or o("daemon")) and o("persistent-conn")
        ):
            raise _fail("options conflicts in the list command")
    if st.cmd == CMD_RESTORE and restoring:
        raise _tryhelp(prog)  # restore_table: "avoid infinite loop"
    dest = st.dest
    if dest is not None:
        dest.forward = st.forward if st.has("forwarding-method") else None
        for name, value in st.dest_extra.items():
            setattr(dest, name, value)
    if svc is not None and svc.af == 0:
        svc.af = 4  # only the options that go with a service were given (refused above anyway)
    daemon = st.daemon if st.cmd in (CMD_STARTDAEMON, CMD_STOPDAEMON) else None
    return c.Command(command=_COMMAND_OF[st.cmd], service=svc, dest=dest, daemon=daemon, list=st.fmt,
                     timeouts=st.timeouts, given=tuple(st.given))  # fmt: skip


# --- ipvsadm -R ------------------------------------------------------------------------------

_RESTORE_WS = " \t\n\r"  # config_stream_read's separators (not \v or \f)


def restore_argvs(text: str) -> Iterator[list[str]]:
    """The command lines ``ipvsadm -R`` runs from ``text`` (its stdin), as config_stream.c
    reads them: tokens split on space, tab, CR; a line ends at LF; every token "ipvsadm" is
    dropped; lines with no token left are skipped; '#' starts no comment.  At the end of
    the input a last line without LF still runs, unless white space follows its last token
    and more than one character of it (fscanf then meets EOF in the white-space loop and the
    line is dropped)."""
    pos, n = 0, len(text)
    while True:
        tokens: list[str] = []
        ntoken = 0
        line_done = False
        while not line_done:
            if pos >= n:  # fscanf: EOF
                if ntoken == 0:
                    return
                break
            if text[pos] in _RESTORE_WS:  # fscanf matched nothing: skip white space by hand
                while True:
                    if pos >= n:
                        return  # EOF here drops the line being read
                    ch = text[pos]
                    pos += 1
                    if ch == "\n":
                        line_done = True
                        break
                    if ch not in "\t\r ":
                        pos -= 1  # ungetc
                        break
                continue
            end = pos
            while end < n and end - pos < MAX_LINE_LENGTH and text[end] not in _RESTORE_WS:
                end += 1
            token, pos = text[pos:end], end
            tail = ""
            if pos < n and text[pos] in _RESTORE_WS:
                tail, pos = text[pos], pos + 1
            if token != "ipvsadm":
                tokens.append(token)
                ntoken += 1
            if tail == "\n":
                line_done = True
        if tokens:
            yield tokens


def parse_restore_line(line: str, *, prog: str = PROG) -> c.Command | None:
    """One line of ``ipvsadm -R``'s stdin: None for a line it skips (no tokens), else the
    Command (help/version included: ipvsadm prints it and exits 0, ending the restore).
    ParseError as ``parse``; with ``exits`` False ipvsadm goes on with the next line."""
    for tokens in restore_argvs(line if line.endswith("\n") else line + "\n"):
        return parse(tokens, prog=prog, restoring=True)
    return None
