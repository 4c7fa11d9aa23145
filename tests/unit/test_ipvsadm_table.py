"""pylvs.ipvsadm.table: ipvsadm's table commands over a Config, with the kernel's answers."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from pylvs.config.check import check_text
from pylvs.config.model import Config
from pylvs.ipvsadm import command as c
from pylvs.ipvsadm import table as t


def svc(addr="10.1.0.1", port=80, proto="tcp", **kw) -> c.ServiceSpec:
    return c.ServiceSpec(protocol=proto, address=addr, port=port, **kw)


def dest(addr, port=None, forward=c.MASQ, **kw) -> c.DestSpec:
    return c.DestSpec(address=addr, port=port, forward=forward, **kw)


def cmd(command, s=None, d=None, **kw) -> c.Command:
    return c.Command(command=command, service=s, dest=d, **kw)


def run(config, *commands):
    for x in commands:
        config = t.apply(config, x)
    return config


def test_add_services_and_servers_as_ipvsadm_does():
    cf = run(Config(),
             cmd(c.ADD_SERVICE, svc(scheduler="wrr")),
             cmd(c.ADD_DEST, svc(), dest("192.168.10.1", 8080, weight=2)),
             cmd(c.ADD_DEST, svc(), dest("192.168.10.2", 8080, forward=c.ROUTE)),  # -g: the virtual port
             cmd(c.ADD_DEST, svc(), dest("192.168.10.3", weight=2147483647, u_threshold=9, l_threshold=4)))  # fmt: skip
    (v,) = cf.virtuals
    assert (v.scheduler, v.vip, v.port, v.manual, v.address.device) == ("wrr", IPv4Address("10.1.0.1"), 80, True, "")
    got = [(str(s.address), s.port, s.forward, s.weight, s.u_threshold, s.l_threshold, s.manual) for s in v.servers]
    assert got == [("192.168.10.1", 8080, c.MASQ, 2, 0, 0, True), ("192.168.10.2", 80, c.ROUTE, 1, 0, 0, True),
                   ("192.168.10.3", 80, c.MASQ, 2147483647, 9, 4, True)]  # fmt: skip


def test_the_kernels_answers_and_nothing_changes():
    cf = run(Config(), cmd(c.ADD_SERVICE, svc()), cmd(c.ADD_DEST, svc(), dest("192.168.10.1", 80)))
    cases = [
        (cmd(c.ADD_SERVICE, svc()), "Service already exists"),
        (cmd(c.ADD_SERVICE, svc("10.1.0.2", scheduler="foo")), "Scheduler or persistence engine not found"),
        (cmd(c.EDIT_SERVICE, svc("10.1.0.9")), "No such service"),
        (cmd(c.ADD_DEST, svc(), dest("192.168.10.1", 80)), "Destination already exists"),
        (cmd(c.ADD_DEST, svc(proto="udp"), dest("192.168.10.1")), "Service not defined"),
        (cmd(c.ADD_DEST, svc(), dest("192.168.10.3", l_threshold=7)), "Numerical result out of range"),
        (cmd(c.EDIT_DEST, svc(), dest("1.2.3.4")), "No such destination"),
        (cmd(c.DEL_DEST, svc(), dest("192.168.10.99")), "No such destination"),
        (cmd(c.DEL_DEST, svc("10.1.0.99"), dest("192.168.10.1")), "Service not defined"),
        (cmd(c.ADD_SERVICE, svc("2001:db8::1", af=6)), t.REFUSE_IPV6),
        (cmd(c.ADD_SERVICE, svc(proto="sctp")), t.REFUSE_SCTP),
        (cmd(c.ADD_SERVICE, svc("10.1.0.42", proto="udp", persistent=60, pe="sip")), t.REFUSE_PE.format("sip")),
        (cmd(c.ADD_SERVICE, svc("10.1.0.42", proto="udp", persistent=60, pe="nosuch")),
         "Scheduler or persistence engine not found"),
        (cmd(c.ADD_SERVICE, svc("10.1.0.34", proto="udp", ops=True)), t.REFUSE_OPS),
        (cmd(c.ADD_DEST, svc(), dest("192.168.10.5", forward=c.TUNNEL, tun_type="gue", tun_port=6080)),
         t.REFUSE_TUN.format("gue")),
    ]  # fmt: skip
    for x, message in cases:
        with pytest.raises(t.IpvsError) as err:
            t.apply(cf, x)
        assert str(err.value) == message and err.value.rc == 255
    assert t.apply(cf, cmd(c.DEL_SERVICE, svc("10.1.0.99"))) is cf  # -D of nothing: 0, as the kernel


def test_edits_reset_what_they_leave_out():
    cf = run(Config(), cmd(c.ADD_SERVICE, svc(scheduler="sh", persistent=120, netmask="255.255.255.0",
                                              sched_flags=c.SCHED_FLAG_1)),
             cmd(c.ADD_DEST, svc(), dest("192.168.10.3", 80, weight=3, u_threshold=9, l_threshold=4)))  # fmt: skip
    cf = run(cf, cmd(c.EDIT_SERVICE, svc(persistent=200)), cmd(c.EDIT_DEST, svc(), dest("192.168.10.3", 80)))
    v = cf.virtuals[0]
    assert (v.scheduler, v.persistent, str(v.pmask), v.sched_flags) == ("wlc", 200, "0.0.0.0", 0)
    s = v.servers[0]
    assert (s.weight, s.u_threshold, s.l_threshold, s.forward) == (1, 0, 0, c.MASQ)
    cf = t.apply(cf, cmd(c.EDIT_DEST, svc(), dest("192.168.10.3", forward=None)))  # no -m: -g, the virtual port
    assert cf.virtuals[0].servers[0].forward == c.ROUTE


LVS_CF = """
network = nat
nat_router = 10.77.2.254 eth1:1
virtual web {
    active = 1
    address = 10.77.1.100 eth0:1
    port = 80
    scheduler = wlc
    server rs1 {
        address = 10.77.2.11
        active = 1
        weight = 1
    }
}
virtual old {
    active = 0
    address = 10.77.1.101 eth0:2
    port = 80
}
"""


def test_lvs_cf_services_are_in_the_table_and_clear_removes_them():
    cf = check_text(LVS_CF).config
    web = svc("10.77.1.100", 80)
    assert t.find_virtual(cf, web) == 0
    with pytest.raises(t.IpvsError, match="Destination already exists"):
        t.apply(cf, cmd(c.ADD_DEST, web, dest("10.77.2.11", 80)))
    cf2 = t.apply(cf, cmd(c.EDIT_DEST, web, dest("10.77.2.11", 80, weight=0)))  # drain an lvs.cf server
    s = cf2.virtuals[0].servers[0]
    assert (s.weight, s.manual, s.port) == (0, False, None)  # keeps its check and its virtual's port
    assert t.find_virtual(cf, svc("10.77.1.101", 80)) == -1  # inactive: not in the table
    cleared = t.apply(cf, cmd(c.FLUSH))
    assert [v.name for v in cleared.virtuals] == ["old"]


def test_set_timeouts_keeps_zeros():
    cf = t.apply(Config(), cmd(c.TIMEOUT, timeouts=(0, 60, 0)))
    assert (cf.tcp_timeout, cf.tcpfin_timeout, cf.udp_timeout) == (0, 60, 0)
    cf = t.apply(cf, cmd(c.TIMEOUT, timeouts=(900, 0, 300)))
    assert (cf.tcp_timeout, cf.tcpfin_timeout, cf.udp_timeout) == (900, 60, 300)


def test_firewall_mark_services():
    f1 = c.ServiceSpec(fwmark=1, scheduler="rr")
    cf = run(Config(), cmd(c.ADD_SERVICE, f1), cmd(c.ADD_DEST, f1, dest("192.168.10.1", forward=c.ROUTE)),
             cmd(c.ADD_DEST, f1, dest("192.168.10.3", 8080)))  # fmt: skip
    v = cf.virtuals[0]
    assert (v.fwmark, v.address, v.port) == (1, None, 0)
    assert [(str(s.address), s.port) for s in v.servers] == [("192.168.10.1", 0), ("192.168.10.3", 8080)]


def test_commands_cross_the_socket_as_json():
    x = cmd(c.ADD_DEST, svc(), dest("192.168.10.1", 80, weight=5), given=("weight",))
    assert c.Command.from_json(x.to_json()) == x


def test_delete_takes_the_port_as_given_and_edit_keeps_an_lvs_cf_check_port():
    cf = run(Config(), cmd(c.ADD_SERVICE, svc()), cmd(c.ADD_DEST, svc(), dest("192.168.10.4", 8080, forward=c.ROUTE)))
    assert [s.port for s in cf.virtuals[0].servers] == [80]  # -g: listed on the virtual port
    with pytest.raises(t.IpvsError, match="No such destination"):  # as the kernel: -d forces no port
        t.apply(cf, cmd(c.DEL_DEST, svc(), dest("192.168.10.4", 8080)))
    assert t.apply(cf, cmd(c.DEL_DEST, svc(), dest("192.168.10.4"))).virtuals[0].servers == ()
    dr = check_text(LVS_CF.replace("network = nat", "network = direct").replace(
        "        weight = 1\n", "        weight = 1\n        port = 8080\n")).config  # lvs.cf: the check's port
    web = svc("10.77.1.100", 80)
    s = t.apply(dr, cmd(c.EDIT_DEST, web, dest("10.77.2.11", forward=c.ROUTE, weight=0))).virtuals[0].servers[0]
    assert (s.weight, s.port) == (0, 8080)
