"""End to end: two routers running `pylvs pulse`, three real servers and a client.

Each test builds a lab with dir1 (primary, 10.77.1.1 / 10.77.2.1) and dir2 (backup,
10.77.1.2 / 10.77.2.2) on both segments, starts ``python -m pylvs pulse`` in each as an
operator would, and checks what the client sees: which MAC its neighbour entry holds for
the VIP (gratuitous ARP), whether new and long-lived connections work.  A failing box is
SIGKILL of pulse and its director plus its links cut; a failing daemon is the SIGKILL
alone.  Heartbeats run at keepalive 0.2 s / deadtime 0.6 s unless a test says otherwise.
"""

from __future__ import annotations

import json
import socket
import struct
import time

import pytest

from pylvs.ha import heartbeat as hb
from pylvs.lab import netns
from pylvs.lab import topology as topo
from pylvs.lab.director import LabPulse
from pylvs.lab.lvscf import Service, lvs_cf
from pylvs.lab.probes import http_keepalive_get

KEEPALIVE, DEADTIME = 0.2, 0.6
FAST = (f"keepalive = {KEEPALIVE}\ndeadtime = {DEADTIME}\ngarp_count = 3\ngarp_interval = 0.3\n"
        "garp_refresh = 1\n")  # fmt: skip
SYNC = "syncdaemon = 1\nsyncd_iface = eth1\nsyncd_id = 7\n"
TAKEOVER_SLACK = 1.0  # the acceptance: the backup owns the VIP within deadtime + 1 s
WAIT = 30.0  # generous bounds for state changes on a slow CI machine (never asserted as timings)
DIR_MAC = {"dir1": topo._mac(topo.DIRECTOR_PUBLIC[0]), "dir2": topo._mac(topo.DIRECTOR_PUBLIC[1])}


@pytest.fixture
def pulses(tmp_path):
    running: list[LabPulse] = []

    def start(lab, text: str | None, host: str, **kw) -> LabPulse:
        p = LabPulse(lab, tmp_path, text or "", host=host, **kw)
        running.append(p)
        return p

    yield start
    for p in running:
        p.stop()


WWW = (Service(),)


def ha_cf(lab, extra: str = "", services=WWW, serial_no: int = 1) -> str:
    return lvs_cf(lab, services, backup=True, serial_no=serial_no, extra_globals=FAST + extra)


def active(p: LabPulse, timeout: float = WAIT) -> dict:
    return p.wait_for(lambda s: s["state"] == "active" and s["director"]["role"] == "active", timeout, "active")


def standby(p: LabPulse, timeout: float = WAIT) -> dict:
    return p.wait_for(lambda s: s["state"] == "standby" and s["director"]["role"] == "standby", timeout, "standby")


def has_vip(lab, host: str) -> bool:
    out = lab.run(host, ["ip", "-j", "addr", "show"]).stdout
    return any(a.get("local") == topo.VIP for link in json.loads(out) for a in link.get("addr_info", []))


def neighbour_mac(lab, ip: str = topo.VIP, host: str = "client1") -> str | None:
    out = json.loads(lab.run(host, ["ip", "-j", "neigh", "show", ip]).stdout or "[]")
    return out[0].get("lladdr") if out else None


def until(cond, timeout: float = WAIT, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(step)
    return cond()


def served(lab) -> str | None:
    try:
        reply = lab.http_get("client1", topo.VIP, timeout=2.0)
    except OSError:
        return None
    return reply.body.decode().strip() if reply.status == 200 else None


def cut_links(lab, host: str) -> None:
    for dev in (topo.PUBLIC_IF, topo.PRIVATE_IF):
        lab.run(host, ["ip", "link", "set", dev, "down"])


def two_routers(lab, pulses, text: str) -> tuple[LabPulse, LabPulse]:
    p1 = pulses(lab, text, "dir1")
    p2 = pulses(lab, text, "dir2")
    active(p1)
    standby(p2)
    assert until(lambda: served(lab) and neighbour_mac(lab) == DIR_MAC["dir1"])
    return p1, p2


# --- the wire ------------------------------------------------------------------------------------

def test_heartbeat_bytes_and_refusals(make_lab, pulses):
    lab = make_lab("nat", real_servers=1, directors=2)
    # dir2 is a plain socket here: it captures what dir1's pulse sends and answers badly.
    peer = lab.socket("dir2", socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind((topo.DIRECTOR_PUBLIC[1], 539))
    peer.settimeout(WAIT)
    p1 = pulses(lab, ha_cf(lab), "dir1")
    seen = set()
    while hb.HEARTBEAT_RUNNING not in seen:  # STOPPED while standby, RUNNING once it took over
        data, (src, _) = peer.recvfrom(64)
        assert (src, len(data)) == (topo.DIRECTOR_PUBLIC[0], 4)
        seen.add(struct.unpack("<I", data)[0])
    assert seen == {hb.HEARTBEAT_STOPPED, hb.HEARTBEAT_RUNNING}
    assert hb.encode(hb.HEARTBEAT_RUNNING) == b"\xda\xdb\xad\xbd"
    peer.sendto(hb.encode(hb.HEARTBEAT_RUNNING) + b"\0\0", (topo.DIRECTOR_PUBLIC[0], 539))
    peer.sendto(hb.encode(hb.FOS_HEARTBEAT_RUNNING), (topo.DIRECTOR_PUBLIC[0], 539))
    stranger = lab.socket("client1", socket.AF_INET, socket.SOCK_DGRAM)
    stranger.sendto(hb.encode(hb.HEARTBEAT_STOPPED), (topo.DIRECTOR_PUBLIC[0], 539))
    s = p1.wait_for(lambda s: {"rejected_bad_length", "rejected_incompatible", "rejected_unexpected_source"}
                    <= set(s["counters"]), WAIT, "counting the refusals")
    assert s["state"] == "active"  # none of them changed anything
    log = p1.log()
    assert "bad heartbeat packet from 10.77.1.2 (6 bytes)" in log
    assert "Incompatible heartbeat received from 10.77.1.2" in log
    assert "Unexpected heartbeat from 10.77.1.51" in log
    # a big-endian peer (pulse on a big-endian box) is understood
    peer.sendto(struct.pack(">I", hb.HEARTBEAT_RUNNING), (topo.DIRECTOR_PUBLIC[0], 539))
    p1.wait_for(lambda s: s["counters"].get("received_RUNNING"), WAIT, "hearing a big-endian RUNNING")
    for sock in (peer, stranger):
        sock.close()


# --- failover --------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["nat", "direct"])
@pytest.mark.parametrize("sync", [True, False], ids=["sync", "nosync"])
def test_box_fails_backup_takes_over(make_lab, pulses, kind, sync):
    lab = make_lab(kind, real_servers=3, directors=2)
    p1, p2 = two_routers(lab, pulses, ha_cf(lab, SYNC if sync else ""))
    # A long-lived connection through dir1, seen by dir2's table when sync is on.
    conn = lab.socket("client1")
    conn.settimeout(3.0)
    conn.connect((topo.VIP, topo.HTTP_PORT))
    first = http_keepalive_get(conn, topo.VIP)
    assert first.status == 200
    if sync:
        assert until(lambda: p2.lvs_status()["connections"] >= 1), "the connection never reached dir2"
    killed = time.monotonic()
    p1.kill()
    cut_links(lab, "dir1")
    assert until(lambda: has_vip(lab, "dir2"), timeout=WAIT, step=0.02)
    took = time.monotonic() - killed
    assert took <= DEADTIME + TAKEOVER_SLACK, f"dir2 took the VIP {took:.2f} s after the kill"
    assert until(lambda: neighbour_mac(lab) == DIR_MAC["dir2"]), neighbour_mac(lab)
    assert until(lambda: served(lab))  # new connections work through dir2
    assert "partner dead: activating lvs" in p2.log()
    if sync:
        again = http_keepalive_get(conn, topo.VIP)
        assert again.status == 200 and again.body == first.body  # same connection, same real server
        assert p2.lvs_status()["sync"]["conns_received"] >= 1
    else:
        with pytest.raises(OSError):  # reset or timed out: dir2 never heard of it
            http_keepalive_get(conn, topo.VIP)
    conn.close()


RECORD = """#!/bin/sh
echo "$(ip netns identify $$) $1" >> {log}
"""


def test_only_the_daemon_dies(make_lab, pulses, tmp_path):
    """pulse and its director SIGKILLed, the box up with the VIP still configured: dir2
    takes over, its periodic gratuitous ARP (garp_refresh) wins back a client that asked
    again and got dir1's answer, and dir1's next start removes the stale VIP.  Along the
    way, active_cmd and inactive_cmd run where and when pulse runs them."""
    lab = make_lab("nat", real_servers=3, directors=2)
    record, events = tmp_path / "record.sh", tmp_path / "events.log"
    record.write_text(RECORD.format(log=events))
    record.chmod(0o755)
    text = ha_cf(lab, f"active_cmd = \"{record} active\"\ninactive_cmd = \"{record} inactive\"\n")
    p1, p2 = two_routers(lab, pulses, text)
    d1, d2 = f"{lab.name}-dir1", f"{lab.name}-dir2"
    lines = until(lambda: events.exists() and {f"{d1} inactive", f"{d1} active", f"{d2} inactive"}
                  <= set(events.read_text().splitlines()) and events.read_text().splitlines())
    assert lines, events.read_text() if events.exists() else "no events"
    p1.kill()
    assert has_vip(lab, "dir1")  # nothing cleaned up: the hard case
    active(p2)
    assert until(lambda: neighbour_mac(lab) == DIR_MAC["dir2"])
    # The client forgets and asks again: dir1 still answers ARP for the VIP, and may win.
    lab.run("client1", ["ip", "neigh", "flush", "to", topo.VIP])
    lab.run("client1", ["ping", "-c", "1", "-W", "1", topo.VIP], check=False)
    assert until(lambda: neighbour_mac(lab) == DIR_MAC["dir2"], timeout=3 * 1.0 + 2)  # garp_refresh = 1
    assert until(lambda: served(lab))
    assert until(lambda: f"{d2} active" in events.read_text().splitlines())
    # dir1 comes back: its director's start removes the addresses a killed one left, and it
    # stays standby (no automatic failback).
    p1b = pulses(lab, None, "dir1")
    standby(p1b)
    assert not has_vip(lab, "dir1")
    time.sleep(5 * KEEPALIVE)
    assert p1b.status()["state"] == "standby" and p2.status()["state"] == "active"


def test_partition_heals_to_the_master_and_forceactive_fails_back(make_lab, pulses):
    lab = make_lab("nat", real_servers=3, directors=2)
    text = ha_cf(lab)
    p1, p2 = two_routers(lab, pulses, text)
    # dir2 stops hearing dir1: both active (split brain) ...
    drop = ["iptables", "-w", "-I", "INPUT", "-p", "udp", "--dport", "539", "-j", "DROP"]
    lab.run("dir2", drop)
    active(p2)
    assert p1.status()["state"] == "active"
    # ... healed: the backup yields, the master re-ARPs and keeps the clients.
    lab.run("dir2", ["iptables", "-w", "-D", *drop[3:]])
    standby(p2)
    assert until(lambda: "partner active: resending arps" in p1.log())
    assert until(lambda: neighbour_mac(lab) == DIR_MAC["dir1"])
    assert until(lambda: served(lab))
    # The primary stopped: dir2 takes over; restarted with --forceactive it takes the
    # service back (without it, it would stay standby: no automatic failback).
    p1.stop()
    active(p2)
    p1b = pulses(lab, None, "dir1", forceactive=True)
    active(p1b)
    standby(p2)
    assert until(lambda: neighbour_mac(lab) == DIR_MAC["dir1"])
    assert until(lambda: served(lab))


def test_config_sync(make_lab, pulses, tmp_path):
    lab = make_lab("nat", real_servers=3, directors=2)
    secret = tmp_path / "sync.key"
    secret.write_text("correct horse battery staple 42\n")
    secret.chmod(0o600)
    extra = f"config_sync = 1\nconfig_sync_secret = {secret}\nconfig_sync_interval = 0.5\n"
    weights = Service(scheduler="wrr", weights=(1, 1, 1))
    p1, p2 = two_routers(lab, pulses, ha_cf(lab, extra, (weights,)))
    newer = ha_cf(lab, extra, (Service(scheduler="wrr", weights=(5, 1, 1)),), serial_no=2)
    p1.cf.write_text(newer)
    assert until(lambda: p2.cf.read_text() == newer), p2.log()
    assert until(lambda: p2.lvs_status()["reloads"] >= 1), p2.log()
    bad = newer.replace("serial_no = 2", "serial_no = 3").replace("scheduler = wrr", "scheduler = nonsense")
    p1.cf.write_text(bad)
    assert until(lambda: "10.77.1.1:lvs.cf:" in p2.log()), p2.log()
    older = ha_cf(lab, extra, (weights,), serial_no=1)
    p1.cf.write_text(older)
    assert until(lambda: "serial_no 1 is older than ours (2)" in p2.log()), p2.log()
    assert p2.cf.read_text() == newer  # neither replaced it
    # A backup with the wrong secret is refused by the primary and refuses nothing new.
    p2.stop()
    wrong = tmp_path / "wrong.key"
    wrong.write_text("not the secret at all, not at all\n")
    wrong.chmod(0o600)
    p2.cf.write_text(newer.replace(str(secret), str(wrong)))
    p1.cf.write_text(ha_cf(lab, extra, (weights,), serial_no=9))
    p2b = pulses(lab, None, "dir2")
    standby(p2b)
    assert until(lambda: "bad HMAC" in p1.log() and "wrong secret" in p2b.log()), p1.log() + p2b.log()
    assert "serial_no = 9" not in p2b.cf.read_text()


def test_monitor_links(make_lab, pulses):
    """monitor_links = 1: the active primary loses the carrier of a heartbeat NIC, gives
    the service up (the backup takes it) and takes nothing back until the link returns."""
    lab = make_lab("nat", real_servers=3, directors=2)
    p1, p2 = two_routers(lab, pulses, ha_cf(lab, "monitor_links = 1\n"))
    sw = lab.switches[topo.PRIVATE]  # dir1's private cable: its switch port goes down, eth1 loses carrier
    netns.ip(sw, "link", "set", "dir1", "down")
    s = p1.wait_for(lambda s: s["linkfail"] and s["state"] == "standby", WAIT, "in LINKFAIL")
    assert "Local NIC link failure: Pulse disabled" in s["log"]
    active(p2)
    assert until(lambda: served(lab))
    netns.ip(sw, "link", "set", "dir1", "up")
    p1.wait_for(lambda s: not s["linkfail"], WAIT, "out of LINKFAIL")
    assert until(lambda: "Local NIC link(s) restored: Pulse enabled" in p1.log())
    time.sleep(5 * KEEPALIVE)
    assert p1.status()["state"] == "standby" and p2.status()["state"] == "active"  # no failback
