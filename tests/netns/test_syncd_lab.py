"""The sync daemon between two directors of a lab (reference 10): a master SyncDaemon
with its socket in dir1 and a backup with its socket in dir2 carry connection entries
over the private segment, by multicast (224.0.0.81:8848) and by unicast; a message of
another syncid is dropped and counted.  Both Forwarders run in this process, compiled
from one lvs.cf text with the lab's addresses; only the sync datagrams cross the lab."""

from __future__ import annotations

import time

import pytest
from golden import HEAD, tcp, virtual

from pylvs.addr import ip_int
from pylvs.config import check_text
from pylvs.dataplane import conntab as ctm
from pylvs.dataplane import engine as en
from pylvs.dataplane import tables as tb
from pylvs.dataplane.forwarder import Forwarder
from pylvs.ha.syncd import SyncDaemon

VIP = "10.77.1.100"
CLIENT = "10.77.1.51"
DIR1_PRIV, DIR2_PRIV = "10.77.2.1", "10.77.2.2"
WAIT = 10.0  # seconds a test waits for the backup at most
PORT = 18848  # not the default: several tests in a row, sockets linger nowhere


def forwarder(rip: str) -> Forwarder:
    cf = HEAD.format(network="nat") + virtual("www", VIP, 80, servers=[("rs1", rip, None, 1)])
    r = check_text(cf)
    assert r.ok, [str(d) for d in r.diagnostics]
    return Forwarder(tb.compile(r.config), capacity=1024, clock=time.monotonic)


def established(fwd: Forwarder, cport: int) -> None:
    pkts = [tcp(CLIENT, VIP, cport, 80, "S"), tcp(CLIENT, VIP, cport, 80, "A", seq=1001, ack=5001),
            tcp(CLIENT, VIP, cport, 80, "PA", b"x", seq=1001, ack=5001)]
    v = fwd.handle(en.batch_from_packets([bytes(p) for p in pkts]))
    assert list(v.verdict) == [en.V_NAT] * 3


def has_entry(fwd: Forwarder, cport: int) -> bool:
    with fwd.exclusive():
        return ctm.lookup_in(fwd.ct, 6, ip_int(CLIENT), cport, ip_int(VIP), 80, time.monotonic()) >= 0


def wait_for(cond, timeout: float = WAIT) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


@pytest.fixture
def lab(make_lab):
    return make_lab("nat", real_servers=1, directors=2)


def daemons(lab, *, master_id=1, backup_id=1, unicast=False, port=PORT):
    a, b = forwarder(lab.rips[0]), forwarder(lab.rips[0])
    m = SyncDaemon(a, syncid=master_id, port=port, iface_addr=DIR1_PRIV,
                   unicast_peer=DIR2_PRIV if unicast else None,
                   make_socket=lambda f, t: lab.socket("dir1", f, t))
    s = SyncDaemon(b, syncid=backup_id, port=port, iface_addr=DIR2_PRIV,
                   unicast_peer=DIR1_PRIV if unicast else None,
                   make_socket=lambda f, t: lab.socket("dir2", f, t))
    return a, b, m, s


@pytest.mark.parametrize("unicast", [False, True], ids=["multicast", "unicast"])
def test_entries_reach_the_backup(lab, unicast):
    a, b, master, backup = daemons(lab, unicast=unicast)
    backup.start_backup()
    master.start_master()
    try:
        established(a, 40000)
        assert wait_for(lambda: has_entry(b, 40000)), (master.stats(), backup.stats())
        established(a, 40001)
        assert wait_for(lambda: has_entry(b, 40001)), (master.stats(), backup.stats())
    finally:
        master.stop()
        backup.stop()
    ms, bs = master.stats(), backup.stats()
    assert ms["conns_sent"] == 2 and ms["messages_sent"] >= 2 and "send_error" not in ms
    assert bs["apply_created"] == 2 and bs["conns_received"] == 2 and "wrong_syncid" not in bs
    # The backup's table counts the synced connections as the master's did.
    row = tb.list_rows(b.tables, 0)[0]
    assert ctm.conns(b.ct, row) == (2, 0, 0)
    # and forwards the connection to the same real server
    v = b.handle(en.batch_from_packets([bytes(tcp(CLIENT, VIP, 40000, 80, "A", seq=1002, ack=5001))]))
    assert (int(v.verdict[0]), int(v.dest_row[0])) == (en.V_NAT, row)


def test_wrong_syncid_is_dropped_and_counted(lab):
    a, b, master, backup = daemons(lab, master_id=1, backup_id=2)
    backup.start_backup()
    master.start_master()
    try:
        established(a, 40000)
        assert wait_for(lambda: backup.stats().get("wrong_syncid", 0) >= 1), (master.stats(), backup.stats())
    finally:
        master.stop()
        backup.stop()
    assert not has_entry(b, 40000)
    assert "apply_created" not in backup.stats()


def test_switching_role_stops_the_other(lab):
    a, _, master, _ = daemons(lab)
    master.start_master()
    assert master.stats()["role"] == "master"
    master.start_backup()
    assert master.stats()["role"] == "backup"
    master.stop()
    assert master.stats()["role"] is None


def test_iface_address_reads_the_namespace_it_runs_in(lab):
    from pylvs.ha.syncd import iface_address

    assert lab.call("dir2", iface_address, "eth1") == DIR2_PRIV
