"""pylvsadm driving a bare director, as a script written for kernel IPVS drives ipvsadm.

The guide's NAT lab: the director starts with no lvs.cf (``pylvs lvs --bare``); a shell
script brings up the VIP and the NAT router address as an operator of kernel IPVS does,
and builds the table with ``pylvsadm`` alone (wrr 1:2:3 by ``-w``).  Real clients, real
servers, the kernel's TCP at both ends.
"""

from __future__ import annotations

import re
import socket
import sys
from collections import Counter
from pathlib import Path

import pytest

from pylvs.lab import topology as topo
from pylvs.lab.director import LabDirector
from pylvs.lab.probes import http_keepalive_get

PYLVSADM = Path(sys.executable).with_name("pylvsadm")  # the console script `make deps` installs
VIP = f"{topo.VIP}:{topo.HTTP_PORT}"
# ipvsadm -L -n -c: "%-3s %02d:%02d  %-11s %-18s %-18s %s" (ipvsadm.c print_conn)
CONN_LINE = re.compile(r"^(TCP|UDP) (\d\d):(\d\d)  (\S+) +(\S+) +(\S+) +(\S+)$")
TCP_TIMEOUT = 900  # ESTABLISHED (ipvsadm -L --timeout: tcp)
TIME_WAIT_TIMEOUT = 120  # the kernel's tcp_timeouts[TIME_WAIT]
DEST_COUNTS_AT = len("  -> ") + 28 + 1 + 7 + 1 + 6  # "  -> %-28s %-7s %-6d " then the counts


@pytest.fixture
def bare(make_lab, tmp_path):
    lab = make_lab("nat", real_servers=3)
    d = LabDirector(lab, tmp_path / "lvs", None)
    yield lab, d
    d.stop()


def pylvsadm(lab, d, *args, stdin=None):
    return d.pylvsadm(*args, stdin=stdin)


def script(lab, d, text: str) -> None:
    """Run ``text`` with sh in the director's namespace, `pylvsadm` on its PATH."""
    if not PYLVSADM.exists():
        pytest.fail(f"{PYLVSADM} is missing: `make deps` installs the pylvsadm console script")
    proc = lab.run("dir1", ["env", f"PYLVS_CONTROL={d.control_path}", f"PATH={PYLVSADM.parent}:/usr/sbin:/usr/bin:"
                            "/sbin:/bin", "sh", "-ec", text], timeout=60, check=False)  # fmt: skip
    assert proc.returncode == 0, f"script failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}\n{d.log()}"


def served_by(lab) -> str:
    reply = lab.http_get("client1", topo.VIP)
    assert reply.status == 200
    return reply.body.decode().strip()


def keepalive(lab) -> socket.socket:
    s = lab.socket("client1")
    s.settimeout(5)
    s.connect((topo.VIP, topo.HTTP_PORT))
    return s


def ask(s: socket.socket) -> str:
    return http_keepalive_get(s, topo.VIP).body.decode().strip()


def layout(table: str) -> list[str]:
    """A listing without its ActiveConn/InActConn columns (connections end meanwhile)."""
    return [line[:DEST_COUNTS_AT] for line in table.splitlines()]


def listing(lab, d, *args) -> str:
    p = pylvsadm(lab, d, *args)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_a_script_of_pylvsadm_commands_configures_a_bare_director(bare):
    lab, d = bare
    rs = lab.real_servers
    rips = lab.rips
    script(lab, d, f"""
        ip addr add {topo.VIP}/24 dev eth0
        ip addr add {topo.NAT_ROUTER}/24 dev eth1
        pylvsadm -A -t {VIP} -s wrr
        pylvsadm -a -t {VIP} -r {rips[0]}:80 -m -w 1
        pylvsadm -a -t {VIP} -r {rips[1]}:80 -m -w 2
        pylvsadm -a -t {VIP} -r {rips[2]}:80 -m -w 3
    """)
    table = listing(lab, d, "-L", "-n")
    assert f"TCP  {VIP} wrr\n" in table
    for rip, w in zip(rips, (1, 2, 3), strict=True):
        assert f"  -> {rip + ':80':<28} Masq    {w:<6} " in table

    counts = Counter(served_by(lab) for _ in range(600))
    for server, share in zip(rs, (1 / 6, 2 / 6, 3 / 6), strict=True):
        assert abs(counts[server.name] / 600 - share) <= 0.05 * share, counts

    # -e -w 0 drains a server: its held connection goes on, new ones go elsewhere.
    held = keepalive(lab)
    try:
        owner = ask(held)
        rip = rips[[x.name for x in rs].index(owner)]
        p = pylvsadm(lab, d, "-e", "-t", VIP, "-r", f"{rip}:80", "-m", "-w", "0")
        assert (p.returncode, p.stderr) == (0, "")
        assert ask(held) == owner
        assert owner not in {served_by(lab) for _ in range(30)}

        # -L -n -c: the held connection ESTABLISHED, the closed ones TIME_WAIT, expiry as the kernel prints it.
        conns = listing(lab, d, "-L", "-n", "-c").splitlines()
        assert conns[:2] == ["IPVS connection entries", "pro expire state       source             virtual"
                             "            destination"]  # fmt: skip
        rows = [CONN_LINE.match(x) for x in conns[2:]]
        assert all(rows), conns
        here = f"{held.getsockname()[0]}:{held.getsockname()[1]}"
        (mine,) = [m for m in rows if m[5] == here]
        assert (mine[1], mine[4], mine[6], mine[7]) == ("TCP", "ESTABLISHED", VIP, f"{rip}:80")
        assert TCP_TIMEOUT - 60 <= int(mine[2]) * 60 + int(mine[3]) <= TCP_TIMEOUT
        closed = [m for m in rows if m[5] != here]
        assert len(closed) >= 600
        assert {m[4] for m in closed} <= {"TIME_WAIT", "CLOSE", "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK"}, \
            Counter(m[4] for m in closed)
        assert all(int(m[2]) * 60 + int(m[3]) <= TIME_WAIT_TIMEOUT for m in closed)

        # -d removes it from the table (its held connection keeps its entry until it ends).
        p = pylvsadm(lab, d, "-d", "-t", VIP, "-r", f"{rip}:80")
        assert (p.returncode, p.stderr) == (0, "")
        assert rip not in listing(lab, d, "-L", "-n")
        assert owner not in {served_by(lab) for _ in range(10)}
    finally:
        held.close()

    # -S -n, then -C and -R of what it printed: the same table, serving again.
    before = listing(lab, d, "-L", "-n")
    saved = listing(lab, d, "-S", "-n")
    assert saved.count("\n") == 3 and saved.startswith(f"-A -t {VIP} -s wrr\n")
    assert pylvsadm(lab, d, "-C").returncode == 0
    assert "TCP" not in listing(lab, d, "-L", "-n")
    p = pylvsadm(lab, d, "-R", stdin=saved)
    assert (p.returncode, p.stderr) == (0, "")
    assert layout(listing(lab, d, "-L", "-n")) == layout(before)
    assert served_by(lab) in {x.name for x in rs} - {owner}
    status = d.status()
    assert status["reloads"] == 0 and status["config"] is None
