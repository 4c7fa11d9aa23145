"""The web tool's control sockets (``--web-group``) of a real ``pylvs lvs`` and a real
``pylvs pulse`` in a lab: mode 0660 and the group; an unprivileged process of that group
reaches the web socket (status, server.state) and not the root one, a process outside
the group reaches neither; pulse answers status and reload on its sockets, and its
director opens its own web socket.

The runtime directory is a world-traversable folder of its own (pytest's tmp_path is
root's alone), as /run/pylvs is.
"""

from __future__ import annotations

import grp
import json
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest
from waits import wait_for

from pylvs.lab.director import LabDirector, LabPulse
from pylvs.lab.lvscf import Service, lvs_cf

NOBODY = 65534  # nobody / nogroup on Debian
SYSTEM_PYTHON = "/usr/bin/python3"  # the unprivileged client: stdlib only (the venv may be root's)
WAIT = 30.0
# An unprivileged client: one request, the reply or the error's name.
CLIENT = r"""
import json, socket, sys
try:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(20)
        s.connect(sys.argv[1])
        s.sendall(sys.argv[2].encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    print(json.dumps(json.loads(data)))
except OSError as exc:
    print(json.dumps({"oserror": type(exc).__name__}))
"""


def web_gid() -> int:
    """A group that is not nobody's nor root's: the web tool's in this test."""
    for g in sorted(grp.getgrall(), key=lambda g: g.gr_gid):
        if g.gr_gid not in (0, NOBODY) and "nobody" not in g.gr_mem:
            return g.gr_gid
    pytest.skip("no group to give the web socket")


@pytest.fixture
def rundir():
    d = Path(tempfile.mkdtemp(prefix="pylvs-web-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def as_nobody(path: Path, msg: dict, groups: list[int]) -> dict:
    """``msg`` sent to ``path`` by uid nobody with these supplementary groups."""
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.skip(f"{SYSTEM_PYTHON} missing: no unprivileged client")
    r = subprocess.run([SYSTEM_PYTHON, "-c", CLIENT, str(path), json.dumps({"v": 1, **msg})], user=NOBODY,
                       group=NOBODY, extra_groups=groups, capture_output=True, text=True, timeout=30, cwd="/")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def socket_mode(path: Path) -> tuple[str, int]:
    st = os.stat(path)
    assert stat.S_ISSOCK(st.st_mode)
    return oct(st.st_mode & 0o777), st.st_gid


def test_director_web_socket_for_its_group_alone(make_lab, rundir):
    lab = make_lab("nat", real_servers=2)
    gid = web_gid()
    d = LabDirector(lab, rundir / "lvs", lvs_cf(lab, [Service(scheduler="rr")]), extra=("--web-group", str(gid)))
    (rundir / "lvs").chmod(0o755)
    try:
        d.wait_for(lambda s: sum(len(v["dests"]) for v in s["services"]) == 2, WAIT, "both real servers in")
        assert d.web_control_path == rundir / "lvs" / "lvs.web.ctl"
        assert socket_mode(d.web_control_path) == ("0o660", gid)
        assert socket_mode(d.control_path)[0] == "0o600"

        # The web group's user: the web socket answers, the root socket is closed to it.
        status = as_nobody(d.web_control_path, {"cmd": "status"}, [gid])
        assert status["ok"] is True and status["status"]["virtuals"][0]["name"] == "www"
        assert as_nobody(d.control_path, {"cmd": "status"}, [gid]) == {"oserror": "PermissionError"}
        assert as_nobody(d.web_control_path, {"cmd": "status"}, []) == {"oserror": "PermissionError"}
        refused = as_nobody(d.web_control_path, {"cmd": "ipvs.apply", "commands": []}, [gid])
        assert refused == {"v": 1, "ok": False, "error": "verb ipvs.apply is not offered on this socket"}

        # Drain a server from the web socket: weight 0 in the running table, kept by a reload.
        server = status["status"]["virtuals"][0]["servers"][0]
        drain = {"cmd": "server.state", "virtual": "www", "server": server["name"], "state": "drain"}
        assert as_nobody(d.web_control_path, drain, [gid]) == {"v": 1, "ok": True, "state": "drain"}
        reply = d.control({"cmd": "reload"}, web=True)
        assert (reply["ok"], reply["error"]) == (True, None)
        dests = {x["addr"]: x["weight"] for x in d.control({"cmd": "ipvs.get"})["snapshot"]["services"][0]["dests"]}
        assert dests[server["address"]] == 0 and sorted(dests.values()) == [0, 1]
        d.control({"cmd": "server.state", "virtual": "www", "server": server["name"], "state": "ready"})
        assert d.wait_for(lambda s: all(x["weight"] == 1 for x in s["services"][0]["dests"]), WAIT, "ready")
    finally:
        assert d.stop() == 0
    assert not d.web_control_path.exists() and not d.control_path.exists()


def test_pulse_sockets_and_its_directors_web_socket(make_lab, rundir):
    lab = make_lab("nat", real_servers=2)
    gid = web_gid()
    p = LabPulse(lab, rundir, lvs_cf(lab, [Service(scheduler="rr")]), host="dir1", forceactive=True,
                 extra=("--web-group", str(gid)))  # fmt: skip
    (rundir / "dir1").chmod(0o755)
    try:
        p.wait_for(lambda s: s["director"]["role"] == "active", WAIT, "active")
        assert socket_mode(p.control_path)[0] == "0o600"
        assert socket_mode(p.web_control_path) == ("0o660", gid)
        assert socket_mode(p.lvs_web_control_path) == ("0o660", gid)

        status = p.control({"cmd": "status"})["status"]
        assert status["director"]["web_control"] == str(p.lvs_web_control_path)
        assert as_nobody(p.web_control_path, {"cmd": "status"}, [gid])["status"]["state"] == "active"
        assert as_nobody(p.control_path, {"cmd": "status"}, [gid]) == {"oserror": "PermissionError"}
        assert p.control({"cmd": "server.state"}, web=True)["error"] == \
            "verb server.state is not offered on this socket"  # fmt: skip

        # reload through pulse: pulse takes the file, its director reloads on the SIGHUP.
        before = p.lvs_control({"cmd": "status"}, web=True)["status"]["reloads"]
        assert as_nobody(p.web_control_path, {"cmd": "reload"}, [gid]) == {"v": 1, "ok": True, "error": None}
        wait_for(lambda: p.lvs_status()["reloads"] == before + 1, WAIT, "the director reloaded")
        (p.cf).write_text(p.cf.read_text() + "virtual broken {\n  scheduler = nosuch\n")
        reply = p.control({"cmd": "reload"})
        assert reply["ok"] is False and reply["error"].startswith("reload refused")
    finally:
        assert p.stop() == 0
    for path in (p.control_path, p.web_control_path, p.lvs_web_control_path):
        assert not path.exists(), path
