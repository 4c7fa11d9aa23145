"""The director's control logic with a recording netctl and an in-process adapter.

What a namespace cannot give is replaced: the kernel side (netctl.DryRun records what it
would do) and the packet source (``FeedAdapter``: the test hands it scapy packets and it
runs them through the director's handle, in the dataplane thread, as a real adapter
does).  The real adapters and netctl run in tests/netns/test_director_e2e.py.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from feed_director import FeedAdapter, feed_directors, healthy
from golden import CLIENT, CPORT, HEAD, RIP1, RIP2, VIP, VPORT, tcp, virtual
from scapy.layers.inet import IP

import pylvs.netctl as NETCTL
from pylvs.config import diagnostics as dg
from pylvs.director import Director, DirectorError
from pylvs.ipvsadm import format_list


def two_servers(w1=1, w2=1, sched="wlc"):
    return HEAD.format(network="nat") + virtual("www", VIP, VPORT, sched=sched,
                                                servers=[("web1", RIP1, None, w1), ("web2", RIP2, None, w2)])


@pytest.fixture
def director(tmp_path):
    yield from feed_directors(tmp_path)


def syn(port):
    return tcp(CLIENT, VIP, port, VPORT, "S")


def test_start_forwards_and_reports(director):
    d, feed = director(two_servers())
    [(verdict, out)] = feed.send([syn(CPORT)])
    assert verdict == "nat" and IP(out).dst in (RIP1, RIP2)
    actions = [a[0] for a in d.ctl.actions]
    assert actions and "teardown" not in actions
    snap = d.status()
    [svc] = snap["services"]
    assert (svc["vip"], svc["port"], svc["scheduler"]) == (VIP, VPORT, "wlc")
    assert sum(x["active"] + x["inactive"] for x in svc["dests"]) == 1
    text = format_list(snap)
    assert f"TCP  {VIP}:{VPORT} wlc" in text and "Masq" in text


def test_reload_keeps_connections_and_applies_weights(director, tmp_path):
    d, feed = director(two_servers(1, 1, sched="wrr"))
    first = {}
    for port in range(41000, 41004):
        [(v, out)] = feed.send([syn(port)])
        first[port] = IP(out).dst
    (tmp_path / "lvs.cf").write_text(two_servers(0, 1, sched="wrr"))  # web1 quiesced
    assert d.reload()
    assert d.fwd.tables.generation == 2
    for port, rip in first.items():  # established connections keep their server
        [(v, out)] = feed.send([tcp(CLIENT, VIP, port, VPORT, "A", seq=1001, ack=1)])
        assert v == "nat" and IP(out).dst == rip
    for port in range(42000, 42004):  # new ones avoid the weight-0 server
        [(v, out)] = feed.send([syn(port)])
        assert IP(out).dst == RIP2
    assert any(a[0] == "update" for a in d.ctl.actions)


def test_bad_reload_keeps_the_running_config(director, tmp_path):
    d, feed = director(two_servers())
    (tmp_path / "lvs.cf").write_text(two_servers() + "virtual broken {\n  scheduler = nosuch\n")
    assert not d.reload()
    assert d.failed_reloads == 1 and d.fwd.tables.generation == 1
    [(v, out)] = feed.send([syn(43000)])
    assert v == "nat"


def test_bad_config_does_not_start(tmp_path):
    cf = tmp_path / "lvs.cf"
    cf.write_text("serial_no = 1\nnetwork = nosuch\n")
    d = Director(str(cf), io="feed", ctl=NETCTL.DryRun(), adapters={"feed": FeedAdapter}, make_health=healthy)
    with pytest.raises(dg.ConfigError):
        d.start()
    assert d.ctl.actions == []  # nothing touched


def test_fos_mode_is_refused(tmp_path):
    cf = tmp_path / "lvs.cf"
    cf.write_text(HEAD.format(network="nat").replace("service = lvs", "service = fos"))
    d = Director(str(cf), io="feed", ctl=NETCTL.DryRun(), adapters={"feed": FeedAdapter}, make_health=healthy)
    with pytest.raises((dg.ConfigError, DirectorError), match="fos|FOS|LVS mode"):
        d.start()
    assert d.ctl.actions == []


def test_signals_drive_reload_and_stop(director, tmp_path):
    d, feed = director(two_servers())
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("code", d.run()))
    t.start()
    try:
        (tmp_path / "lvs.cf").write_text(two_servers(2, 1))
        d._on_signal(signal.SIGHUP, None)
        deadline = time.monotonic() + 10
        while d.reloads == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert d.reloads == 1
        assert (tmp_path / "status.json").exists()
    finally:
        d._on_signal(signal.SIGTERM, None)
        t.join(10)
    assert result["code"] == 0
    assert d.ctl.actions[-1][0] == "teardown" and feed.closed
    assert not (tmp_path / "status.json").exists()


def test_dataplane_failure_stops_the_director(director):
    d, feed = director(two_servers())
    feed.inbox.put(["not a packet list"])  # batch_from_packets raises in the dataplane thread
    code = d.run()
    assert code == 1 and d.ctl.actions[-1][0] == "teardown"


def test_reload_whose_kernel_update_fails_keeps_the_running_tables(director, tmp_path, monkeypatch):
    d, feed = director(two_servers())

    def refuse(plan):
        raise NETCTL.NetCtlError("iptables-nft-restore: exit 1")

    monkeypatch.setattr(d.ctl, "update", refuse)
    (tmp_path / "lvs.cf").write_text(two_servers(2, 1))
    assert not d.reload()
    assert d.failed_reloads == 1 and d.fwd.tables.generation == 1
    [(v, _)] = feed.send([syn(44000)])
    assert v == "nat"


def test_standby_forwards_only_between_usr1_and_usr2(director, tmp_path):
    r, w = os.pipe()
    adapters = []
    d, feed = director(two_servers(), standby=True, notify_fd=w)
    assert not d.active and d.adapter is None and [a[0] for a in d.ctl.actions] == []
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("code", d.run()))
    t.start()

    def wait_for(cond):
        deadline = time.monotonic() + 10
        while not cond() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert cond()

    try:
        d._on_role_signal(signal.SIGUSR1, None)
        wait_for(lambda: d.active)
        adapters.append(d.adapter)
        [(verdict, _)] = d.adapter.send([syn(CPORT)])
        assert verdict == "nat"
        assert [a[0] for a in d.ctl.actions][-1] == "apply"
        d._on_role_signal(signal.SIGUSR2, None)
        wait_for(lambda: not d.active)
        assert d.ctl.actions[-1][0] == "teardown" and adapters[0].closed
        assert d.fwd.snapshot()["connections"] == 1  # the table stays: a takeover keeps it
        d._on_role_signal(signal.SIGUSR1, None)
        wait_for(lambda: d.active)
        assert d.activations == 2
    finally:
        d._on_signal(signal.SIGTERM, None)
        t.join(10)
    assert result["code"] == 0
    assert os.read(r, 100).decode().split() == ["standby", "active", "standby", "active", "standby"]
    os.close(r)
    os.close(w)


def test_workers_need_the_c_loop_and_balance_their_queues(tmp_path):
    cf = tmp_path / "lvs.cf"
    cf.write_text(HEAD.format(network="nat") + virtual("www", VIP, VPORT, servers=[("a", RIP1, None, 1)]))
    for io in ("nfq-native", "nfqueue", "afpacket"):
        with pytest.raises(DirectorError, match="need --io nfq-loop or afxdp"):
            Director(str(cf), io=io, workers=2)
    Director(str(cf), io="afxdp", workers=2)  # its loops take the receive queues
    with pytest.raises(DirectorError, match="at least 1"):
        Director(str(cf), workers=0)
    d = Director(str(cf), queue=4, workers=3, ctl=NETCTL.DryRun())
    rules = "\n".join(str(c) for c in d._plan(d._read()).chains)
    assert "--queue-balance 4:6" in rules and "--queue-num" not in rules


def test_afxdp_options_are_checked_and_its_plan_has_no_rules(tmp_path):
    cf = tmp_path / "lvs.cf"
    cf.write_text(HEAD.format(network="nat") + virtual("www", VIP, VPORT, servers=[("a", RIP1, None, 1)]))
    with pytest.raises(DirectorError, match="--busy-poll is for --io afxdp"):
        Director(str(cf), busy_poll_us=100)
    with pytest.raises(DirectorError, match="--xdp-mode zero"):
        Director(str(cf), io="afxdp", xdp_mode="zero")
    with pytest.raises(DirectorError, match="0 .. 100000"):
        Director(str(cf), io="afxdp", busy_poll_us=-1)
    d = Director(str(cf), io="afxdp", busy_poll_us=200, ctl=NETCTL.DryRun())
    d.capture = "afxdp"
    plan = d._plan(d._read())
    assert plan.chains == () and plan.nft is None and plan.xdp.services[0] == (VIP, VPORT, 6)
