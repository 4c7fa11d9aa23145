"""A NAT real server's own connections beside a firewall-mark service (docs/netctl.md,
"The classify pass").  A fwmark service takes every port of its real servers' replies, so
the director once untracked all their forwarded traffic and the operator's MASQUERADE rule
never saw it: updates, DNS and active FTP from a real server left with its private
address.  Now each such packet is looked up: the service's replies are still ours (the
clients are served), the server's own connections are tracked and NATed by the kernel."""

from __future__ import annotations

import subprocess
import sys

from pylvs.lab import topology as topo
from pylvs.lab.director import LabDirector
from pylvs.lab.lvscf import Service, lvs_cf

OUTSIDE_PORT = 8081
# A web server outside the director (on the client's side) that answers with the address
# it was reached from: the director's own public one once MASQUERADE has done its work.
OUTSIDE_SERVER = f"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", {OUTSIDE_PORT})); s.listen(16)
while True:
    c, peer = s.accept()
    c.recv(4096)
    body = peer[0].encode() + b"\\n"
    c.sendall(b"HTTP/1.0 200 OK\\r\\nContent-Length: %d\\r\\nConnection: close\\r\\n\\r\\n" % len(body) + body)
    c.close()
"""
FWMARK = 80


def iptables(lab, *args: str) -> str:
    return lab.run("dir1", ["iptables", *args]).stdout


def test_a_real_server_reaches_the_outside_through_masquerade_beside_a_fwmark_service(make_lab, tmp_path):
    lab = make_lab("nat", real_servers=2)
    outside = lab.clients[0].ip()
    lab.popen("client1", [sys.executable, "-c", OUTSIDE_SERVER], what="the outside web server",
              stdout=subprocess.DEVNULL)  # fmt: skip
    # The guide's operator rules: the mark for the service, a general MASQUERADE for the
    # private network's own connections out through the NAT router.
    iptables(lab, "-t", "mangle", "-A", "PREROUTING", "-p", "tcp", "-d", f"{topo.VIP}/32", "--dport",
             str(topo.HTTP_PORT), "-j", "MARK", "--set-mark", str(FWMARK))  # fmt: skip
    iptables(lab, "-t", "nat", "-A", "POSTROUTING", "-s", topo.SEGMENT_NETS[topo.PRIVATE], "-j", "MASQUERADE")
    text = lvs_cf(lab, [Service(name="shop", scheduler="rr", fwmark=FWMARK)])
    d = LabDirector(lab, tmp_path / "lvs", text, io="nfq-loop")  # marks are netfilter's: not afxdp
    try:
        d.wait_for(lambda s: sum(len(v["dests"]) for v in s["services"]) == 2, 30, "both servers in")
        served = [lab.http_get("client1", topo.VIP).body.decode().strip() for _ in range(4)]
        assert set(served) == {rs.name for rs in lab.real_servers}, served  # the service: rr over both
        for rs in lab.real_servers:
            seen = lab.http_get(rs, outside, OUTSIDE_PORT, timeout=5.0).body.decode().strip()
            assert seen == topo.DIRECTOR_PUBLIC[0], f"{rs.name} reached {outside} as {seen}"
        masq = iptables(lab, "-t", "nat", "-L", "POSTROUTING", "-v", "-n", "-x")
        line = next(ln for ln in masq.splitlines() if "MASQUERADE" in ln)
        assert int(line.split()[0]) >= 2, masq  # one connection per server, counted on its first packet
        classify = d.control({"cmd": "status"})["status"]["adapter"]["classify"]
        # ours: at least each served connection's SYN-ACK; the servers' own: their SYNs at least
        assert classify["owned"] >= 4 and classify["accepted"] >= 2, classify
        assert classify["dropped"] == 0, classify
    finally:
        d.stop()
