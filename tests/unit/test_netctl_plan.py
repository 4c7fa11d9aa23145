"""pylvs.netctl: plan_for (pure) and the DryRun double (no root needed)."""

from __future__ import annotations

import dataclasses
import json
from ipaddress import IPv4Address

import pytest

from pylvs.config import check_text
from pylvs.config.diagnostics import Severity
from pylvs.config.model import BoundAddress
from pylvs.netctl import Address, Capabilities, DryRun, Neighbour, NetCtlError, Plan, PlanError, plan_for
from pylvs.netctl.plan import render_restore

Q = "-j NFQUEUE --queue-num 0 --queue-bypass"


def config(body: str, network: str = "nat", nat: bool = True, strict: bool = True):
    head = f"""serial_no = 1
primary = 10.77.1.1
service = lvs
network = {network}
"""
    if nat:
        head += "nat_router = 10.77.2.254 eth1:1\n"
    res = check_text(head + body)
    errors = [d for d in res.diagnostics if d.severity is Severity.ERROR]
    assert not (strict and errors), errors
    return res.config


def virtual(name: str, port: int, proto: str = "tcp", extra: str = "", servers=((11, None), (12, None)),
            vip: str = "10.77.1.100 eth0:1") -> str:
    srv = "".join(f"""  server rs{h} {{
    address = 10.77.2.{h}
    active = 1
{f'    port = {p}' if p is not None else ''}
  }}
""" for h, p in servers)
    return f"""virtual {name} {{
  active = 1
  address = {vip}
  port = {port}
  protocol = {proto}
  scheduler = rr
{extra}
{srv}}}
"""


NAT2 = virtual("http", 80) + virtual("dns", 9000, "udp", servers=((11, 9001), (12, None)))


def chains(plan: Plan) -> dict[str, list[str]]:
    return {c.name: list(c.rules) for c in plan.chains}


# --- plan_for: NAT ---------------------------------------------------------------------------

def test_nat_two_services_exact_rules() -> None:
    plan = plan_for(config(NAT2))
    assert plan.capture == "nfqueue" and plan.nft is None
    assert plan.addresses == (Address("10.77.2.254", 32, "eth1", "eth1:1"),
                              Address("10.77.1.100", 32, "eth0", "eth0:1"))
    assert dict(plan.sysctls) == {"net.ipv4.ip_forward": "1"}
    nolocal = "-m addrtype ! --dst-type LOCAL -j CT --notrack"
    assert chains(plan) == {
        "PYLVS-RAW": [
            "-d 10.77.1.100/32 -j CT --notrack",
            f"-s 10.77.2.11/32 -p tcp -m tcp --sport 80 {nolocal}",
            f"-s 10.77.2.12/32 -p tcp -m tcp --sport 80 {nolocal}",
            f"-s 10.77.2.11/32 -p udp -m udp --sport 9001 {nolocal}",
            f"-s 10.77.2.12/32 -p udp -m udp --sport 9000 {nolocal}",
            f"-s 10.77.2.11/32 -p icmp {nolocal}",
            f"-s 10.77.2.12/32 -p icmp {nolocal}",
        ],
        "PYLVS-IN": [
            f"-d 10.77.1.100/32 -p tcp -m tcp --dport 80 {Q}",
            f"-d 10.77.1.100/32 -p udp -m udp --dport 9000 {Q}",
            f"-d 10.77.1.100/32 -p icmp {Q}",
        ],
        "PYLVS-OUT": [
            f"-s 10.77.2.11/32 -p tcp -m tcp --sport 80 {Q}",
            f"-s 10.77.2.12/32 -p tcp -m tcp --sport 80 {Q}",
            f"-s 10.77.2.11/32 -p udp -m udp --sport 9001 {Q}",
            f"-s 10.77.2.12/32 -p udp -m udp --sport 9000 {Q}",
            f"-s 10.77.2.11/32 -p icmp {Q}",
            f"-s 10.77.2.12/32 -p icmp {Q}",
        ],
    }
    hooks = {(c.table, c.hook, c.name, c.position) for c in plan.chains}
    assert hooks == {("raw", "PREROUTING", "PYLVS-RAW", "first"),
                     ("mangle", "PREROUTING", "PYLVS-IN", "last"),
                     ("mangle", "FORWARD", "PYLVS-OUT", "last")}


def test_install_text_is_one_commit_per_table() -> None:
    text = plan_for(config(NAT2)).iptables
    assert set(text) == {"raw", "mangle"}
    raw = text["raw"].splitlines()
    assert raw[0] == "*raw" and raw[1] == ":PYLVS-RAW - [0:0]" and raw[-1] == "COMMIT"
    assert raw[-2] == "-I PREROUTING 1 -j PYLVS-RAW"
    mangle = text["mangle"].splitlines()
    assert mangle[:3] == ["*mangle", ":PYLVS-IN - [0:0]", ":PYLVS-OUT - [0:0]"]
    assert mangle[-3:] == ["-A PREROUTING -j PYLVS-IN", "-A FORWARD -j PYLVS-OUT", "COMMIT"]
    assert sum(ln == "COMMIT" for ln in mangle) == 1


def test_port0_ftp_and_fwmark_services() -> None:
    body = (virtual("any", 0, extra="  persistent = 300")
            + virtual("ftp", 21, extra="  persistent = 300", vip="10.77.1.101 eth0:2")
            + virtual("bundle", 80, extra="  fwmark = 80\n  persistent = 60", vip="10.77.1.102 eth0:3"))
    plan = plan_for(config(body), queue=5, fail_open=False)
    q = "-j NFQUEUE --queue-num 5"
    assert chains(plan)["PYLVS-IN"] == [
        f"-d 10.77.1.100/32 -p tcp {q}",  # port 0: every TCP port
        f"-d 10.77.1.101/32 -p tcp {q}",  # FTP: control and data ports
        f"-m mark --mark 80 {q}",  # fwmark: whatever the operator's MARK rules mark
        f"-d 10.77.1.100/32 -p icmp {q}",
        f"-d 10.77.1.101/32 -p icmp {q}",
        f"-d 10.77.1.102/32 -p icmp {q}",
    ]
    assert chains(plan)["PYLVS-OUT"] == [
        f"-s 10.77.2.11/32 -p tcp {q}",
        f"-s 10.77.2.12/32 -p tcp {q}",
        f"-s 10.77.2.11/32 -p udp {q}",  # a mark may bundle UDP ports too
        f"-s 10.77.2.12/32 -p udp {q}",
        f"-s 10.77.2.11/32 -p icmp {q}",
        f"-s 10.77.2.12/32 -p icmp {q}",
    ]
    assert [a.label for a in plan.addresses] == ["eth1:1", "eth0:1", "eth0:2", "eth0:3"]


def test_classify_queue_sorts_the_servers_of_every_port_services() -> None:
    """With a classify queue, a real server of a fwmark (or port-0, FTP) service has its
    packets looked up instead of all untracked: ours come back marked and are untracked,
    then queued after routing by their untracked state; its own stay tracked (NAT works).
    A server with only by-port services keeps the exact rules."""
    body = (virtual("bundle", 80, extra="  fwmark = 80", servers=((11, None),))
            + virtual("web", 8080, vip="10.77.1.101 eth0:2", servers=((11, None), (12, None))))
    plan = plan_for(config(body), queue=(0, 1), classify=2)
    q, c = "-j NFQUEUE --queue-balance 0:1 --queue-bypass", "-j NFQUEUE --queue-num 2 --queue-bypass"
    local, owned = "-m addrtype ! --dst-type LOCAL", "0x40000000/0x40000000"
    assert chains(plan)["PYLVS-RAW"] == [
        "-d 10.77.1.100/32 -j CT --notrack",
        "-d 10.77.1.101/32 -j CT --notrack",
        f"-s 10.77.2.12/32 -p tcp -m tcp --sport 8080 {local} -j CT --notrack",
        f"-s 10.77.2.12/32 -p icmp {local} -j CT --notrack",
        f"-s 10.77.2.11/32 -m mark --mark {owned} -j CT --notrack",  # before the queue: NF_REPEAT
        f"-s 10.77.2.11/32 -p tcp {local} -m mark ! --mark {owned} {c}",
        f"-s 10.77.2.11/32 -p udp {local} -m mark ! --mark {owned} {c}",
        f"-s 10.77.2.11/32 -p icmp {local} -m mark ! --mark {owned} {c}",
    ]
    assert chains(plan)["PYLVS-OUT"] == [
        f"-s 10.77.2.12/32 -p tcp -m tcp --sport 8080 {q}",
        f"-s 10.77.2.12/32 -p icmp {q}",
        f"-s 10.77.2.11/32 -m conntrack --ctstate UNTRACKED {q}",
    ]
    assert plan.classify == 2 and "classify queue 2" in str(plan)
    # Without one (the Python adapters), as before: all of it untracked.
    assert "-s 10.77.2.11/32 -p tcp -m addrtype ! --dst-type LOCAL -j CT --notrack" in chains(
        plan_for(config(body)))["PYLVS-RAW"]
    # A by-port service alone: nothing to sort, no classify rule.
    assert not any("mark" in r for r in chains(plan_for(config(NAT2), classify=1))["PYLVS-RAW"])
    with pytest.raises(PlanError, match="classify queue 1 is one of the forwarding queues"):
        plan_for(config(body), queue=(0, 1), classify=1)
    assert plan_for(config(NAT2), capture="afxdp", classify=2).classify is None


def test_masks_dedupe_and_inactive() -> None:
    body = (virtual("a", 80, extra="  vip_nmask = 255.255.255.0")
            + virtual("b", 443, extra="  vip_nmask = 255.255.255.0")  # same VIP: one address
            + virtual("off", 8080, vip="10.77.1.150 eth0:9").replace("active = 1", "active = 0", 1))
    cfg = config("nat_nmask = 255.255.255.0\n" + body)
    plan = plan_for(cfg)
    assert plan.addresses == (Address("10.77.2.254", 24, "eth1", "eth1:1"),
                              Address("10.77.1.100", 24, "eth0", "eth0:1"))
    assert not any("10.77.1.150" in r for c in plan.chains for r in c.rules)


def test_queue_balance_and_bad_queue() -> None:
    plan = plan_for(config(virtual("http", 80)), queue=(2, 5))
    assert chains(plan)["PYLVS-IN"][0].endswith("-j NFQUEUE --queue-balance 2:5 --queue-bypass")
    with pytest.raises(PlanError, match="queue"):
        plan_for(config(virtual("http", 80)), queue=70000)


def test_no_active_services_no_rules() -> None:
    # (check refuses a file with no active service; the model still plans to nothing)
    plan = plan_for(config(virtual("off", 80).replace("active = 1", "active = 0", 1), strict=False))
    assert plan.chains == () and plan.iptables == {}
    assert plan.addresses == (Address("10.77.2.254", 32, "eth1", "eth1:1"),)


# --- plan_for: DR / tunnel ------------------------------------------------------------------------

def test_dr_afpacket_nft_batch() -> None:
    body = virtual("http", 80) + virtual("dns", 53, "udp") + virtual("all", 0, extra="  persistent = 60",
                                                                      vip="10.77.1.101 eth0:2")
    plan = plan_for(config(body, "direct", nat=False), capture="afpacket")
    assert plan.chains == () and plan.sysctls == {}
    assert plan.addresses == (Address("10.77.1.100", 32, "eth0", "eth0:1"),
                              Address("10.77.1.101", 32, "eth0", "eth0:2"))
    cmds = json.loads(plan.nft)["nftables"]
    table = {"family": "netdev", "name": "pylvs"}
    assert cmds[:3] == [{"add": {"table": table}}, {"delete": {"table": table}}, {"add": {"table": table}}]
    assert cmds[3] == {"add": {"chain": {"family": "netdev", "table": "pylvs", "name": "in_eth0",
                                         "type": "filter", "hook": "ingress", "dev": "eth0", "prio": 0,
                                         "policy": "accept"}}}
    rules = [c["add"]["rule"] for c in cmds[4:]]
    assert {r["chain"] for r in rules} == {"in_eth0"}

    def m(key, value):
        left = {"meta": {"key": key}} if key in ("protocol", "l4proto") else \
            {"payload": {"protocol": key.split()[0], "field": key.split()[1]}}
        return {"match": {"op": "==", "left": left, "right": value}}

    drop = {"drop": None}
    vip = [m("protocol", "ip"), m("ip daddr", "10.77.1.100")]
    icmp_errors = m("icmp type", {"set": ["destination-unreachable", "source-quench", "time-exceeded"]})
    assert [r["expr"] for r in rules] == [
        vip + [m("l4proto", "tcp"), m("th dport", 80), drop],
        vip + [m("l4proto", "icmp"), icmp_errors, drop],
        vip + [m("l4proto", "udp"), m("th dport", 53), drop],
        [m("protocol", "ip"), m("ip daddr", "10.77.1.101"), m("l4proto", "tcp"), drop],  # port 0
        [m("protocol", "ip"), m("ip daddr", "10.77.1.101"), m("l4proto", "icmp"), icmp_errors, drop],
    ]
    assert "in_eth0" in str(plan) and "th dport 80 drop" in str(plan)


def test_fwmark_in_afpacket_is_refused_by_name() -> None:
    body = virtual("bundle", 80, extra="  fwmark = 80\n  persistent = 60")
    with pytest.raises(PlanError, match=r"virtual 'bundle' is a firewall-mark service.*nfqueue"):
        plan_for(config(body, "direct", nat=False), capture="afpacket")
    assert issubclass(PlanError, NetCtlError)


def test_afxdp_keys_for_nat_every_port_sorry_server_and_icmp_errors() -> None:
    body = (virtual("http", 80) + virtual("dns", 9000, "udp", servers=((11, 9001), (12, None)))
            + virtual("all", 0, extra="  persistent = 60\n  sorry_server = 10.77.2.99", vip="10.77.1.101 eth0:2"))
    plan = plan_for(config(body), capture="afxdp")
    assert plan.chains == () and plan.nft is None
    assert dict(plan.sysctls) == {"net.ipv4.ip_forward": "1"}  # bpf_fib_lookup forwards only then
    assert plan.xdp.devices == ("eth0", "eth1")  # the VIPs' device, the nat_router's
    assert plan.xdp.services == (
        ("10.77.1.100", 80, 6), ("10.77.1.100", 0, 0), ("10.77.1.100", 9000, 17),
        ("10.77.1.101", 0, 6), ("10.77.1.101", 0, 0))  # port 0: every port; proto 0: ICMP errors
    assert plan.xdp.servers == (
        ("10.77.2.11", 80, 6), ("10.77.2.11", 0, 0), ("10.77.2.12", 80, 6), ("10.77.2.12", 0, 0),
        ("10.77.2.11", 9001, 17), ("10.77.2.12", 9000, 17),  # a server's own port is the one it answers from
        ("10.77.2.11", 0, 6), ("10.77.2.12", 0, 6), ("10.77.2.99", 0, 6), ("10.77.2.99", 0, 0))
    text = str(plan)
    assert "xdp: devices eth0, eth1" in text and "service 10.77.1.101:0 proto icmp-errors" in text


def test_afxdp_dr_has_no_servers_and_refuses_fwmark() -> None:
    plan = plan_for(config(virtual("http", 80), "direct", nat=False), capture="afxdp")
    assert plan.sysctls == {} and plan.xdp.servers == () and plan.xdp.devices == ("eth0",)
    assert plan.xdp.services == (("10.77.1.100", 80, 6), ("10.77.1.100", 0, 0))
    body = virtual("bundle", 80, extra="  fwmark = 80\n  persistent = 60")
    with pytest.raises(PlanError, match=r"virtual 'bundle' is a firewall-mark service.*nfq-loop"):
        plan_for(config(body, "direct", nat=False), capture="afxdp")


def test_nat_refuses_afpacket_and_tunnel_nfqueue_forwards() -> None:
    with pytest.raises(PlanError, match="NAT"):
        plan_for(config(NAT2), capture="afpacket")
    plan = plan_for(config(virtual("http", 80), "tunnel", nat=False))
    # the outer header's source is ours: accepted on the VIP's device only with accept_local
    assert dict(plan.sysctls) == {"net.ipv4.ip_forward": "1", "net.ipv4.conf.eth0.accept_local": "1"}
    vlan = plan_for(config(virtual("http", 80, vip="10.77.1.100 eth0.7:1"), "tunnel", nat=False))
    assert "net.ipv4.conf.eth0/7.accept_local" in vlan.sysctls  # sysctl(8)'s spelling of eth0.7
    assert [c.name for c in plan.chains] == ["PYLVS-RAW", "PYLVS-IN"]  # no replies through us
    assert chains(plan)["PYLVS-RAW"] == ["-d 10.77.1.100/32 -j CT --notrack"]


def test_plan_str_lists_everything() -> None:
    text = str(plan_for(config(NAT2)))
    for part in ("capture nfqueue", "fail-open", "10.77.1.100/32 dev eth0 label eth0:1",
                 "net.ipv4.ip_forward = 1", "-A PYLVS-OUT -s 10.77.2.11/32"):
        assert part in text


# --- rendering updates ---------------------------------------------------------------------------

def test_render_update_moves_last_jump_and_removes_old_chains() -> None:
    nat = plan_for(config(NAT2))
    tun = plan_for(config(virtual("http", 80), "tunnel", nat=False))
    present = {"-A PREROUTING -j PYLVS-IN", "-A FORWARD -j PYLVS-OUT"}
    text = render_restore("mangle", tun.chains, nat.chains, present, {"PYLVS-IN", "PYLVS-OUT"})
    lines = text.splitlines()
    assert lines[:2] == ["*mangle", ":PYLVS-IN - [0:0]"]
    assert lines[-6:] == ["-D PREROUTING -j PYLVS-IN", "-A PREROUTING -j PYLVS-IN",
                          "-D FORWARD -j PYLVS-OUT", "-F PYLVS-OUT", "-X PYLVS-OUT", "COMMIT"]
    raw = render_restore("raw", tun.chains, nat.chains, {"-A PREROUTING -j PYLVS-RAW"}, {"PYLVS-RAW"})
    assert "-I PREROUTING" not in raw  # a FIRST jump already there stays where it is


# --- DryRun ---------------------------------------------------------------------------------------

def verbs(ctl: DryRun) -> list[tuple[str, str]]:
    return [(v, d.splitlines()[0] if v == "iptables-restore" else d) for v, d in ctl.actions]


def test_dryrun_apply_update_teardown_order() -> None:
    ctl = DryRun(addresses=[Address("10.77.2.254", 24, "eth1", "eth1")])  # the operator's own
    plan = plan_for(config(NAT2))
    ctl.apply(plan)
    assert verbs(ctl) == [
        ("sysctl", "net.ipv4.ip_forward=1"),
        ("iptables-restore", "*raw"),
        ("iptables-restore", "*mangle"),
        ("addr-add", "10.77.1.100/32 dev eth0 label eth0:1"),  # nat_router already there: skipped
        ("apply", "capture nfqueue: 3 chain(s), 2 address(es), 1 sysctl(s)"),  # the call, once done
    ]
    assert ctl.actions[1][1] == plan.iptables["raw"] and ctl.actions[2][1] == plan.iptables["mangle"]
    assert ctl.plan is plan

    ctl.actions.clear()
    new = plan_for(config(virtual("http", 80, vip="10.77.1.101 eth0:2")), queue=1)
    ctl.update(new)
    assert verbs(ctl) == [("iptables-restore", "*raw"), ("iptables-restore", "*mangle"),
                          ("addr-del", "10.77.1.100/32 dev eth0 label eth0:1"),
                          ("addr-add", "10.77.1.101/32 dev eth0 label eth0:2"),
                          ("update", "capture nfqueue: 3 chain(s), 2 address(es), 1 sysctl(s)")]
    mangle = ctl.actions[1][1].splitlines()
    assert "-D PREROUTING -j PYLVS-IN" in mangle and mangle.index("-D PREROUTING -j PYLVS-IN") < \
        mangle.index("-A PREROUTING -j PYLVS-IN")
    assert "-I PREROUTING 1 -j PYLVS-RAW" not in ctl.actions[0][1]

    ctl.actions.clear()
    ctl.teardown()
    assert verbs(ctl) == [("addr-del", "10.77.1.101/32 dev eth0 label eth0:2"),
                          ("iptables-restore", "*raw"), ("iptables-restore", "*mangle"),
                          ("sysctl", "net.ipv4.ip_forward=0"), ("teardown", "")]
    assert ctl.actions[1][1].splitlines()[1:] == ["-D PREROUTING -j PYLVS-RAW", "-F PYLVS-RAW",
                                                  "-X PYLVS-RAW", "COMMIT"]
    assert ctl._sys.rules == {"raw": [], "mangle": []}  # the model is empty again
    ctl.actions.clear()
    ctl.teardown()  # idempotent: nothing left to do
    assert ctl.actions == [("teardown", "")] and ctl.plan is None


def test_dryrun_sysctl_already_set_is_left_alone() -> None:
    ctl = DryRun(sysctls={"net.ipv4.ip_forward": "1"})
    ctl.apply(plan_for(config(virtual("http", 80))))
    ctl.teardown()
    assert not [a for a in ctl.actions if a[0] == "sysctl"]
    assert [v for v, _ in ctl.actions if v in ("apply", "update", "teardown")] == ["apply", "teardown"]


def test_dryrun_afpacket_and_switch_to_nfqueue() -> None:
    dr = config(virtual("http", 80), "direct", nat=False)
    ctl = DryRun()
    ctl.apply(plan_for(dr, capture="afpacket"))
    assert [v for v, _ in ctl.actions] == ["nft", "addr-add", "apply"]
    ctl.actions.clear()
    ctl.update(plan_for(dr))  # nfqueue now: chains in, netdev table out
    assert [v for v, _ in ctl.actions] == ["iptables-restore", "iptables-restore", "nft", "update"]
    assert json.loads(ctl.actions[2][1])["nftables"][1] == {"delete": {"table": {"family": "netdev",
                                                                                   "name": "pylvs"}}}
    ctl.teardown()


def test_dryrun_failure_undoes_and_raises() -> None:
    ctl = DryRun()

    def boom(a: Address) -> None:
        raise NetCtlError(f"ip addr add {a}: No such device")

    ctl._sys.addr_add = boom
    with pytest.raises(NetCtlError, match="No such device"):
        ctl.apply(plan_for(config(NAT2)))
    assert [v for v, _ in ctl.actions][-3:] == ["iptables-restore", "iptables-restore", "sysctl"]
    assert ctl.plan is None and ctl._sys.rules == {"raw": [], "mangle": []}


def test_dryrun_missing_capability_refuses_before_acting() -> None:
    caps = Capabilities(False, True, False, True, True, "no NFQUEUE here")
    ctl = DryRun(capabilities=caps)
    with pytest.raises(NetCtlError, match="nfqueue_target"):
        ctl.apply(plan_for(config(NAT2)))
    assert ctl.actions == []


def test_dryrun_tunnel_warns_under_strict_rp_filter() -> None:
    ctl = DryRun(sysctls={"net.ipv4.conf.all.rp_filter": "1"})
    ctl.apply(plan_for(config(virtual("http", 80), "tunnel", nat=False)))
    assert ("sysctl", "net.ipv4.conf.eth0.accept_local=1") in ctl.actions
    assert len(ctl.warnings) == 1 and "rp_filter" in ctl.warnings[0]
    ctl.teardown()
    assert ctl.actions[-3:] == [("sysctl", "net.ipv4.ip_forward=0"), ("sysctl", "net.ipv4.conf.eth0.accept_local=0"),
                                ("teardown", "")]


def test_dryrun_neighbour_and_clean_stale() -> None:
    n = Neighbour("eth1", 3, "02:77:00:00:02:0b", "02:77:00:00:02:01")
    ctl = DryRun(neighbours={"10.77.2.11": n})
    assert ctl.neighbour("10.77.2.11") == n
    with pytest.raises(NetCtlError, match="10.77.2.12"):
        ctl.neighbour("10.77.2.12", timeout=0.1)
    assert DryRun.clean_stale() == []


def test_plan_is_frozen_hashable_and_picklable() -> None:
    import pickle

    plan = plan_for(config(NAT2))
    assert pickle.loads(pickle.dumps(plan)) == plan and hash(pickle.loads(pickle.dumps(plan))) == hash(plan)
    assert plan == plan_for(config(NAT2))  # pure: same config, same plan
    with pytest.raises(TypeError):
        plan.sysctls["net.ipv4.ip_forward"] = "0"  # type: ignore[index]


# --- per-real-server methods and hand-added services (pylvsadm) ------------------------------

def methods(cfg, forwards: dict[str, str], **virtual_fields):
    """`cfg` with the named servers given their own method (ipvsadm -m/-g/-i), as pylvsadm does."""
    return dataclasses.replace(cfg, virtuals=tuple(dataclasses.replace(
        v, servers=tuple(dataclasses.replace(s, forward=forwards.get(s.name, s.forward)) for s in v.servers),
        **virtual_fields) for v in cfg.virtuals))


def test_explicit_methods_equal_to_the_network_change_nothing() -> None:
    for network, nat in (("nat", True), ("direct", False), ("tunnel", False)):
        cfg = config(NAT2, network, nat=nat)
        same = methods(cfg, {"rs11": network, "rs12": network})
        for capture in ("nfqueue", "afxdp") + (("afpacket",) if network != "nat" else ()):
            assert plan_for(same, capture=capture) == plan_for(cfg, capture=capture)


def test_nat_capture_only_for_the_nat_servers() -> None:
    """network = direct, rs11 added with -m on port 8080: only its replies are captured,
    and the NAT pieces come with it (nat_router, FORWARD chain, ip_forward)."""
    cfg = methods(config(virtual("http", 80, servers=((11, 8080), (12, None))), "direct"), {"rs11": "nat"})
    plan = plan_for(cfg)
    assert plan.addresses == (Address("10.77.2.254", 32, "eth1", "eth1:1"),
                              Address("10.77.1.100", 32, "eth0", "eth0:1"))
    assert dict(plan.sysctls) == {"net.ipv4.ip_forward": "1"}
    nolocal = "-m addrtype ! --dst-type LOCAL -j CT --notrack"
    assert chains(plan) == {
        "PYLVS-RAW": ["-d 10.77.1.100/32 -j CT --notrack",
                      f"-s 10.77.2.11/32 -p tcp -m tcp --sport 8080 {nolocal}",
                      f"-s 10.77.2.11/32 -p icmp {nolocal}"],
        "PYLVS-IN": [f"-d 10.77.1.100/32 -p tcp -m tcp --dport 80 {Q}", f"-d 10.77.1.100/32 -p icmp {Q}"],
        "PYLVS-OUT": [f"-s 10.77.2.11/32 -p tcp -m tcp --sport 8080 {Q}", f"-s 10.77.2.11/32 -p icmp {Q}"],
    }
    xdp = plan_for(cfg, capture="afxdp").xdp
    assert xdp.servers == (("10.77.2.11", 8080, 6), ("10.77.2.11", 0, 0))
    assert xdp.devices == ("eth0", "eth1")
    with pytest.raises(PlanError, match="NAT"):
        plan_for(cfg, capture="afpacket")


def test_no_nat_server_no_nat_pieces() -> None:
    """network = nat but every server added with -g: no reply capture, no nat_router
    address, no ip_forward, and afpacket capture is possible."""
    cfg = methods(config(NAT2), {"rs11": "direct", "rs12": "direct"})
    plan = plan_for(cfg)
    assert plan.addresses == (Address("10.77.1.100", 32, "eth0", "eth0:1"),)
    assert dict(plan.sysctls) == {}
    assert [c.name for c in plan.chains] == ["PYLVS-RAW", "PYLVS-IN"]
    assert plan_for(cfg, capture="afpacket").nft is not None
    assert plan_for(cfg, capture="afxdp").xdp.servers == ()


def test_tunnel_pieces_with_one_tunnel_server() -> None:
    cfg = methods(config(NAT2), {"rs12": "tunnel"})
    plan = plan_for(cfg)
    assert dict(plan.sysctls) == {"net.ipv4.ip_forward": "1", "net.ipv4.conf.eth0.accept_local": "1"}
    out = chains(plan)["PYLVS-OUT"]
    assert out == [f"-s 10.77.2.11/32 -p tcp -m tcp --sport 80 {Q}",
                   f"-s 10.77.2.11/32 -p udp -m udp --sport 9001 {Q}", f"-s 10.77.2.11/32 -p icmp {Q}"]
    dr = methods(config(NAT2, "direct", nat=False), {"rs12": "tunnel"})
    assert dict(plan_for(dr).sysctls) == {"net.ipv4.ip_forward": "1", "net.ipv4.conf.eth0.accept_local": "1"}


def test_sorry_server_keeps_the_files_method() -> None:
    body = virtual("http", 80, extra="  sorry_server = 10.77.2.99")
    cfg = methods(config(body), {"rs11": "direct", "rs12": "direct"})  # lvsd adds SORRY with network = nat
    assert chains(plan_for(cfg))["PYLVS-OUT"] == [f"-s 10.77.2.99/32 -p tcp -m tcp --sport 80 {Q}",
                                                  f"-s 10.77.2.99/32 -p icmp {Q}"]


def test_manual_virtual_gets_no_address() -> None:
    """A service added with ipvsadm -A: its VIP is the operator's, with or without a device."""
    cfg = config(virtual("http", 80) + virtual("web2", 8080, vip="10.77.1.101 eth0:2"), "tunnel", nat=False)
    http, web2 = cfg.virtuals
    bare = dataclasses.replace(web2, manual=True, address=BoundAddress(IPv4Address("10.77.1.101"), ""))
    for v2 in (dataclasses.replace(web2, manual=True), bare):
        manual = dataclasses.replace(cfg, virtuals=(http, v2))
        plan = plan_for(manual)
        assert plan.addresses == (Address("10.77.1.100", 32, "eth0", "eth0:1"),)
        assert f"-d 10.77.1.101/32 -p tcp -m tcp --dport 8080 {Q}" in chains(plan)["PYLVS-IN"]
        # A tunnel service without a device: accept_local on "all", which the kernel OR-s in.
        accept_all = {"net.ipv4.conf.all.accept_local": "1"} if v2 is bare else {}
        assert dict(plan.sysctls) == {"net.ipv4.ip_forward": "1", "net.ipv4.conf.eth0.accept_local": "1",
                                      **accept_all}  # fmt: skip
        xdp = plan_for(manual, capture="afxdp").xdp
        assert xdp.devices == ("eth0",) and ("10.77.1.101", 8080, 6) in xdp.services
    assert plan_for(dataclasses.replace(cfg, virtuals=(http, dataclasses.replace(web2, manual=True))),
                    capture="afpacket").nft is not None
    with pytest.raises(PlanError, match="names no device"):
        plan_for(dataclasses.replace(cfg, virtuals=(http, bare)), capture="afpacket")
