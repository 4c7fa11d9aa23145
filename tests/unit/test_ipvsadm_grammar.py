"""pylvs.ipvsadm.grammar: ipvsadm 1.31's command line, checked against the real ipvsadm.

The golden captures (``tests/data/kernel-ipvs``) are the data: every invocation
ipvsadm refused itself must raise ParseError with its exact stderr and exit code, every
other one must parse.  REAL_BINARY_CASES add corners the captures do not reach, with what
Debian 12's ipvsadm 1:1.31-1+b1 printed for them (run on a host without IPVS through an
LD_PRELOAD shim that answers its IPVS getsockopt/setsockopt calls; parsing comes first).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pylvs.ipvsadm import command as c
from pylvs.ipvsadm import grammar as g

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "kernel-ipvs"
GOLDEN_FILES = ("ipvsadm.jsonl", "ipvsadm-traffic.jsonl")
TRYHELP = "Try `ipvsadm -h' or 'ipvsadm --help' for more information.\n"
POPT_ERRORS = (": unknown option\n", ": missing argument\n", ": option does not take an argument\n")
KERNEL_ERRORS = {  # libipvs ipvs_strerror: what the kernel refuses, after a good parse
    "Service already exists", "Destination already exists", "No such destination", "Service not defined",
    "No such service", "Numerical result out of range", "Scheduler or persistence engine not found",
    "Daemon has already run", "No such device", "No daemon is running",
}  # fmt: skip

# Names the tests resolve, without DNS or /etc/services.
HOSTS = {"localhost": "127.0.0.1"}
SERVICES = {("http", "tcp"): 80, ("https", "tcp"): 443, ("domain", "udp"): 53, ("domain", "tcp"): 53}


@pytest.fixture(autouse=True)
def offline_names(monkeypatch):
    monkeypatch.setattr(g, "gethostbyname", lambda name: HOSTS.get(name))  # nosuchhost.invalid: None
    monkeypatch.setattr(g, "getservbyname", lambda name, proto: SERVICES.get((name, proto)))


def _records() -> list[dict]:
    out = []
    for name in GOLDEN_FILES:
        for line in (GOLDEN / name).read_text().splitlines():
            r = json.loads(line)
            if "kind" not in r and r["argv"][:1] == ["ipvsadm"]:  # not traffic, cat or sysctl
                out.append(r)
    by_id = {r["id"]: r for r in out}
    for r in out:  # a stdin of "@ID" is the stdout of step ID
        if (r.get("stdin") or "").startswith("@"):
            r["stdin"] = by_id[r["stdin"][1:]]["stdout"]
    return out


RECORDS = _records()


def _is_parse_error(r: dict) -> bool:
    return r["rc"] == 2 or (r["rc"] == 255 and (r["stderr"] == TRYHELP or r["stderr"].endswith(POPT_ERRORS)))


def _restore(text: str) -> tuple[int, str]:
    """ipvsadm -R's userland part over ``text``: (exit code, what the parser printed)."""
    rc, err = 0, ""
    for tokens in g.restore_argvs(text):
        try:
            cmd = g.parse(tokens, restoring=True)
        except g.ParseError as exc:
            err += exc.stderr
            if exc.exits:
                return exc.rc, err
            rc = g.RC_TRYHELP
            continue
        rc = 0
        if cmd.command in (c.HELP, c.VERSION):
            break
    return rc, err


def _ids(records: list[dict]) -> list[str]:
    return [r["id"] for r in records]


PARSE_ERRORS = [r for r in RECORDS if _is_parse_error(r) and not r.get("stdin")]
ACCEPTED = [r for r in RECORDS if not _is_parse_error(r) and not r.get("stdin")]
RESTORES = [r for r in RECORDS if r.get("stdin")]


# --- The golden captures ---------------------------------------------------------------------


def test_the_captures_hold_what_this_file_expects():
    assert len(PARSE_ERRORS) >= 40 and len(ACCEPTED) >= 150 and len(RESTORES) == 3
    for r in ACCEPTED:  # the rest: success, or the kernel's refusal of a good command line
        assert r["rc"] == 0 or r["stderr"].splitlines()[0] in KERNEL_ERRORS, r["id"]


@pytest.mark.parametrize("r", PARSE_ERRORS, ids=_ids(PARSE_ERRORS))
def test_parse_errors_are_ipvsadms(r):
    with pytest.raises(g.ParseError) as exc:
        g.parse(r["argv"][1:])
    assert (exc.value.stderr, exc.value.rc, exc.value.stdout) == (r["stderr"], r["rc"], r["stdout"])


@pytest.mark.parametrize("r", ACCEPTED, ids=_ids(ACCEPTED))
def test_everything_else_parses(r):
    cmd = g.parse(r["argv"][1:])
    if cmd.command == c.HELP:
        assert r["stdout"] == g.HELP_TEXT
    elif cmd.command == c.VERSION:
        assert r["stdout"] == g.VERSION_TEXT
    c.Command.from_json(json.loads(json.dumps(cmd.to_json())))  # it crosses the control socket


@pytest.mark.parametrize("r", RESTORES, ids=_ids(RESTORES))
def test_restore_stdin(r):
    assert g.parse(r["argv"][1:]).command == c.RESTORE
    rc, err = _restore(r["stdin"])
    if _is_parse_error(r):  # rt-restore-garbage: "this is not a command" ends it
        assert (rc, err) == (r["rc"], r["stderr"])
    else:  # every line parses; the kernel refused some (rt-restore-dup)
        assert (rc, err) == (0, "")


@pytest.mark.parametrize("ident,argv", [("help", ["-h"]), ("help-long", ["--help"]), ("version", ["--version"]),
                                        ("v", ["-v"])])  # fmt: skip
def test_help_and_version_texts(ident, argv):
    (r,) = [x for x in RECORDS if x["id"] == ident]
    cmd = g.parse(argv)
    text = g.HELP_TEXT if cmd.command == c.HELP else g.VERSION_TEXT
    assert cmd.command == (c.HELP if ident.startswith("help") else c.VERSION)
    assert (text, 0, "") == (r["stdout"], r["rc"], r["stderr"])


def test_help_text_names_the_program():
    assert g.help_text("/sbin/ipvsadm").count("/sbin/ipvsadm -") == 13
    assert g.HELP_TEXT.startswith(g.VERSION_TEXT + "Usage:\n  ipvsadm -A|E virtual-service")
    assert g.parse(["-h", "--bogus"]).command == c.HELP  # usage_exit: the rest is never read
    assert g.parse(["foo", "-v"]).command == c.VERSION  # leftovers before the first option


# --- What the real binary printed, beyond the captures ---------------------------------------

S = "10.1.0.1:80"
REAL_BINARY_CASES = [
    (["-A", "-t", S, "-s", "rr", "-Q"], 255, "-Q: unknown option\n"),
    (["-L", "--bogus=3"], 255, "--bogus=3: unknown option\n"),
    (["-L", "-nQ"], 255, "-nQ: unknown option\n"),
    (["-L", "--numeric=1"], 255, "--numeric=1: option does not take an argument\n"),
    (["-L", "-n="], 255, "-n=: option does not take an argument\n"),
    (["-A", "-t"], 255, "-t: missing argument\n"),
    (["-Lt"], 255, "-Lt: missing argument\n"),
    (["-A", "--start-daemon", "master"], 2, "invalid option `master'\n"),  # the last arg read
    (["-L", "-h"], 2, "invalid option `-h'\n"),
    (["-AD"], 2, "invalid option `-AD'\n"),
    (["-list"], 2, "Illegal 'scheduler' option with the 'list' command\n"),  # -l -i -s t
    (["-t", S, "-A"], 255, TRYHELP),
    (["foo"], 255, TRYHELP),
    (["-L", "foo", "bar"], 2, "unexpected argument foo\n"),
    (["-L", "--", "-n"], 2, "unexpected argument -n\n"),
    (["--set", "1", "2", "3", "-n"], 2, "Illegal 'numeric' option with the 'set' command\n"),
    (["--set", "1", "2", "x"], 2, "invalid timeout value `x' specified\n"),
    (["--start-daemon", "Master"], 2, "illegal start-daemon parameter specified\n"),
    (["--stop-daemon", "foo"], 2, "illegal start_daemon specified\n"),
    (["--start-daemon", "master", "--mcast-group", "10.0.0.1"], 2, "invalid IPv4 mcast-group `10.0.0.1'\n"),
    (["--start-daemon", "master", "--mcast-group", "fe80::1"], 2, "invalid IPv6 mcast-group `fe80::1'\n"),
    (["--start-daemon", "master", "--mcast-port", "0"], 2, "illegal mcast-port specified\n"),
    (["--start-daemon", "master", "--mcast-ttl", "256"], 2, "illegal mcast-ttl specified\n"),
    (["--start-daemon", "master", "--sync-maxlen", "65508"], 2, "illegal sync-maxlen specified\n"),
    (["--stop-daemon", "master", "--mcast-interface", "x"], 2,
     "Illegal 'mcast-interface' option with the 'stop-daemon' command\n"),
    (["-L", "-c", "--stats"], 2, "options conflicts in the list command\n"),
    (["-L", "--timeout", "--daemon"], 2,
     "The option 'daemon' conflicts with the 'timeout' option in the 'list' command\n"),
    (["-L", "--daemon", "--persistent-conn"], 2, "options conflicts in the list command\n"),
    (["-L", "-s", "rr"], 2, "Illegal 'scheduler' option with the 'list' command\n"),
    (["-L", "-w", "abc"], 2, "illegal weight specified\n"),  # values are checked as they come
    (["-L", "-n", "-n"], 2, "multiple 'numeric' options specified\n"),
    (["-A", "-t", "80"], 2, "illegal virtual server address[:port] specified\n"),
    (["-A", "-t", "[::1]"], 2, "illegal virtual server address[:port] specified\n"),
    (["-A", "-t", "::1"], 2, "Zero port specified for non-persistent service\n"),
    (["-A", "-t", "[1.2.3.4]:80"], 2, "Zero port specified for non-persistent service\n"),
    (["-A", "-t", S, "-M", "bogus"], 2, "illegal virtual server persistent mask specified\n"),
    (["-A", "-t", "[2001:db8::1]:80", "-M", "129"], 2, "illegal ipv6 netmask specified\n"),
    (["-A", "-f", "4294967296"], 2, "invalid fwmark value `4294967296' specified\n"),
    (["-A", "-f", "-1"], 2, "invalid fwmark value `-1' specified\n"),
    (["-A", "-t", S, "-b", "sh-port"], 2, "incompatible scheduler flag `sh-port'\n"),
    (["-A", "-t", S, "-s", "sh", "-b", "sh-port,mh-port"], 2, "incompatible scheduler flag `mh-port'\n"),
    (["-A", "-t", S, "-b", "bogus", "extra"], 2, "unexpected argument extra\n"),
    (["-A", "-u", "1.2.3.4:0", "-o"], 2, "Zero port specified for non-persistent service\n"),
    (["-A", "-t", S, "-t", S], 2, "multiple 'service-address' options specified\n"),
    (["-a", "-t", S, "-r", "1.2.3.4", "-m", "-i"], 2, "multiple 'forwarding-method' options specified\n"),
    (["-a", "-t", S, "-r", "1.2.3.4", "-m", "--tun-csum"], 2, "Tunnel options conflict with forward method\n"),
    (["-a", "-t", S, "-r", "1.2.3.4", "-i", "--tun-type", "gre", "--tun-remcsum"], 2,
     "Illegal 'tun-remcsum' option with the 'gre' tunnel type\n"),
    (["-a", "-t", S, "-r", "1.2.3.4", "-i", "--tun-type", "gue", "--tun-port", "5", "--tun-csum", "--tun-remcsum"], 2,
     "The option 'tun-remcsum' conflicts with the 'tun-csum' option in the 'gue' tunnel type\n"),
    (["-a", "-t", S, "-r", "1.2.3.4", "-i", "--tun-type", "gue", "--tun-port", "0"], 2,
     "illegal tunnel port specified\n"),
    (["-a", "-r", "1.2.3.4:http", "-t", S], 2, "illegal real server address[:port] specified\n"),  # no protocol yet
    (["-a", "-t", S, "-r", "1.2.3.4", "-y", "2147483648"], 2, "illegal l_threshold specified\n"),
    (["-a", "-f", "1", "-6", "-r", "1.2.3.4"], 2, "Different address family is allowed only for tunneling servers\n"),
    (["-A", "-6", "-f", "1"], 2, "-6 used before -f\n\n"),
    (["-A", "-t", S, "-p", "2678401"], 2, "invalid timeout value `2678401' specified\n"),
    (["-C", "-n"], 2, "Illegal 'numeric' option with the 'flush' command\n"),
    (["-R", "-n"], 2, "Illegal 'numeric' option with the 'restore' command\n"),
    (["-Z", "-n"], 2, "Illegal 'numeric' option with the 'zero' command\n"),
    (["-D", "-t", S, "-s", "rr"], 2, "Illegal 'scheduler' option with the 'delete-service' command\n"),
]


@pytest.mark.parametrize("argv,rc,stderr", REAL_BINARY_CASES, ids=[" ".join(a) for a, _, _ in REAL_BINARY_CASES])
def test_what_the_real_binary_printed(argv, rc, stderr):
    with pytest.raises(g.ParseError) as exc:
        g.parse(argv)
    assert (exc.value.stderr, exc.value.rc) == (stderr, rc)
    assert exc.value.exits == (not stderr.endswith(POPT_ERRORS))  # popt's errors do not stop -R


def test_odd_corners():
    # -b ',': strtok finds no word and ipvsadm dies of SIGSEGV, silently
    with pytest.raises(g.ParseError) as exc:
        g.parse(["-A", "-t", S, "-b", ","])
    assert (exc.value.stderr, exc.value.rc) == ("", g.RC_SEGV)
    # popt's '!#:+' takes the next non-option arg out of the line...
    cmd = g.parse(["-A", "-t", S, "-s", "w!#:+", "rr", "-p"])
    assert (cmd.service.scheduler, cmd.service.persistent) == ("wrr", 360)
    # ...and loops forever in ipvsadm when args remain but none fits
    with pytest.raises(g.ParseError) as exc:
        g.parse(["-A", "-t", S, "-s", "!#:+", "-p"])
    assert exc.value.stderr == g.HANG_MESSAGE
    # -b with an empty argument is no -b at all, after set_option
    assert g.parse(["-A", "-t", S, "-b", ""]).service.sched_flags == 0


# --- The Command a command line makes --------------------------------------------------------


def test_add_service_long_options_and_defaults():
    cmd = g.parse(["--add-service", "--tcp-service", "10.1.0.44:8080", "--scheduler", "wlc", "--persistent", "30",
                   "--netmask", "255.255.0.0"])  # fmt: skip
    assert cmd.command == c.ADD_SERVICE
    assert cmd.service == c.ServiceSpec(protocol="tcp", address="10.1.0.44", port=8080, scheduler="wlc",
                                        persistent=30, netmask="255.255.0.0")  # fmt: skip
    assert cmd.given == ("service-address", "scheduler", "persistent", "netmask")
    assert cmd.dest is None and cmd.daemon is None and cmd.timeouts is None
    plain = g.parse(["-A", "-t", S])
    assert (plain.service.scheduler, plain.service.persistent, plain.service.netmask) == (None, None, None)


def test_persistent_without_value_is_360_and_clusters():
    for argv in (["-A", "-t", "10.1.0.30:80", "-s", "rr", "-p"], ["-A", "-t", "10.1.0.30:80", "-p", "-s", "rr"],
                 ["-At10.1.0.30:80", "-srr", "-p"]):  # fmt: skip
        svc = g.parse(argv).service
        assert (svc.address, svc.port, svc.scheduler, svc.persistent) == ("10.1.0.30", 80, "rr", g.PERSISTENT_DEFAULT)
    with pytest.raises(g.ParseError, match="invalid timeout value `s' specified"):
        g.parse(["-A", "-t", S, "-ps", "rr"])  # the rest of a cluster is the argument, as the binary says
    assert g.parse(["-A", "-t", S, "-p60"]).service.persistent == 60
    assert g.parse(["-A", "-t", S, "--persistent=60"]).service.persistent == 60
    assert g.parse(["-A", "-t", "10.1.0.32:0", "-p", "60"]).service.port == 0  # port 0 needs -p


def test_service_names_hosts_and_ipv6():
    cmd = g.parse(["-a", "-t", "10.1.0.41:http", "-r", "192.168.10.41:https", "-m"])
    assert (cmd.service.port, cmd.dest.address, cmd.dest.port, cmd.dest.forward) == (80, "192.168.10.41", 443, c.MASQ)
    assert g.parse(["-A", "-u", "localhost:domain"]).service.address == "127.0.0.1"
    assert g.parse(["-A", "-t", "0x0a010001:80"]).service.address == "10.1.0.1"  # inet_aton's forms
    svc = g.parse(["-A", "-t", "[2001:DB8:0:0::1]:80", "-M", "64"]).service
    assert (svc.af, svc.address, svc.port, svc.netmask) == (6, "2001:db8::1", 80, "64")
    fwm = g.parse(["-A", "-f", "3", "-6", "-s", "wrr"])
    assert (fwm.service.fwmark, fwm.service.af, fwm.service.protocol, fwm.given) == (3, 6, "", ("service-address",
                                                                                            "ipv6", "scheduler"))
    d = g.parse(["-a", "-t", "[2001:db8::1]:80", "-r", "[2001:db8::10]:8080", "-m"]).dest
    assert (d.af, d.address, d.port) == (6, "2001:db8::10", 8080)
    assert g.parse(["-A", "--sctp-service", "10.1.0.43:9999"]).service.protocol == "sctp"
    with pytest.raises(g.ParseError, match="illegal virtual server"):
        g.parse(["-A", "-t", "nosuchhost.invalid:80"])


def test_real_servers_and_what_was_given():
    cmd = g.parse(["-a", "-t", S, "-r", "192.168.10.1", "-g", "-x", "100", "-y", "50"])
    assert cmd.dest == c.DestSpec(address="192.168.10.1", port=None, forward=c.ROUTE, u_threshold=100, l_threshold=50)
    assert cmd.given == ("service-address", "real-server", "forwarding-method", "u-threshold", "l-threshold")
    # -e without -w: the weight was not given (and goes back to 1: table.py's business)
    e = g.parse(["-e", "-t", S, "-r", "192.168.10.2:80", "-m"])
    assert (e.command, e.dest.weight, e.dest.forward, "weight" in e.given) == (c.EDIT_DEST, None, c.MASQ, False)
    w = g.parse(["-e", "-t", S, "-r", "192.168.10.2:80", "-m", "-w", "7"])
    assert (w.dest.weight, "weight" in w.given) == (7, True)
    assert g.parse(["-e", "-t", S, "-r", "1.2.3.4"]).dest.forward is None  # -g by default
    assert g.parse(["-a", "-t", S, "-r", "1.2.3.4", "-w", "2147483647"]).dest.weight == g.WEIGHT_MAX
    assert g.parse(["-a", "-r", "1.2.3.4", "-t", S, "-m"]).dest.port == 0  # ipvsadm copied the port before -t
    tun = g.parse(["-a", "-t", S, "-r", "1.2.3.5", "-i", "--tun-type", "gue", "--tun-port", "6080", "--tun-nocsum"])
    assert (tun.dest.forward, tun.dest.tun_type, tun.dest.tun_port, tun.dest.tun_flags) == (c.TUNNEL, "gue", 6080,
                                                                                            "nocsum")
    d = g.parse(["-d", "-f", "1", "-r", "192.168.10.2"])
    assert (d.command, d.service.fwmark, d.dest.address) == (c.DEL_DEST, 1, "192.168.10.2")


def test_scheduler_flags():
    def flags(sched, words):
        return g.parse(["-A", "-t", S, "-s", sched, "-b", words]).service.sched_flags

    assert flags("sh", "sh-fallback,sh-port") == c.SCHED_FLAG_1 | c.SCHED_FLAG_2
    assert flags("mh", "mh-fallback,mh-port") == c.SCHED_FLAG_1 | c.SCHED_FLAG_2
    assert flags("rr", "flag-1") == c.SCHED_FLAG_1 and flags("rr", "flag-2,flag-3") == c.SCHED_FLAG_2 | c.SCHED_FLAG_3
    assert g.parse(["-E", "-t", S, "-b", "sh-port", "-s", "sh"]).service.sched_flags == c.SCHED_FLAG_2  # any order
    with pytest.raises(g.ParseError) as exc:
        flags("sh", "bogus-flag")
    assert (exc.value.stderr, exc.value.rc) == ("invalid scheduler flag `bogus-flag'\n", 2)


def test_list_modifiers_set_and_daemons():
    ln = g.parse(["-Ln", "--stats", "--exact", "-t", S])
    assert (ln.command, ln.service.port) == (c.LIST, 80)
    assert (ln.list.numeric, ln.list.stats, ln.list.exact, ln.list.rate) == (True, True, True, False)
    assert g.parse(["-l", "-nc"]).list.connection and g.parse(["-L", "--persistent-conn", "-c"]).list.persistent_conn
    assert g.parse(["-Sn"]) == c.Command(command=c.SAVE, list=c.ListFormat(numeric=True), given=("numeric",))
    assert g.parse([]) == c.Command(command=c.LIST)  # no argument lists the table, names resolved
    assert g.parse(["-L", "-j"]).list.json and g.parse(["--list", "--json", "--daemon"]).list.daemon  # pylvs's
    with pytest.raises(g.ParseError, match="Illegal 'json' option with the 'save' command"):
        g.parse(["-S", "-j"])
    assert g.parse(["--set", "900", "120", "300"]).timeouts == (900, 120, 300)
    assert g.parse(["--set", "0", "60", "0"]).timeouts == (0, 60, 0)
    full = g.parse(["--start-daemon", "master", "--mcast-interface", "sync0", "--syncid", "7", "--sync-maxlen", "1000",
                    "--mcast-group", "224.0.0.100", "--mcast-port", "8849", "--mcast-ttl", "2"])  # fmt: skip
    assert (full.command, full.daemon) == (c.START_DAEMON, c.DaemonSpec("master", "sync0", 7, 1000, "224.0.0.100",
                                                                        8849, 2))
    stop = g.parse(["--stop-daemon", "backup"])
    assert (stop.command, stop.daemon.state, stop.daemon.mcast_interface) == (c.STOP_DAEMON, "backup", None)
    assert g.parse(["-Z"]) == c.Command(command=c.ZERO) and g.parse(["-C"]).command == c.FLUSH


# --- ipvsadm -R ------------------------------------------------------------------------------


def test_restore_reads_stdin_as_config_stream_does():
    text = "ipvsadm -A -t 10.1.0.1:80\n\n  \t\n-C\r\n# no comments\n-a\t-t 1.2.3.4:80 -r 5.6.7.8\n-Z  "
    assert list(g.restore_argvs(text)) == [["-A", "-t", "10.1.0.1:80"], ["-C"], ["#", "no", "comments"],
                                           ["-a", "-t", "1.2.3.4:80", "-r", "5.6.7.8"]]  # fmt: skip
    assert list(g.restore_argvs("-Z ")) == [["-Z"]]  # one blank after the last token at EOF: it runs
    assert list(g.restore_argvs("-s " + "r" * 4100 + "\n")) == [["-s", "r" * 4096, "rrrr"]]
    assert g.parse_restore_line("\n") is None and g.parse_restore_line("ipvsadm\n") is None
    assert g.parse_restore_line("-A -t 10.1.0.1:80 -s rr\n").service.scheduler == "rr"
    with pytest.raises(g.ParseError) as exc:
        g.parse_restore_line("# a comment")  # '#' is no comment: the line has no option
    assert (exc.value.stderr, exc.value.rc, exc.value.exits) == (TRYHELP, 255, True)
    with pytest.raises(g.ParseError) as exc:
        g.parse_restore_line("-R")  # restore_table: "avoid infinite loop"
    assert (exc.value.stderr, exc.value.rc) == (TRYHELP, 255)
    with pytest.raises(g.ParseError) as exc:
        g.parse_restore_line("-A -t")
    assert (exc.value.stderr, exc.value.rc, exc.value.exits) == ("-t: missing argument\n", 255, False)
    assert _restore("-A -t\n-C\n") == (0, "-t: missing argument\n")  # checked with the real binary
    assert _restore("-C\n-Q x\n-C\n") == (255, TRYHELP)
