"""pylvs.health.probes against real servers in a NAT lab: the checks run inside dir1's
namespace, as nanny runs on the router.

``in_dir1_run_checks`` runs in a Python process in ``<lab>-dir1`` (Lab.call) and runs
every check of one test concurrently, each bounded by its own ``timeout``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
from pathlib import Path

from pylvs.config import check_text
from pylvs.health import probes as pr
from pylvs.health.probes import CheckResult, CheckSpec, run_check, spec_for
from pylvs.lab import topology as topo
from pylvs.lab.lvscf import Service, lvs_cf

RS1, RS2 = (f"10.77.2.{topo.RS_FIRST + i}" for i in range(2))
LIMIT = 1.0  # seconds: the checks' time limit (lvs.cf `timeout`) where a check waits
CLOSED_TCP_PORT = 81  # nothing listens there on a real server
CLOSED_UDP_PORT = 9001
SILENT_PORT = 7777  # the "accepts but never answers" server started by the test
PRINT_ARGS = str(Path(__file__).resolve().parent.parent / "health_programs" / "print_args.sh")
SILENT_SERVER = f"""
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", {SILENT_PORT}))
s.listen(16)  # the kernel completes handshakes; nothing is ever read or written
print("ready", flush=True)
time.sleep(120)
"""


def in_dir1_run_checks(specs: dict[str, CheckSpec]) -> dict[str, CheckResult]:
    """Run in dir1: every check at once; their results by name."""
    async def all_checks() -> dict[str, CheckResult]:
        results = await asyncio.gather(*(run_check(s) for s in specs.values()))
        return dict(zip(specs, results, strict=True))
    return asyncio.run(all_checks())


def _tcp(address: str, port: int, **kw: object) -> CheckSpec:
    return CheckSpec(kind="tcp", address=address, port=port, timeout=LIMIT, **kw)  # type: ignore[arg-type]


def _udp(address: str, port: int, **kw: object) -> CheckSpec:
    return CheckSpec(kind="udp", address=address, port=port, timeout=LIMIT, **kw)  # type: ignore[arg-type]


def _start_silent_server(lab, host: str) -> None:
    proc = lab.popen(host, [sys.executable, "-c", SILENT_SERVER], what="silent server",
                     stdout=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # bounded: the script prints at once or dies (EOF)
    proc.stdout.close()
    assert line.strip() == b"ready", f"silent server did not start: {line!r}"


def test_probes_against_real_servers(make_lab):
    lab = make_lab("nat", real_servers=2)
    _start_silent_server(lab, lab.real_servers[1].name)

    # The default HTTP probe, straight from the lab's lvs.cf (port 80, nothing configured).
    checked = check_text(lvs_cf(lab, [Service(port=topo.HTTP_PORT)]))
    assert checked.ok, checked.diagnostics
    v = checked.config.virtuals[0]
    http = [spec_for(checked.config, v, s) for s in v.servers]
    assert http[0].send == pr.HTTP_SEND and http[0].expect == pr.HTTP_EXPECT
    http = [dataclasses.replace(s, timeout=LIMIT) for s in http]

    get = b"GET / HTTP/1.0\r\n\r\n"
    specs = {
        "http rs1": http[0],
        "http rs2": http[1],
        "wrong expect": _tcp(RS1, topo.HTTP_PORT, send=get, expect=b"SMTP"),
        "regex expect": _tcp(RS1, topo.HTTP_PORT, send=get, expect=b"^HTTP/1\\.[01] 200", use_regex=True),
        "regex mismatch": _tcp(RS1, topo.HTTP_PORT, send=get, expect=b"HTTP/1.[01] 404", use_regex=True),
        "connect only": _tcp(RS2, topo.HTTP_PORT),
        "closed port": _tcp(RS1, CLOSED_TCP_PORT),
        "udp echo, no expect": _udp(RS1, topo.UDP_ECHO_PORT, send=b"ping"),
        "udp echo, expect": _udp(RS2, topo.UDP_ECHO_PORT, send=b"ping", expect=b"rs2 ping"),
        "udp echo, wrong expect": _udp(RS2, topo.UDP_ECHO_PORT, send=b"ping", expect=b"rs1"),
        "udp no listener": _udp(RS1, CLOSED_UDP_PORT, send=b"ping"),
        "silent server": _tcp(RS2, SILENT_PORT, send=get, expect=b"HTTP"),
        "program": CheckSpec(kind="program", address=RS1, port=80, timeout=LIMIT * 5,
                             expect=f"{RS1} 80".encode(), program=(PRINT_ARGS, RS1, "80")),
    }
    r = lab.call("dir1", in_dir1_run_checks, specs)
    summary = {name: (res.ok, res.reason, res.detail) for name, res in r.items()}

    def outcome(name: str) -> tuple[bool, str]:
        return r[name].ok, r[name].reason

    assert outcome("http rs1") == (True, pr.OK), summary
    assert outcome("http rs2") == (True, pr.OK), summary
    assert " 200 OK" in r["http rs1"].detail, summary
    assert outcome("wrong expect") == (False, pr.EXPECT_MISMATCH), summary
    assert outcome("regex expect") == (True, pr.OK), summary
    assert outcome("regex mismatch") == (False, pr.EXPECT_MISMATCH), summary
    assert outcome("connect only") == (True, pr.OK), summary
    assert outcome("closed port") == (False, pr.CONNECTION_REFUSED), summary
    assert outcome("udp echo, no expect") == (True, pr.OK), summary
    assert "rs1 ping" in r["udp echo, no expect"].detail, summary
    assert outcome("udp echo, expect") == (True, pr.OK), summary
    assert outcome("udp echo, wrong expect") == (False, pr.EXPECT_MISMATCH), summary
    assert outcome("udp no listener") == (False, pr.PORT_UNREACHABLE), summary
    assert outcome("silent server") == (False, pr.TIMEOUT), summary
    assert r["silent server"].detail.startswith("waiting for a reply"), summary
    assert outcome("program") == (True, pr.OK), summary
