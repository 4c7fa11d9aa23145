"""The web tool on a pair of routers: its pages (in-process, starlette's TestClient) reach
a real pulse and its director through their ``--web-group`` sockets; APPLY reloads pulse,
which reloads its director, and the result shown is the director's; config sync carries
the file to the backup, and CONTROL/MONITORING says which serial_no the backup fetched.

The browser and the unprivileged process are tests/netns/test_web_lab.py's; here the
pages run in the test process (root), so only the pulse path differs.  Every wait is
bounded."""

from __future__ import annotations

import re

from waits import wait_for

from pylvs.config.parse import parse
from pylvs.lab import topology as topo
from pylvs.lab.director import LabPulse
from pylvs.lab.lvscf import Service, lvs_cf
from pylvs.web import auth
from pylvs.web.app import Settings, Web, build_app

PASSWORD = "pair of routers password"
FAST = "keepalive = 0.2\ndeadtime = 0.6\ngarp_count = 1\n"
WAIT = 30.0


def test_apply_reloads_pulse_and_config_sync_reaches_the_backup(make_lab, tmp_path):
    from starlette.testclient import TestClient

    lab = make_lab("nat", real_servers=2, directors=2)
    secret = tmp_path / "sync.key"
    secret.write_text("a shared secret for config sync\n")
    secret.chmod(0o600)
    extra = FAST + f"config_sync = 1\nconfig_sync_secret = {secret}\nconfig_sync_interval = 0.5\n"
    text = lvs_cf(lab, (Service(scheduler="wrr"),), backup=True, extra_globals=extra)
    routers: list[LabPulse] = []
    try:
        for host in ("dir1", "dir2"):
            routers.append(LabPulse(lab, tmp_path, text, host=host, extra=("--web-group", "nogroup")))
        p1, p2 = routers
        p1.wait_for(lambda s: s["state"] == "active" and s["director"]["role"] == "active", WAIT, "active")
        p2.wait_for(lambda s: s["state"] == "standby", WAIT, "standby")

        passwd = tmp_path / "piranha.passwd"
        auth.write_password(str(passwd), PASSWORD)
        web = Web(Settings(lvs_cf=str(p1.cf), passwd=str(passwd), director=str(p1.lvs_web_control_path),
                           pulse=str(p1.web_control_path)))  # fmt: skip
        c = TestClient(build_app(web), base_url="http://127.0.0.1", follow_redirects=False)
        token = re.search(r'name="token" value="([^"]+)"', c.get("/login").text)[1]
        assert c.post("/login", data={"token": token, "password": PASSWORD, "next": "/monitor"}).status_code == 303

        page = c.get("/monitor").text
        assert re.search(r'id="pulse-state">primary, <strong>active</strong>', page), page
        assert "serving lvs.cf to the backup" in page
        csrf = re.search(r'name="csrf" value="([^"]+)"', page)[1]

        rs1 = lab.rips[0]
        r = c.post("/virtual/www/real/rs1", data={"csrf": csrf, "name": "rs1", "address": rs1, "port": "",
                                                  "weight": "7"})  # fmt: skip
        assert r.status_code == 303, r.text
        version = re.search(r'name="version" value="(\d+)"', c.get("/apply").text)[1]
        r = c.post("/apply", data={"csrf": csrf, "version": version, "serial": "1"})
        assert 'id="written"' in r.text and "serial_no 2" in r.text, r.text
        assert "pulse and its director reloaded" in r.text, r.text
        assert "fetches serial_no 2 within 0.5 s" in r.text
        status = p1.lvs_control({"cmd": "status"})["status"]  # the socket, not the file rewritten each second
        assert status["serial_no"] == 2
        assert {d["addr"]: d["weight"] for s in status["services"] for d in s["dests"]}[rs1] == 7

        # the backup fetches the new file by itself, and the primary's page says so
        wait_for(lambda: parse(p2.cf.read_text()).config.serial_no == 2, WAIT, "the backup on serial_no 2")
        wait_for(lambda: f"the last by {topo.DIRECTOR_PUBLIC[1]} (serial_no 2)" in c.get("/monitor").text, WAIT,
                 "the page naming the backup's fetch")  # fmt: skip
        assert p2.cf.read_text() == p1.cf.read_text()
    finally:
        for p in routers:
            p.stop()
