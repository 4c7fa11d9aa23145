"""LOCALNODE end to end: a virtual service whose real servers are rs1 and the director
itself (its private address).  The director's own web server (a plain socket server on
port 80 in dir1's namespace) answers the connections scheduled to it, from the VIP, and
pylvsadm lists that server as ``Local``, as ipvsadm lists the kernel's."""

from __future__ import annotations

import sys

from pylvs.lab import topology as topo
from pylvs.lab.director import LabDirector
from pylvs.lab.lvscf import Service, lvs_cf

LOCAL_SERVER = f"""
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", {topo.HTTP_PORT})); s.listen(64)
while True:
    c, _ = s.accept()
    c.recv(4096)
    c.sendall(b"HTTP/1.0 200 OK\\r\\nContent-Length: 9\\r\\nConnection: close\\r\\n\\r\\ndirector\\n")
    c.close()
"""


def test_the_director_serves_as_one_of_its_own_real_servers(make_lab, tmp_path):
    lab = make_lab("nat", real_servers=1)
    lab.popen("dir1", [sys.executable, "-c", LOCAL_SERVER], what="the director's web server")
    me = topo.DIRECTOR_PRIVATE[0]
    text = lvs_cf(lab, [Service(scheduler="rr")], rips=[lab.rips[0], me])
    d = LabDirector(lab, tmp_path / "lvs", text)
    try:
        st = d.wait_for(lambda s: sum(len(v["dests"]) for v in s["services"]) == 2, 30, "both servers in")
        forward = {x["addr"]: x["forward"] for v in st["services"] for x in v["dests"]}
        assert forward == {lab.rips[0]: "Masq", me: "Local"}
        got = [lab.http_get("client1", topo.VIP).body.decode().strip() for _ in range(6)]
        assert set(got) == {"rs1", "director"}, got  # rr: each in turn
        listing = d.pylvsadm("-L", "-n")
        assert listing.returncode == 0 and f"{me}:{topo.HTTP_PORT}" in listing.stdout
        assert any(line.split()[2] == "Local" for line in listing.stdout.splitlines() if me in line), listing.stdout
        reasons = d.control({"cmd": "status"})["status"]["reasons"]
        assert reasons.get("local", 0) >= 3 * 2  # the SYN and the ACKs of three connections, at least
    finally:
        d.stop()
