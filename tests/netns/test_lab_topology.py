"""Each topology is built as documented and every real server answers its director(s)."""

from __future__ import annotations

import json
import socket

import pytest

from pylvs.lab import netns, topology
from pylvs.lab.topology import DIRECT, NAT, NAT_ROUTER, TUNNEL, VIP


def _default_gw(lab, host) -> str | None:
    routes = json.loads(lab.run(host, ["ip", "-j", "route", "show", "default"]).stdout)
    return routes[0].get("gateway") if routes else None


def _assert_director_reaches_all(lab, director) -> None:
    for rs in lab.real_servers:
        rip = rs.ip(topology.PRIVATE)
        # TCP connect on its own, then an HTTP GET that names the server.
        with lab.socket(director) as sock:
            sock.settimeout(3)
            sock.connect((rip, lab.http_port))
        reply = lab.http_get(director, rip)
        assert reply.status == 200
        assert reply.body == f"{rs.name}\n".encode()
        assert reply.headers["x-real-server"] == rs.name
        assert lab.udp_echo(director, rip, b"hello") == f"{rs.name} hello".encode()


@pytest.mark.parametrize("kind", [NAT, DIRECT, TUNNEL])
def test_director_reaches_every_real_server(shared_lab, kind):
    lab = shared_lab(kind, 3, 1)
    assert lab.kind == kind
    assert [rs.name for rs in lab.real_servers] == ["rs1", "rs2", "rs3"]
    _assert_director_reaches_all(lab, lab.director)


def test_two_directors_both_reach_every_real_server(shared_lab):
    lab = shared_lab(NAT, 3, 2)
    assert [d.name for d in lab.directors] == ["dir1", "dir2"]
    assert lab.client_vip_route is False  # two directors: clients ARP for the VIP
    for director in lab.directors:
        _assert_director_reaches_all(lab, director)
    # The heartbeat paths: primary <-> backup on the public and on the private side.
    for seg in (topology.PUBLIC, topology.PRIVATE):
        d1, d2 = lab.directors
        with lab.socket(d2, socket.AF_INET, socket.SOCK_DGRAM) as rx, \
                lab.socket(d1, socket.AF_INET, socket.SOCK_DGRAM) as tx:
            rx.bind((d2.ip(seg), 539))  # lvs.cf heartbeat_port default
            rx.settimeout(2)
            tx.sendto(b"hb", (d2.ip(seg), 539))
            data, peer = rx.recvfrom(100)
            assert (data, peer[0]) == (b"hb", d1.ip(seg))


def test_nat_real_servers_route_through_nat_router(shared_lab):
    lab = shared_lab(NAT, 3, 1)
    for rs in lab.real_servers:
        assert rs.default_route == NAT_ROUTER
        assert _default_gw(lab, rs) == NAT_ROUTER


@pytest.mark.parametrize("kind", [DIRECT, TUNNEL])
def test_dr_and_tun_real_servers_reply_via_gw(shared_lab, kind):
    lab = shared_lab(kind, 3, 1)
    for rs in lab.real_servers:
        assert _default_gw(lab, rs) == topology.GW_PRIVATE
        # A reply to a client, sourced from the VIP, leaves through gw, not a director.
        route = lab.run(rs, ["ip", "-j", "route", "get", lab.clients[0].ip(), "from", VIP]).stdout
        assert json.loads(route)[0]["gateway"] == topology.GW_PRIVATE
        for key, want in (("arp_ignore", "1"), ("arp_announce", "2")):
            for scope in ("all", "eth0"):
                assert netns.read_sysctl(rs.netns, f"net.ipv4.conf.{scope}.{key}") == want


def test_lab_data_matches_the_kernel(shared_lab):
    lab = shared_lab(DIRECT, 3, 1)
    for host in lab.hosts.values():
        links = netns.link_info(host.netns)
        addrs = json.loads(lab.run(host, ["ip", "-j", "-4", "addr"]).stdout)
        have = {(a["ifname"], f"{i['local']}/{i['prefixlen']}") for a in addrs for i in a["addr_info"]}
        for itf in host.interfaces.values():
            if itf.mac:
                assert links[itf.name]["address"] == itf.mac
            if itf.address:
                assert (itf.name, f"{itf.address}/{itf.prefixlen}") in have
            for extra in itf.extra:
                assert (itf.name, extra) in have
        # IPv6 is off in every lab namespace.
        assert netns.read_sysctl(host.netns, "net.ipv6.conf.all.disable_ipv6") == "1"
    forwarders = [h for h in lab.hosts.values() if h.role in (topology.DIRECTOR, topology.ROUTER)]
    for h in lab.hosts.values():
        want = "1" if h in forwarders else "0"
        assert netns.read_sysctl(h.netns, "net.ipv4.ip_forward") == want
    # The VIP is not on the director unless asked (that is netctl's job).
    assert not any(VIP + "/32" in i.extra for i in lab.director.interfaces.values())


def _root_links() -> set[tuple[int, str]]:
    return {(link["ifindex"], link["ifname"])
            for link in json.loads(netns._run(["ip", "-j", "link", "show"]).stdout or "[]")}


def test_root_namespace_is_not_part_of_the_lab(make_lab):
    before = _root_links()
    lab = make_lab(TUNNEL, 2, 2)
    # Building created no device in the root namespace (no veth end, bridge or TUN).
    assert _root_links() == before
    for ns in lab.netns_names:
        assert ns.startswith(lab.name + "-")
    # No lab address lives in the root namespace.
    root_addrs = netns._run(["ip", "-4", "-o", "addr", "show"]).stdout
    assert "10.77." not in root_addrs


def test_vip_on_director(make_lab):
    from pylvs.lab import probes

    lab = make_lab(NAT, 1, 1, vip_on_director=True)
    d = lab.director
    assert f"{VIP}/32" in d.iface(topology.PUBLIC).extra
    assert f"{NAT_ROUTER}/32" in d.iface(topology.PRIVATE).extra
    # The real server resolves its gateway (the NAT router) to dir1's private side.
    macs = lab.call(lab.real_servers[0], probes.arp_probe, "eth0", NAT_ROUTER, 1.0)
    assert macs == [d.iface(topology.PRIVATE).mac]


def _raise_in_namespace(message: str) -> None:
    raise ValueError(message)


def _links_here() -> list[str]:
    return sorted(name for _, name in socket.if_nameindex())


def test_helpers_act_inside_the_namespace(make_lab):
    lab = make_lab(DIRECT, 1, 1)
    rs = lab.real_servers[0]
    assert "10.77.1.100/32" in lab.run(rs, ["ip", "-4", "-o", "addr", "show", "dev", "lo"]).stdout
    out = lab.python("dir1", "-c", "import socket; print(sorted(n for _, n in socket.if_nameindex()))")
    assert out.stdout.strip() == "['eth0', 'eth1', 'lo']"
    assert lab.call("gw", _links_here) == ["eth0", "eth1", "lo"]
    with pytest.raises(ValueError, match="from gw"):
        lab.call("gw", _raise_in_namespace, "from gw")
    sleeper = lab.popen("client1", ["sleep", "30"], what="sleeper")
    assert sleeper.pid in lab.pids and netns.pid_running(sleeper.pid)
    lab.destroy()
    assert sleeper.poll() is not None  # ended (and reaped) by the lab
    assert not any(map(netns.netns_exists, lab.netns_names))
