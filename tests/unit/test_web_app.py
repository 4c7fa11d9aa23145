"""The web tool's pages through starlette's TestClient, without a browser or root: sessions,
CSRF, the login limit, field errors beside their fields with lvs.cf untouched, the guide's
chapter 4 flow on a fresh file, a stale apply, exports, admin actions, the allow-list and
the body limit.

The director is a stand-in answering on a real control socket (pylvs.control) with a
recorded status; tests/netns/test_web_lab.py runs the same pages against a real one."""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from pylvs import control
from pylvs.config.check import check_text
from pylvs.config.parse import parse
from pylvs.web import auth
from pylvs.web.app import MAX_BODY, Settings, Web, build_app, networks

PASSWORD = "correct horse battery"
FILE = """\
# lvs.cf of the test router: comments must survive every edit
serial_no = 7
primary = 10.0.0.1
service = lvs
backup_active = 0
backup = 0.0.0.0
heartbeat = 0
heartbeat_port = 539
keepalive = 2
deadtime = 5
network = nat
nat_router = 10.1.1.254 eth1:1
debug_level = NONE

# the web service
virtual www {
     active = 1
     address = 192.168.26.10 eth0:1
     port = 80
     protocol = tcp
     scheduler = wlc
     send = "GET / HTTP/1.0\\r\\n\\r\\n"
     expect = "HTTP"
     timeout = 6
     reentry = 15

     server rs1 {
         address = 10.1.1.2
         active = 1
         weight = 1
     }
}
"""

STATUS = {
    "pid": 4242, "role": "active", "io": "nfq-loop", "network": "nat", "serial_no": 7, "generation": 3,
    "connections": 5, "reloads": 1, "failed_reloads": 0, "last_reload": {"ok": True, "error": None},
    "virtuals": [{"name": "www", "port": 80, "servers": [{"name": "rs1", "address": "10.1.1.2", "port": 80}]}],
    "services": [{"proto": "TCP", "vip": "192.168.26.10", "port": 80, "fwmark": 0, "scheduler": "wlc",
                  "persistent": 0, "stats": {"conns": 9}, "rates": {"cps": 2},
                  "dests": [{"addr": "10.1.1.2", "port": 80, "forward": "Masq", "weight": 1, "active": 3,
                             "inactive": 2, "stats": {"conns": 9, "inpkts": 90, "outpkts": 80, "inbytes": 9000,
                                                      "outbytes": 80000},
                             "rates": {"cps": 2, "inpps": 10, "outpps": 9, "inbps": 1000, "outbps": 9000}}]}],
    "health": [{"service": "www", "server": "rs1", "address": "10.1.1.2:80",
                "key": [["tcp", "192.168.26.10", 80], "10.1.1.2", 80], "up": True, "weight": 1,
                "configured_weight": 1, "mode": "normal", "last": True, "reason": None, "last_at": 0,
                "admin": None}],
}  # fmt: skip


class StandIn:
    """A director's web socket answering status, reload and server.state from a thread."""

    def __init__(self, path: Path) -> None:
        self.requests: list[dict] = []
        self.sock = control.ControlSocket(str(path))
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            self.sock.poll(self.handle)
            self.stop.wait(0.01)

    def handle(self, req: dict) -> dict:
        self.requests.append(req)
        if req["cmd"] == "status":
            return {"ok": True, "status": STATUS}
        if req["cmd"] == "reload":
            return {"ok": True, "generation": 4, "serial_no": 8, "error": None}
        if req["cmd"] == "server.state":
            return {"ok": True, "state": req["state"]}
        return {"ok": False, "error": "not offered"}

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def env(tmp_path):
    passwd = tmp_path / "piranha.passwd"
    auth.write_password(str(passwd), PASSWORD)
    cf = tmp_path / "lvs.cf"
    cf.write_text(FILE)
    director = StandIn(tmp_path / "lvs.web.ctl")
    web = Web(Settings(lvs_cf=str(cf), passwd=str(passwd), director=str(tmp_path / "lvs.web.ctl")))
    yield web, cf, director
    director.close()


def client(web: Web) -> TestClient:
    return TestClient(build_app(web), base_url="http://127.0.0.1", follow_redirects=False)


def login(c: TestClient, password: str = PASSWORD) -> object:
    token = re.search(r'name="token" value="([^"]+)"', c.get("/login").text)[1]
    return c.post("/login", data={"token": token, "username": "piranha", "password": password, "next": "/monitor"})


def csrf_of(c: TestClient, path: str = "/monitor") -> str:
    return re.search(r'name="csrf" value="([^"]+)"', c.get(path).text)[1]


def logged_in(web: Web) -> tuple[TestClient, str]:
    c = client(web)
    r = login(c)
    assert r.status_code == 303, r.text
    return c, csrf_of(c)


def field_error(html: str, name: str) -> str | None:
    m = re.search(rf'id="error-{name}"[^>]*>([^<]*)<', html)
    return m[1] if m else None


GLOBAL_FORM = {"primary": "10.0.0.1", "primary_private": "", "network": "nat", "nat_router_ip": "10.1.1.254",
               "nat_router_dev": "eth1:1", "nat_nmask": ""}  # fmt: skip
VIRTUAL_FORM = {"name": "www", "port": "80", "protocol": "tcp", "address_ip": "192.168.26.10",
                "address_dev": "eth0:1", "vip_nmask": "", "fwmark": "", "sorry_server": "", "reentry": "15",
                "timeout": "6", "load_monitor": "", "scheduler": "wlc", "persistent": "", "pmask": ""}  # fmt: skip


# -- who may come in -------------------------------------------------------------------------
def test_every_page_needs_a_session(env):
    web, cf, _ = env
    c = client(web)
    for path in ("/monitor", "/global", "/redundancy", "/virtual", "/virtual/www", "/virtual/www/real",
                 "/virtual/www/scripts", "/apply", "/password"):  # fmt: skip
        r = c.get(path)
        assert r.status_code == 303 and r.headers["location"].startswith("/login"), path
    for path in ("/status.json", "/status.csv", "/monitor/live"):
        assert c.get(path).status_code == 401, path
    r = c.post("/global", data={**GLOBAL_FORM, "primary": "10.0.0.9"})
    assert r.status_code == 403
    assert cf.read_text() == FILE


def test_login_wrong_password_is_refused_then_the_right_one_opens_a_session(env):
    web, _, _ = env
    c = client(web)
    r = login(c, "wrong password")
    assert r.status_code == 401 and "Wrong user name or password" in r.text
    assert "pylvs_session" not in c.cookies
    r = login(c)
    assert r.status_code == 303 and r.headers["location"] == "/monitor"
    cookie = r.headers["set-cookie"]
    assert "pylvs_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert c.get("/monitor").status_code == 200


def test_a_forged_session_cookie_is_refused(env):
    web, _, _ = env
    c = client(web)
    login(c)
    good = c.cookies["pylvs_session"]
    c.cookies.clear()
    c.cookies.set("pylvs_session", good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB"))
    assert c.get("/monitor").status_code == 303
    c.cookies.clear()
    c.cookies.set("pylvs_session", good)
    assert c.get("/monitor").status_code == 200


def test_login_attempts_are_rate_limited(env):
    web, _, _ = env
    c = client(web)
    for _ in range(auth.LOGIN_FAILURES):
        assert login(c, "nope nope nope").status_code == 401
    r = login(c)  # even the right password waits now
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
    web.limiter._by_addr.clear()
    web.limiter._all.clear()
    assert login(c).status_code == 303


def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(env):
    web, cf, director = env
    c, csrf = logged_in(web)
    for data in ({**GLOBAL_FORM, "primary": "10.0.0.9"}, {**GLOBAL_FORM, "primary": "10.0.0.9", "csrf": "x" * 43}):
        r = c.post("/global", data=data)
        assert r.status_code == 403 and "CSRF" in r.text
    r = c.post("/server/state", data={"virtual": "www", "server": "rs1", "state": "drain"})
    assert r.status_code == 403
    assert not any(q["cmd"] == "server.state" for q in director.requests)
    assert "10.0.0.9" not in c.get("/apply").text
    assert cf.read_text() == FILE


def test_security_headers_and_the_password_never_in_the_log(env, caplog):
    web, _, _ = env
    c = client(web)
    r = c.get("/login")
    assert r.headers["x-frame-options"] == "DENY" and "frame-ancestors 'none'" in r.headers["content-security-policy"]
    login(c, "a secret that must not be logged")
    login(c)
    assert "a secret that must not be logged" not in caplog.text and PASSWORD not in caplog.text


def test_allow_list_and_body_limit(env):
    web, _, _ = env
    web.settings.allow = networks("10.9.9.0/24")
    c = client(web)  # the TestClient's address is not in it
    assert c.get("/login").status_code == 403
    web.settings.allow = ()
    c = client(web)
    r = c.post("/login", content=b"x" * (MAX_BODY + 1), headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 413
    with pytest.raises(ValueError, match="not an IP address"):
        networks("10.0.0.0/8,example")


# -- editing -------------------------------------------------------------------------------
@pytest.mark.parametrize("path, form, field, words", [
    ("/global", {**GLOBAL_FORM, "primary": "10.0.0.300"}, "primary", "not an IPv4 address"),
    ("/virtual/www", {**VIRTUAL_FORM, "port": "70000"}, "port", "out of range"),
    ("/virtual/www/scripts", {"send_program": "", "send": "GET / HTTP/1.0\\r\\n\\r\\n", "expect": "HTTP/1.[01",
                              "use_regex": "1"}, "expect", ""),
    ("/virtual/www/real/rs1", {"name": "rs1", "address": "10.1.1.999", "port": "", "weight": "1"}, "address",
     "not an IPv4 address"),
    ("/virtual/www/real/rs1", {"name": "rs 1", "address": "10.1.1.2", "port": "", "weight": "1"}, "name", "name"),
])  # fmt: skip
def test_bad_input_is_refused_beside_its_field_and_lvs_cf_stays_byte_identical(env, path, form, field, words):
    web, cf, _ = env
    c, csrf = logged_in(web)
    before = cf.read_bytes()
    r = c.post(path, data={**form, "csrf": csrf})
    assert r.status_code == 400
    message = field_error(r.text, field)
    assert message is not None and words in message, r.text
    assert cf.read_bytes() == before
    assert c.get("/apply").text.count('class="add"') == 0  # nothing went into the draft either


def test_guide_chapter_4_on_a_fresh_file_then_apply(env, tmp_path):
    web, _, director = env
    cf = tmp_path / "fresh" / "lvs.cf"
    cf.parent.mkdir()
    web.store.path = web.settings.lvs_cf = str(cf)  # no file yet: a fresh router
    c, csrf = logged_in(web)
    assert c.post("/global", data={**GLOBAL_FORM, "csrf": csrf}).status_code == 303
    r = c.post("/virtual/new", data={**VIRTUAL_FORM, "csrf": csrf})
    assert r.status_code == 303 and r.headers["location"] == "/virtual/www"
    for name, rip in (("rs1", "10.1.1.2"), ("rs2", "10.1.1.3")):
        r = c.post("/virtual/www/real/new", data={"name": name, "address": rip, "port": "", "weight": "1",
                                                  "csrf": csrf})  # fmt: skip
        assert r.status_code == 303, r.text
        assert c.post(f"/virtual/www/real/{name}/toggle", data={"csrf": csrf}).status_code == 303
    r = c.post("/virtual/www/scripts", data={"send_program": "", "send": "GET / HTTP/1.0\\r\\n\\r\\n",
                                             "expect": "HTTP", "use_regex": "", "csrf": csrf})  # fmt: skip
    assert r.status_code == 303
    assert c.post("/virtual/www/toggle", data={"csrf": csrf}).status_code == 303
    page = c.get("/apply").text
    assert "+virtual www {" in page and "+serial_no = 1" in page
    version = re.search(r'name="version" value="(\d+)"', page)[1]
    assert not cf.exists()  # nothing written before APPLY
    r = c.post("/apply", data={"csrf": csrf, "version": version, "serial": "0"})
    assert r.status_code == 200 and 'id="written"' in r.text, r.text
    assert "the director reloaded: generation 4" in r.text
    assert any(q["cmd"] == "reload" for q in director.requests)
    result = check_text(cf.read_text())
    assert result.ok, result.diagnostics
    config = result.config
    assert config.serial_no == 1 and str(config.primary) == "10.0.0.1" and config.network == "nat"
    (v,) = config.virtuals
    assert v.active and str(v.address.ip) == "192.168.26.10" and v.address.device == "eth0:1"
    assert [(s.name, str(s.address), s.active) for s in v.servers] == [("rs1", "10.1.1.2", True),
                                                                       ("rs2", "10.1.1.3", True)]
    assert v.send == "GET / HTTP/1.0\\r\\n\\r\\n" and v.expect == "HTTP"


def test_an_edit_changes_only_its_lines_and_keeps_the_comments(env):
    web, cf, _ = env
    c, csrf = logged_in(web)
    assert c.post("/virtual/www", data={**VIRTUAL_FORM, "scheduler": "rr", "csrf": csrf}).status_code == 303
    page = c.get("/apply").text
    version = re.search(r'name="version" value="(\d+)"', page)[1]
    r = c.post("/apply", data={"csrf": csrf, "version": version, "serial": "7"})
    assert 'id="written"' in r.text
    old, new = FILE.splitlines(), cf.read_text().splitlines()
    assert len(old) == len(new)
    changed = [(a, b) for a, b in zip(old, new, strict=True) if a != b]
    assert changed == [("serial_no = 7", "serial_no = 8"), ("     scheduler = wlc", "     scheduler = rr")]
    assert os.stat(cf).st_mode & 0o777 == 0o644


def test_a_second_apply_on_a_stale_serial_no_is_refused(env):
    web, cf, _ = env
    a, csrf_a = logged_in(web)
    b, csrf_b = logged_in(web)
    assert a.post("/virtual/www", data={**VIRTUAL_FORM, "scheduler": "rr", "csrf": csrf_a}).status_code == 303
    assert b.post("/virtual/www", data={**VIRTUAL_FORM, "scheduler": "lc", "csrf": csrf_b}).status_code == 303
    va = re.search(r'name="version" value="(\d+)"', a.get("/apply").text)[1]
    vb = re.search(r'name="version" value="(\d+)"', b.get("/apply").text)[1]
    assert 'id="written"' in a.post("/apply", data={"csrf": csrf_a, "version": va, "serial": "7"}).text
    written = cf.read_bytes()
    r = b.post("/apply", data={"csrf": csrf_b, "version": vb, "serial": "7"})
    assert r.status_code == 409 and "serial_no 8" in r.text and "serial_no 7" in r.text
    assert cf.read_bytes() == written
    assert 'id="stale"' in b.get("/apply").text
    assert b.post("/discard", data={"csrf": csrf_b}).status_code == 303
    assert "scheduler = rr" in b.get("/apply").text or "No pending changes" in b.get("/apply").text


def test_apply_is_refused_while_the_checker_finds_an_error(env, tmp_path):
    web, _, _ = env
    cf = tmp_path / "fresh" / "lvs.cf"
    cf.parent.mkdir()
    web.store.path = web.settings.lvs_cf = str(cf)
    c, csrf = logged_in(web)
    # no GLOBAL SETTINGS yet: primary is not set, which the checker calls an error
    assert c.post("/virtual/new", data={**VIRTUAL_FORM, "csrf": csrf}).status_code == 303
    page = c.get("/apply").text
    assert "The checker finds errors" in page and "primary is not set" in page
    assert re.search(r'<button type="submit" id="apply" disabled', page)
    version = re.search(r'name="version" value="(\d+)"', page)[1]
    r = c.post("/apply", data={"csrf": csrf, "version": version, "serial": "0"})
    assert r.status_code == 409 and "primary is not set" in r.text
    assert not cf.exists()


# -- CONTROL/MONITORING ---------------------------------------------------------------------
def test_monitor_shows_the_directors_table_and_exports_it(env):
    web, _, _ = env
    c, csrf = logged_in(web)
    page = c.get("/monitor").text
    assert 'data-server="rs1"' in page and ">UP<" in page and "pid 4242" in page
    live = c.get("/monitor/live").json()
    assert live["points"][0]["key"] == "www/rs1" and live["points"][0]["active"] == 3
    rows = c.get("/status.csv").text.splitlines()
    assert rows[0].startswith("virtual,server,address,port,forward,status")
    assert rows[1].startswith("www,rs1,10.1.1.2,80,Masq,UP,")
    data = json.loads(c.get("/status.json").text)
    assert data["version"] == 1 and data["director"]["pid"] == 4242 and data["servers"][0]["rows"][0]["conns"] == 9


def test_drain_from_the_page_asks_the_director(env):
    web, _, director = env
    c, csrf = logged_in(web)
    r = c.post("/server/state", data={"csrf": csrf, "virtual": "www", "server": "rs1", "state": "drain"})
    assert r.status_code == 303
    assert {"cmd": "server.state", "virtual": "www", "server": "rs1", "state": "drain"}.items() <= \
        next(q for q in director.requests if q["cmd"] == "server.state").items()
    r = c.post("/server/state", data={"csrf": csrf, "virtual": "www", "server": "rs1", "state": "reboot"})
    assert "unknown state" in c.get("/monitor").text


def test_monitor_says_when_no_director_answers(env, tmp_path):
    web, _, _ = env
    web.control.director_path = str(tmp_path / "nobody.ctl")
    c, _ = logged_in(web)
    assert "not answering" in c.get("/monitor").text


# -- passwords -----------------------------------------------------------------------------
def test_change_password(env):
    web, _, _ = env
    c, csrf = logged_in(web)
    r = c.post("/password", data={"csrf": csrf, "current": "wrong", "new": "a new password", "again": "a new password"})
    assert r.status_code == 400 and "current password is wrong" in r.text
    r = c.post("/password", data={"csrf": csrf, "current": PASSWORD, "new": "a new password", "again": "other pwd!"})
    assert r.status_code == 400 and "differ" in r.text
    new = "a new password"
    r = c.post("/password", data={"csrf": csrf, "current": PASSWORD, "new": new, "again": new})
    assert r.status_code == 303
    assert login(client(web)).status_code == 401
    assert login(client(web), "a new password").status_code == 303


def test_password_file_is_argon2id_and_mode_600(tmp_path):
    path = tmp_path / "conf" / "piranha.passwd"
    auth.write_password(str(path), "s3cret password")
    line = path.read_text()
    assert line.startswith("piranha:$argon2id$") and "s3cret" not in line
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert auth.verify(str(path), "piranha", "s3cret password")
    assert not auth.verify(str(path), "piranha", "s3cret passworD")
    assert not auth.verify(str(path), "nobody", "s3cret password")
    with pytest.raises(auth.PasswordError, match="at least"):
        auth.write_password(str(path), "short")


def test_pylvs_passwd_command(tmp_path, monkeypatch, capsys):
    from pylvs.cli.main import main

    path = tmp_path / "piranha.passwd"
    assert main(["passwd", "-f", str(path), "--owner", _me(), "first password"]) == 0
    assert auth.verify(str(path), "piranha", "first password")
    answers = iter(["second password", "second passwrd"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    assert main(["passwd", "-f", str(path)]) == 1
    assert "differ" in capsys.readouterr().err
    assert auth.verify(str(path), "piranha", "first password")  # unchanged
    answers = iter(["second password", "second password"])
    assert main(["passwd", "-f", str(path)]) == 0
    assert auth.verify(str(path), "piranha", "second password")


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user takes root")
def test_pylvs_passwd_gives_a_new_conf_directory_to_the_tools_user(tmp_path):
    from pylvs.cli.main import main

    path = tmp_path / "conf" / "piranha.passwd"
    assert main(["passwd", "-f", str(path), "--owner", "nobody", "a password for nobody"]) == 0
    nobody = __import__("pwd").getpwnam("nobody").pw_uid
    assert os.stat(path).st_uid == nobody and os.stat(path.parent).st_uid == nobody  # CHANGE PASSWORD renames there


def _me() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


def test_a_file_that_does_not_parse_is_shown_not_edited(env):
    web, cf, _ = env
    cf.write_text(FILE + "bogus = 1\n")
    c, csrf = logged_in(web)
    r = c.get("/global")
    assert r.status_code == 409 and "does not parse" in r.text and "unknown command" in r.text
    assert parse(FILE).config.serial_no == 7


def test_every_panel_renders_with_a_session(env):
    web, _, _ = env
    c, _ = logged_in(web)
    for path, words in (("/monitor", "CONTROL/MONITORING"), ("/global", "GLOBAL SETTINGS"),
                        ("/redundancy", "REDUNDANCY"), ("/virtual", 'data-name="www"'),
                        ("/virtual/new", "VIRTUAL SERVER (new)"), ("/virtual/www", 'value="192.168.26.10"'),
                        ("/virtual/www/real", 'data-name="rs1"'), ("/virtual/www/real/new", "REAL SERVER"),
                        ("/virtual/www/real/rs1", 'value="10.1.1.2"'), ("/virtual/www/scripts", 'value="HTTP"'),
                        ("/apply", "No pending changes"), ("/password", "CHANGE PASSWORD")):  # fmt: skip
        r = c.get(path)
        assert r.status_code == 200 and words in r.text, path
    assert c.get("/virtual/nope").status_code == 404
    assert c.get("/virtual/www/real/nope").status_code == 404


# -- what a review found ---------------------------------------------------------------------
def test_names_the_panels_cannot_address_are_refused_or_shown_read_only(env):
    web, cf, _ = env
    c, csrf = logged_in(web)
    for bad in ("..", ".", "new", "-x", "a/b"):
        r = c.post("/virtual/www/real/new", data={"csrf": csrf, "name": bad, "address": "10.1.1.9", "port": "",
                                                  "weight": "1"})  # fmt: skip
        assert r.status_code == 400 and field_error(r.text, "name"), bad
    cf.write_text(FILE.replace("server rs1 {", 'server "a/b" {'))
    c.post("/discard", data={"csrf": csrf})
    page = c.get("/virtual/www/real").text
    assert "a name the panels cannot address" in page and "/real/a%2Fb/delete" not in page


def test_two_applies_at_once_write_one_and_refuse_the_other(env, monkeypatch):
    import threading

    from pylvs.web.store import Store, StoreError

    web, cf, _ = env
    store = web.store
    a, b = store.begin(), store.begin()
    for d, sched in ((a, "rr"), (b, "lc")):
        d.text = d.text.replace("scheduler = wlc", f"scheduler = {sched}")
    both_checked = threading.Barrier(2, timeout=10)
    final_text = Store.final_text

    def slow_final_text(self, draft):  # both pass the first stale check before either writes
        text = final_text(self, draft)
        both_checked.wait()
        return text

    monkeypatch.setattr(Store, "final_text", slow_final_text)
    results: dict[str, object] = {}

    def go(name, d):
        try:
            results[name] = store.apply(d)
        except StoreError as exc:
            results[name] = exc

    threads = [threading.Thread(target=go, args=x) for x in (("a", a), ("b", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    refused = [k for k, v in results.items() if isinstance(v, StoreError)]
    assert len(refused) == 1 and "serial_no 8" in str(results[refused[0]])
    winner = "rr" if refused == ["b"] else "lc"
    assert f"scheduler = {winner}" in cf.read_text() and "serial_no = 8" in cf.read_text()


def test_a_burst_of_logins_hashes_no_more_than_the_limit():
    limiter = auth.LoginLimiter()
    taken = [limiter.attempt("10.0.0.66") for _ in range(20)]
    assert taken.count(0.0) == auth.LOGIN_FAILURES and all(w > 0 for w in taken[auth.LOGIN_FAILURES:])
    # a stranger's flood does not lock out an address that logged in lately
    assert limiter.attempt("10.0.0.1") == 0.0
    limiter.succeeded("10.0.0.1")
    for i in range(auth.LOGIN_FAILURES_ALL):
        limiter.attempt(f"10.9.{i // 200}.{i % 200}")
    assert limiter.retry_after("10.0.0.77") > 0 and limiter.retry_after("10.0.0.1") == 0


def test_a_value_the_form_offers_no_choice_for_survives_an_edit(env):
    web, cf, _ = env
    cf.write_text(FILE.replace("     timeout = 6\n", "     timeout = 6\n     load_monitor = /usr/local/bin/myload\n"))
    c, csrf = logged_in(web)
    page = c.get("/virtual/www").text
    assert 'value="/usr/local/bin/myload"' in page
    form = {**VIRTUAL_FORM, "load_monitor": "/usr/local/bin/myload", "port": "8080", "csrf": csrf}
    assert c.post("/virtual/www", data=form).status_code == 303
    diff = re.search(r'<pre class="diff" id="diff">(.*?)</pre>', c.get("/apply").text, re.S)[1]
    changed = re.findall(r'class="(?:add|del)">([^<]*)<', diff)
    assert changed == ["-serial_no = 7", "+serial_no = 8", "-     port = 80", "+     port = 8080"], changed


def test_add_forms_start_from_the_defaults_and_a_blank_number_is_an_error(env):
    web, _, _ = env
    c, csrf = logged_in(web)
    page = c.get("/virtual/new").text
    assert '<option value="wlc" selected>' in page and 'name="reentry" value="180"' in page
    assert 'name="weight" value="1"' in c.get("/virtual/www/real/new").text
    r = c.post("/virtual/www/real/new", data={"csrf": csrf, "name": "rs9", "address": "10.1.1.9", "port": "",
                                              "weight": ""})  # fmt: skip
    assert r.status_code == 400 and field_error(r.text, "weight") == "a number is needed"


def test_a_file_that_is_not_utf8_is_shown_not_edited(env):
    web, cf, _ = env
    cf.write_bytes(FILE.replace("# the web service", "# routeur configur\xe9").encode("latin-1"))
    c, _ = logged_in(web)
    r = c.get("/global")
    assert r.status_code == 409 and "not UTF-8" in r.text and "0xe9" in r.text


def test_csv_cells_never_start_a_formula(env, monkeypatch):
    from pylvs.web import view

    rows = [{"name": "=cmd|' /C calc'!A0", "rows": [{"state": "DOWN", "reason": "+HTTP/1.0 500", "server": "@x"}]}]
    out = view.csv_text(rows).splitlines()[1]
    assert out.startswith("'=cmd") and ",'+HTTP/1.0 500," in out and ",'@x," in out


def test_host_header_chunked_body_and_odd_tokens(env):
    web, _, _ = env
    c = client(web)
    assert c.get("/login", headers={"host": "evil.example"}).status_code == 400
    assert c.get("/login", headers={"host": "localhost:3636"}).status_code == 200
    assert c.get("/login", headers={"host": "[::1]:3636"}).status_code == 200

    def chunks():
        for _ in range(MAX_BODY // 1024 + 2):
            yield b"x" * 1024

    form = {"content-type": "application/x-www-form-urlencoded"}
    assert c.post("/login", content=chunks(), headers=form).status_code == 413
    c, csrf = logged_in(web)
    assert c.post("/global", data={**GLOBAL_FORM, "csrf": "ĉ" * 10}).status_code == 403


def test_allow_list_takes_ipv6_and_mapped_ipv4():
    from pylvs.web.app import Guard

    g = Guard(type("A", (), {"state": None})(), Settings("x", "y", "z", allow=networks("10.1.0.0/16,fd00::/8")))
    assert g._allowed({"client": ("::ffff:10.1.2.3", 1)}) and g._allowed({"client": ("fd00::5", 1)})
    assert not g._allowed({"client": ("10.2.0.1", 1)}) and not g._allowed({"client": ("2001:db8::1", 1)})
