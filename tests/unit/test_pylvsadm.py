"""pylvsadm against an in-process director (the whole control path but the socket): the
captured ipvsadm 1.31 replayed case by case (``tests/ipvsadm_golden.py``), with name
lookups and the sync daemon's sockets replaced, so nothing leaves this process.  The same
replay runs against ``pylvs lvs --bare`` in a namespace in
``tests/netns/test_ipvsadm_golden_lab.py``."""

from __future__ import annotations

import json

import pytest
from feed_director import feed_directors
from ipvsadm_golden import CAPACITY, call, differences, replay

import pylvs.ha.syncd as syncd
from pylvs.ipvsadm import grammar, listing


class FakeSyncDaemon:
    """The sync daemon without sockets: pylvsadm's --start-daemon only needs its role."""

    def __init__(self, fwd, *, syncid, iface_addr, port, group, max_size=1472, ttl=1):
        self.syncid, self.port, self.group, self.role = syncid, port, group, None

    def start_master(self):
        self.role = "master"

    def start_backup(self):
        self.role = "backup"

    def stop(self):
        self.role = None


@pytest.fixture
def bare(tmp_path, monkeypatch):
    real_host = grammar.gethostbyname
    monkeypatch.setattr(grammar, "gethostbyname", lambda name: real_host(name) if name[:1].isdigit() else None)
    monkeypatch.setattr(listing, "SYSTEM_REVERSE_RESOLVER",
                        listing.ReverseResolver(lambda addr: None, listing.SYSTEM_REVERSE_RESOLVER.service))
    devices = {"sync0": "10.255.0.1", "sync1": "10.255.1.1"}

    def iface_address(name):
        if name not in devices:
            raise ValueError(f"no network device {name!r} in this namespace")
        return devices[name]

    monkeypatch.setattr(syncd, "iface_address", iface_address)
    monkeypatch.setattr(syncd, "SyncDaemon", FakeSyncDaemon)
    gen = feed_directors(tmp_path)
    make = next(gen)
    d, _ = make(None, capacity=CAPACITY)

    def director(cmd, **kw):  # what the socket carries: JSON both ways
        req = json.loads(json.dumps({"v": 1, "cmd": cmd, **kw}))
        return json.loads(json.dumps(d.handle_control(req), default=str))

    yield d, director
    next(gen, None)


def test_every_captured_ipvsadm_case_in_process(bare):
    _, director = bare
    bad = differences(replay(director))
    assert not bad, f"{len(bad)} case(s) differ:\n\n" + "\n".join(bad)


def test_no_director_is_said_plainly(tmp_path):
    from pylvs.ipvsadm.cli import Director

    got = call(Director(str(tmp_path / "nobody.ctl")), ["-L", "-n"])
    assert got["rc"] == 1 and got["stdout"] == ""
    assert got["stderr"].startswith(f"Can't initialize ipvs: no pylvs director answers at {tmp_path}/nobody.ctl")


def test_json_listing_and_status_share_the_table(bare):
    d, director = bare
    for argv in (["-A", "-t", "10.1.0.1:80", "-s", "wrr"], ["-a", "-t", "10.1.0.1:80", "-r", "192.168.10.1:80", "-m",
                                                            "-w", "3"]):  # fmt: skip
        assert call(director, argv)["rc"] == 0
    got = json.loads(call(director, ["-L", "-n", "-j"])["stdout"])
    assert (got["version"], got["size"]) == (1, CAPACITY)
    [svc] = got["services"]
    status = d.status()  # the status file's table: the same ipvs.get
    [st] = status["services"]
    assert (st["vip"], st["port"], st["scheduler"]) == ("10.1.0.1", 80, "wrr")
    assert [(x["addr"], x["port"], x["weight"], x["forward"]) for x in st["dests"]] == [("192.168.10.1", 80, 3, "Masq")]
    assert json.dumps(svc, sort_keys=True).count("192.168.10.1") == 1
    assert status["timeouts"] == [900, 120, 300] and status["daemons"] == []
    for argv, key in ((["-L", "-n", "-c", "-j"], "connections"), (["-L", "--timeout", "-j"], "timeout"),
                      (["-L", "--daemon", "-j"], "daemon")):  # every listing has its JSON form
        doc = json.loads(call(director, argv)["stdout"])
        assert doc["version"] == 1 and key in doc, (argv, doc)
    assert json.loads(call(director, ["-L", "--timeout", "-j"])["stdout"])["timeout"] == {"tcp": 900, "tcpfin": 120,
                                                                                             "udp": 300}

def test_changes_live_until_reload_and_hand_added_servers_are_not_checked(tmp_path):
    from golden import CLIENT, HEAD, RIP1, RIP2, VIP, VPORT, tcp, virtual
    from scapy.layers.inet import IP

    text = HEAD.format(network="nat") + virtual("www", VIP, VPORT, sched="rr", servers=[("web1", RIP1, None, 1)])
    gen = feed_directors(tmp_path)
    make = next(gen)
    try:
        d, feed = make(text)

        def director(cmd, **kw):
            return json.loads(json.dumps(d.handle_control(json.loads(json.dumps({"cmd": cmd, **kw}))), default=str))

        svc = f"{VIP}:{VPORT}"
        assert call(director, ["-a", "-t", svc, "-r", RIP2, "-g", "-w", "2"])["rc"] == 0  # a DR server by hand
        assert call(director, ["-e", "-t", svc, "-r", f"{RIP1}:{VPORT}", "-m", "-w", "0"])["rc"] == 0  # drain web1
        listing_ = call(director, ["-L", "-n"])["stdout"]
        assert f"  -> {RIP1 + ':' + str(VPORT):<28} Masq    0 " in listing_
        assert f"  -> {RIP2 + ':' + str(VPORT):<28} Route   2 " in listing_
        checked = {str(k[1]) for k in d.health.health()}
        assert checked == {RIP1}  # lvs.cf's server keeps its check; the hand-added one has none
        # New connections go to the only server with a weight, by its own method: direct routing.
        [(verdict, out)] = feed.send([tcp(CLIENT, VIP, 40001, VPORT, "S")])
        assert verdict == "dr" and IP(out).dst == VIP  # the frame goes to its MAC, the VIP kept
        # A reload of lvs.cf: the table is the file's again.
        assert d.reload()
        listing_ = call(director, ["-L", "-n"])["stdout"]
        assert RIP2 not in listing_ and f"  -> {RIP1 + ':' + str(VPORT):<28} Masq    1 " in listing_
    finally:
        next(gen, None)
