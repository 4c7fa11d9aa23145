"""pylvs.netctl on a real kernel: NetCtl acts inside a NAT lab's director namespace.

The functions named ``in_dir1_*`` run in a Python process inside ``<lab>-dir1``
(Lab.call); a process that returns with rules still installed stands for a crashed
director (its NetCtl never tore down), which is what clean_stale is for.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from pylvs.config import check_text
from pylvs.lab import topology as topo
from pylvs.netctl import NetCtl, NetCtlError, plan_for

VIP = topo.VIP
FWMARK = 80


def _cf(body: str, network: str = "nat") -> str:
    head = f"serial_no = 1\nprimary = {topo.DIRECTOR_PUBLIC[0]}\nservice = lvs\nnetwork = {network}\n"
    if network == "nat":
        head += f"nat_router = {topo.NAT_ROUTER} {topo.PRIVATE_IF}:1\n"
    return head + body


def _virtual(name: str, port: int, proto: str = "tcp", extra: str = "") -> str:
    servers = "".join(f"  server rs{i} {{\n    address = 10.77.2.{topo.RS_FIRST + i - 1}\n    active = 1\n  }}\n"
                      for i in (1, 2))
    return (f"virtual {name} {{\n  active = 1\n  address = {VIP} {topo.PUBLIC_IF}:1\n  port = {port}\n"
            f"  protocol = {proto}\n  scheduler = rr\n{extra}{servers}}}\n")


NAT_CF = _cf(_virtual("http", topo.HTTP_PORT) + _virtual("echo", topo.UDP_ECHO_PORT, "udp"))
FWMARK_CF = _cf(_virtual("bundle", 80, extra=f"  fwmark = {FWMARK}\n"))
DR_CF = _cf(_virtual("http", topo.HTTP_PORT), network="direct")


# --- run inside dir1 --------------------------------------------------------------------------

def _sh(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def _snapshot() -> dict[str, str]:
    """What must be the same before and after: rules (without counters), addresses, forwarding."""
    save = "\n".join(re.sub(r"\[\d+:\d+\]", "", ln) for ln in _sh("iptables-nft-save").splitlines()
                     if not ln.startswith("#"))
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        fwd = f.read().strip()
    return {"iptables": save, "addr": _sh("ip", "-o", "-4", "addr"), "ip_forward": fwd,
            "nft": _sh("nft", "list", "ruleset")}


def _config(text: str):
    res = check_text(text)
    assert res.ok, res.diagnostics
    return res.config


def in_dir1_apply_teardown(text: str, capture: str = "nfqueue") -> dict:
    before = _snapshot()
    ctl = NetCtl()
    ctl.apply(plan_for(_config(text), capture=capture))
    during = {"raw": _sh("iptables-nft", "-t", "raw", "-S"), "mangle": _sh("iptables-nft", "-t", "mangle", "-S"),
              "filter": _sh("iptables-nft", "-S"), **_snapshot(), "warnings": ctl.warnings}
    ctl.teardown()
    ctl.teardown()  # idempotent
    ctl.close()
    return {"before": before, "during": during, "after": _snapshot()}


def in_dir1_apply_and_crash(text: str) -> dict:
    before = _snapshot()
    NetCtl().apply(plan_for(_config(text)))
    return before


def in_dir1_clean_stale() -> tuple[list[str], dict]:
    return NetCtl.clean_stale(), _snapshot()


def in_dir1_mark_late(text: str, late_rule: list[str]) -> dict:
    """Apply, then the operator appends a MARK rule (after our jump): warned; update()
    moves our jump after it.  Left installed (the test sends traffic, then cleans)."""
    ctl = NetCtl()
    plan = plan_for(_config(text))
    ctl.apply(plan)
    first = list(ctl.warnings)
    subprocess.run(["iptables-nft", "-t", "mangle", "-A", "PREROUTING", *late_rule], check=True)
    late = ctl.check_mark_order()
    ctl.update(plan)
    return {"first": first, "late": late, "after_update": ctl.warnings,
            "mangle": _sh("iptables-nft", "-t", "mangle", "-S", "PREROUTING")}


def in_dir1_capabilities():
    return NetCtl().capabilities()


def in_dir1_neighbour(ip: str, timeout: float = 2.0):
    with NetCtl() as ctl:
        return ctl.neighbour(ip, timeout=timeout)


# --- helpers on the test side -----------------------------------------------------------------

def _ipt(lab, *args: str) -> str:
    return lab.run("dir1", ["iptables-nft", *args]).stdout


def _mark_rule_packets(lab) -> int:
    """Packets counted by our `-m mark --mark 80` rule in PYLVS-IN."""
    out = _ipt(lab, "-t", "mangle", "-L", "PYLVS-IN", "-v", "-x", "-n")
    for line in out.splitlines():
        if f"mark match 0x{FWMARK:x}" in line:
            return int(line.split()[0])
    raise AssertionError(f"no mark rule in PYLVS-IN:\n{out}")


def _connect(lab, port: int) -> None:
    """One TCP connection attempt from client1 to the VIP (refused: nothing listens in dir1)."""
    with lab.socket("client1") as s:
        s.settimeout(2.0)
        s.connect_ex((VIP, port))


OPERATOR_FILTER = ["-A", "INPUT", "-p", "tcp", "--dport", "2222", "-j", "ACCEPT"]
OPERATOR_MANGLE = ["-t", "mangle", "-A", "PREROUTING", "-p", "tcp", "--dport", "2222", "-j", "MARK",
                   "--set-mark", "7"]


# --- the tests --------------------------------------------------------------------------------

def test_nat_apply_installs_rules_and_labelled_addresses_then_teardown_restores(make_lab):
    lab = make_lab("nat", real_servers=2)
    _ipt(lab, *OPERATOR_FILTER)
    _ipt(lab, *OPERATOR_MANGLE)
    lab.run("dir1", ["sysctl", "-qw", "net.ipv4.ip_forward=0"])  # to see it set and restored
    r = lab.call("dir1", in_dir1_apply_teardown, NAT_CF)
    d = r["during"]
    raw, mangle = d["raw"].splitlines(), d["mangle"].splitlines()
    assert raw.index("-A PREROUTING -j PYLVS-RAW") >= 0
    assert f"-A PYLVS-RAW -d {VIP}/32 -j CT --notrack" in raw
    assert ("-A PYLVS-RAW -s 10.77.2.11/32 -p udp -m udp --sport 9000 -m addrtype ! --dst-type LOCAL "
            "-j CT --notrack") in raw
    q = "-j NFQUEUE --queue-num 0 --queue-bypass"
    assert f"-A PYLVS-IN -d {VIP}/32 -p tcp -m tcp --dport 80 {q}" in mangle
    assert f"-A PYLVS-IN -d {VIP}/32 -p udp -m udp --dport 9000 {q}" in mangle
    assert f"-A PYLVS-OUT -s 10.77.2.12/32 -p tcp -m tcp --sport 80 {q}" in mangle
    # The operator's rules survive, and our mangle jump comes after the operator's MARK.
    assert "-A INPUT -p tcp -m tcp --dport 2222 -j ACCEPT" in d["filter"]
    operator = [i for i, ln in enumerate(mangle) if "--set-xmark 0x7" in ln]
    assert operator and operator[0] < mangle.index("-A PREROUTING -j PYLVS-IN")
    assert "-A FORWARD -j PYLVS-OUT" in mangle
    assert d["warnings"] == []
    assert re.search(rf"eth0\s+inet {re.escape(VIP)}/32 .*eth0:1", d["addr"])
    assert re.search(rf"eth1\s+inet {re.escape(topo.NAT_ROUTER)}/32 .*eth1:1", d["addr"])
    assert d["ip_forward"] == "1"
    assert r["after"] == r["before"]  # rules, addresses, ip_forward, nft ruleset: as they were
    assert r["before"]["ip_forward"] == "0"


def test_afpacket_netdev_table_installed_and_removed(make_lab):
    lab = make_lab("nat", real_servers=2)  # any lab: only dir1's eth0 matters here
    r = lab.call("dir1", in_dir1_apply_teardown, DR_CF, "afpacket")
    nft = r["during"]["nft"]
    assert "table netdev pylvs" in nft and 'hook ingress device "eth0"' in nft
    assert f"ip daddr {VIP} tcp dport 80 drop" in nft
    assert "PYLVS" not in r["during"]["iptables"]
    assert r["after"] == r["before"]


def test_clean_stale_after_a_crash(make_lab):
    lab = make_lab("nat", real_servers=2)
    _ipt(lab, *OPERATOR_FILTER)
    before = lab.call("dir1", in_dir1_apply_and_crash, NAT_CF)
    assert "PYLVS-IN" in _ipt(lab, "-t", "mangle", "-S")
    removed, after = lab.call("dir1", in_dir1_clean_stale)
    assert "iptables -t mangle chain PYLVS-IN" in removed
    assert any(w.startswith(f"address {VIP}/32") for w in removed)
    # All as before but ip_forward: its value before the crash is unknown (docs/netctl.md).
    assert {k: v for k, v in after.items() if k != "ip_forward"} == \
        {k: v for k, v in before.items() if k != "ip_forward"}
    assert lab.call("dir1", in_dir1_clean_stale)[0] == []  # nothing left the second time


def test_neighbour_of_a_real_server(make_lab):
    lab = make_lab("nat", real_servers=2)
    rip = lab.rips[1]
    n = lab.call("dir1", in_dir1_neighbour, rip)
    assert (n.ifname, n.mac, n.src_mac) == (topo.PRIVATE_IF, topo._mac(rip), topo._mac(topo.DIRECTOR_PRIVATE[0]))
    with pytest.raises(NetCtlError, match=r"10\.77\.2\.99"):
        lab.call("dir1", in_dir1_neighbour, "10.77.2.99", 0.5)


def test_fwmark_service_sees_the_operators_mark(make_lab):
    lab = make_lab("nat", real_servers=2)
    # The guide's rule, made before the director starts.
    _ipt(lab, "-t", "mangle", "-A", "PREROUTING", "-p", "tcp", "-d", VIP, "--dport", "80", "-j", "MARK",
         "--set-mark", str(FWMARK))
    late_rule = ["-p", "tcp", "-d", VIP, "--dport", "443", "-j", "MARK", "--set-mark", str(FWMARK)]
    r = lab.call("dir1", in_dir1_mark_late, FWMARK_CF, late_rule)
    try:
        assert r["first"] == []
        assert len(r["late"]) == 1 and "443" in r["late"][0]  # appended after our jump: warned
        assert r["after_update"] == []  # update moved our jump to the end
        assert r["mangle"].splitlines()[-1] == "-A PREROUTING -j PYLVS-IN"
        assert _mark_rule_packets(lab) == 0
        _connect(lab, 80)  # queued with --queue-bypass: nobody listens, so it goes on (refused)
        after80 = _mark_rule_packets(lab)
        assert after80 > 0
        _connect(lab, 443)
        assert _mark_rule_packets(lab) > after80
    finally:
        lab.call("dir1", in_dir1_clean_stale)


def test_capabilities_detected_in_the_director_namespace(make_lab):
    lab = make_lab("nat", real_servers=1)
    caps = lab.call("dir1", in_dir1_capabilities)
    assert caps.nfqueue_target and caps.notrack_target and caps.afpacket, caps.details
    assert "nft queue statement" in caps.details
    assert _ipt(lab, "-t", "mangle", "-S").count("PYLVS") == 0  # probes ran in scratch namespaces
