"""The control verbs the web tool uses (``pylvs.control``): the web socket's verb filter,
mode and group; the director's ``status``, ``reload`` and ``server.state`` (drain, maint,
ready) on an in-process director (tests/feed_director.py); pulse's ``status`` and
``reload`` on a Pulse without heartbeat peers or a director child."""

from __future__ import annotations

import grp
import json
import math
import os
import signal
import threading
import time

import pytest
from feed_director import feed_directors
from golden import HEAD, RIP1, RIP2, RIP3, VIP, VPORT, virtual
from ipvsadm_golden import call

from pylvs.cli.main import build_parser
from pylvs.control import PULSE_WEB_VERBS, WEB_MODE, WEB_VERBS, ControlSocket, group_id, request
from pylvs.ha import node as nd
from pylvs.ha.pulse import Pulse
from pylvs.service.paths import RuntimePaths

WAIT = 10.0


def two_servers(w1=1, w2=1, extra=""):
    return HEAD.format(network="nat") + virtual("www", VIP, VPORT, sched="wlc", extra=extra,
                                                servers=[("web1", RIP1, None, w1), ("web2", RIP2, None, w2)])


def wait_for(cond, what):
    deadline = time.monotonic() + WAIT
    while not cond():
        assert time.monotonic() < deadline, f"not {what} after {WAIT} s"
        time.sleep(0.02)


def other_gid() -> int:
    """A gid this process may give a file: another group when root, else its own."""
    if os.geteuid() == 0:
        for g in grp.getgrall():
            if g.gr_gid != os.getgid():
                return g.gr_gid
    return os.getgid()


class Served:
    """A ControlSocket answered from a thread, as a daemon's loop does."""

    def __init__(self, sock: ControlSocket, handler):
        self.sock, self.stop = sock, threading.Event()
        self.thread = threading.Thread(target=self._serve, args=(handler,))
        self.thread.start()

    def _serve(self, handler):
        while not self.stop.is_set():
            self.sock.poll(handler)
            self.stop.wait(0.01)

    def close(self):
        self.stop.set()
        self.thread.join()
        self.sock.close()


# -- the socket --------------------------------------------------------------------------------
def test_web_socket_offers_its_verbs_alone_with_mode_0660_and_the_group(tmp_path):
    path = str(tmp_path / "lvs.web.ctl")
    gid = other_gid()
    seen = []

    def handler(req):
        seen.append(req["cmd"])
        return {"ok": True, "status": {"pid": 1}}

    served = Served(ControlSocket(path, verbs=WEB_VERBS, mode=WEB_MODE, group=gid), handler)
    try:
        st = os.stat(path)
        assert (oct(st.st_mode & 0o777), st.st_gid) == ("0o660", gid)
        assert not list(tmp_path.glob("*.tmp"))  # the temporary name was renamed
        for verb in ("ipvs.apply", "force", "ipvs.get", None):
            reply = request(path, {"cmd": verb, "commands": []})
            assert reply == {"ok": False, "error": f"verb {verb} is not offered on this socket"}
        assert request(path, {"cmd": "status"}) == {"ok": True, "status": {"pid": 1}}
    finally:
        served.close()
    assert seen == ["status"]  # the refused verbs never reached the handler
    assert not os.path.exists(path)


def test_root_socket_offers_every_verb(tmp_path):
    path = str(tmp_path / "lvs.ctl")
    served = Served(ControlSocket(path), lambda req: {"ok": True, "cmd": req["cmd"]})
    try:
        assert oct(os.stat(path).st_mode & 0o777) == "0o600"
        assert request(path, {"cmd": "ipvs.apply"}) == {"ok": True, "cmd": "ipvs.apply"}
    finally:
        served.close()


def test_web_verbs_and_group_names():
    assert WEB_VERBS == {"status", "reload", "server.state"}
    assert PULSE_WEB_VERBS == {"status", "reload"}
    assert group_id(grp.getgrgid(0).gr_name) == 0 and group_id("4242") == 4242
    with pytest.raises(ValueError, match="no such group: 'no-such-group-pylvs'"):
        group_id("no-such-group-pylvs")
    paths = RuntimePaths.resolve("/tmp/rt")
    assert (str(paths.web_control("lvs")), str(paths.web_control("pulse"))) == (
        "/tmp/rt/lvs.web.ctl", "/tmp/rt/pulse.web.ctl")  # fmt: skip


@pytest.mark.parametrize("role", ["lvs", "pulse"])
def test_a_bad_web_group_is_a_usage_error(role, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([role, "--web-group", "no-such-group-pylvs"])
    assert exc.value.code == 2
    assert "--web-group: no such group: 'no-such-group-pylvs'" in capsys.readouterr().err
    args = build_parser().parse_args([role, "--web-group", "0"])
    assert args.web_group == 0


# -- the director --------------------------------------------------------------------------------
@pytest.fixture
def director(tmp_path):
    yield from feed_directors(tmp_path)


def ask(d, cmd, **kw):
    """What the socket carries: JSON both ways."""
    return json.loads(json.dumps(d.handle_control(json.loads(json.dumps({"v": 1, "cmd": cmd, **kw}))), default=str))


def weights(d) -> dict[str, int]:
    [svc] = d.status()["services"]
    return {x["addr"]: x["weight"] for x in svc["dests"]}


def admin(d) -> dict[str, str | None]:
    return {e["server"]: e["admin"] for e in ask(d, "status")["status"]["health"]}


def test_status_verb_is_the_status_file_with_names(director):
    d, _ = director(two_servers(1, 2))
    reply = ask(d, "status")
    assert reply["ok"] is True
    status = reply["status"]
    assert status.keys() == json.loads(json.dumps(d.status(), default=str)).keys()
    [www] = status["virtuals"]
    assert {k: www[k] for k in ("name", "active", "vip", "port", "protocol", "fwmark", "scheduler")} == {
        "name": "www", "active": True, "vip": VIP, "port": VPORT, "protocol": "tcp", "fwmark": 0, "scheduler": "wlc"}
    assert www["servers"] == [
        {"name": "web1", "address": RIP1, "port": VPORT, "weight": 1, "active": True, "admin": None},
        {"name": "web2", "address": RIP2, "port": VPORT, "weight": 2, "active": True, "admin": None}]  # fmt: skip
    assert admin(d) == {"web1": None, "web2": None}


def test_reload_verb_replies_with_its_outcome(director, tmp_path):
    d, _ = director(two_servers())
    (tmp_path / "lvs.cf").write_text(two_servers(2, 1).replace("serial_no = 1", "serial_no = 7"))
    assert ask(d, "reload") == {"ok": True, "generation": 2, "serial_no": 7, "error": None}
    assert weights(d) == {RIP1: 2, RIP2: 1}
    (tmp_path / "lvs.cf").write_text(two_servers() + "virtual broken {\n  scheduler = nosuch\n")
    reply = ask(d, "reload")
    assert (reply["ok"], reply["generation"], reply["serial_no"]) == (False, 2, 7)
    assert reply["error"].startswith("reload refused, still running generation 2") and reply["error"] == \
        d.last_reload["error"]  # fmt: skip
    assert d.failed_reloads == 1


def test_reload_verb_of_a_bare_director(director):
    d, _ = director(None)
    reply = ask(d, "reload")
    assert reply["ok"] is False and "bare director (no lvs.cf)" in reply["error"]
    assert d.failed_reloads == 0


def test_drain_gives_weight_0_and_outlives_reloads_and_health_changes(director, tmp_path):
    d, _ = director(two_servers())
    assert ask(d, "server.state", virtual="www", server="web1", state="drain") == {"ok": True, "state": "drain"}
    assert weights(d) == {RIP1: 0, RIP2: 1}  # kept in the table: its connections go on
    assert admin(d) == {"web1": "drain", "web2": None}
    assert [s["admin"] for s in ask(d, "status")["status"]["virtuals"][0]["servers"]] == ["drain", None]
    # A reload (new weights) keeps the drain.
    (tmp_path / "lvs.cf").write_text(two_servers(3, 2))
    assert ask(d, "reload")["ok"]
    assert weights(d) == {RIP1: 0, RIP2: 2}
    # A health change (web2 forced down and back) is compiled with the drain too.
    d.pending_health = {**d.health.health()}
    d.apply_health()
    assert weights(d) == {RIP1: 0, RIP2: 2}
    # ready: the configured weight again.
    assert ask(d, "server.state", virtual="www", server="web1", state="ready") == {"ok": True, "state": "ready"}
    assert weights(d) == {RIP1: 3, RIP2: 2} and admin(d) == {"web1": None, "web2": None}


def test_a_drained_server_that_leaves_the_config_is_forgotten(director, tmp_path):
    d, _ = director(two_servers())
    assert ask(d, "server.state", virtual="www", server="web2", state="drain")["ok"]
    one = HEAD.format(network="nat") + virtual("www", VIP, VPORT, sched="wlc", servers=[("web1", RIP1, None, 1)])
    (tmp_path / "lvs.cf").write_text(one)
    assert ask(d, "reload")["ok"]
    assert d.drained == set()
    (tmp_path / "lvs.cf").write_text(two_servers())  # back (down until its first check): not drained
    assert ask(d, "reload")["ok"]
    assert d.drained == set() and admin(d) == {"web1": None, "web2": None}


def test_maint_forces_down_and_ready_hands_back(director):
    d, _ = director(two_servers())
    assert ask(d, "server.state", virtual="www", server="web1", state="drain")["ok"]
    assert ask(d, "server.state", virtual="www", server="web1", state="maint") == {"ok": True, "state": "maint"}
    assert d.drained == set()  # maint clears the drain
    wait_for(lambda: d.pending_health is not None, "a health change")  # the runner publishes it
    d.apply_health()
    assert weights(d) == {RIP2: 1}  # down, and not a quiesce service: out of the table
    entry = next(e for e in ask(d, "status")["status"]["health"] if e["server"] == "web1")
    assert (entry["mode"], entry["admin"], entry["up"]) == ("forced_down", "maint", False)
    assert ask(d, "server.state", virtual="www", server="web1", state="ready")["ok"]
    wait_for(lambda: admin(d)["web1"] is None, "web1 handed back to its check")
    entry = next(e for e in ask(d, "status")["status"]["health"] if e["server"] == "web1")
    assert entry["mode"] == "normal"  # up again at its next passing check


def test_server_state_refuses_unknown_names_and_states(director):
    d, _ = director(two_servers())
    reply = ask(d, "server.state", virtual="nosuch", server="web1", state="drain")
    assert reply == {"ok": False, "error": "no virtual 'nosuch' in the running configuration"}
    reply = ask(d, "server.state", virtual="www", server="nosuch", state="maint")
    assert reply == {"ok": False, "error": "virtual 'www' has no server 'nosuch'"}
    reply = ask(d, "server.state", virtual="www", server="web1", state="down")
    assert reply == {"ok": False, "error": "state must be one of drain, maint, ready"}
    with pytest.raises(KeyError):  # the socket answers it as a bad request (test_control.py)
        ask(d, "server.state", virtual="www", state="drain")
    assert d.drained == set() and weights(d) == {RIP1: 1, RIP2: 1}


def test_a_server_without_a_check_drains_but_cannot_go_to_maint(director):
    d, _ = director(two_servers())
    assert call(lambda cmd, **kw: ask(d, cmd, **kw), ["-a", "-t", f"{VIP}:{VPORT}", "-r", RIP3, "-m", "-w", "4"])[
        "rc"] == 0  # fmt: skip
    name = next(s["name"] for s in ask(d, "status")["status"]["virtuals"][0]["servers"] if s["address"] == RIP3)
    reply = ask(d, "server.state", virtual="www", server=name, state="maint")
    assert reply["ok"] is False and "has no health check" in reply["error"] and name in reply["error"]
    assert ask(d, "server.state", virtual="www", server=name, state="drain")["ok"]
    assert weights(d) == {RIP1: 1, RIP2: 1, RIP3: 0}
    assert ask(d, "server.state", virtual="www", server=name, state="ready")["ok"]
    assert weights(d) == {RIP1: 1, RIP2: 1, RIP3: 4}


def test_director_serves_both_sockets_and_removes_them(director, tmp_path):
    ctl, web = str(tmp_path / "lvs.ctl"), str(tmp_path / "lvs.web.ctl")
    gid = other_gid()
    d, _ = director(two_servers(), control_path=ctl, web_control_path=web, web_group=gid)
    st = os.stat(web)
    assert (oct(st.st_mode & 0o777), st.st_gid, oct(os.stat(ctl).st_mode & 0o777)) == ("0o660", gid, "0o600")
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("code", d.run()))
    t.start()
    try:
        assert request(web, {"cmd": "status"})["status"]["virtuals"][0]["name"] == "www"
        assert request(web, {"cmd": "ipvs.get"})["error"] == "verb ipvs.get is not offered on this socket"
        assert request(web, {"cmd": "force", "address": RIP1, "state": "down"})["ok"] is False
        drain = {"cmd": "server.state", "virtual": "www", "server": "web2", "state": "drain"}
        assert request(web, drain) == {"ok": True, "state": "drain"}
        assert request(ctl, {"cmd": "ipvs.get"})["ok"] is True  # the root socket offers every verb
        reply = request(web, {"cmd": "reload"})
        assert (reply["ok"], reply["generation"]) == (True, 3)  # the drain's recompile was generation 2
        assert weights(d) == {RIP1: 1, RIP2: 0}
    finally:
        d._on_signal(signal.SIGTERM, None)
        t.join(WAIT)
    assert result["code"] == 0
    assert not os.path.exists(ctl) and not os.path.exists(web)


def test_no_web_socket_without_a_group(director, tmp_path):
    web = str(tmp_path / "lvs.web.ctl")
    d, _ = director(two_servers(), web_control_path=web)
    assert d.web_control is None and not os.path.exists(web)


# -- pulse ---------------------------------------------------------------------------------------
@pytest.fixture
def pulse(tmp_path):
    """A Pulse as far as its loop goes: its config and node, no peer (backup_active = 0,
    so no heartbeat socket), no director child, the control sockets open."""
    made = []

    def make(**kw) -> Pulse:
        cf = tmp_path / "lvs.cf"
        cf.write_text(two_servers())
        p = Pulse(str(cf), status_path=str(tmp_path / "pulse.status.json"), **kw)
        p.config = p._read()
        p.node = nd.Node(master=True, keepalive=p.config.keepalive, deadtime=p.config.deadtime, backup_active=False)
        p.node.dead_at = math.inf  # no peer to wait for
        p.respawn_at = math.inf  # no director to start
        p._open_controls()
        made.append(p)
        return p

    yield make
    for p in made:
        p.stop()


def test_pulse_status_and_reload_verbs(pulse, tmp_path):
    p = pulse()
    reply = p.handle_control({"v": 1, "cmd": "status"})
    assert reply["ok"] is True and reply["status"]["role"] == "primary" and reply["status"]["serial_no"] == 1
    (tmp_path / "lvs.cf").write_text(two_servers().replace("serial_no = 1", "serial_no = 2"))
    assert p.handle_control({"cmd": "reload"}) == {"ok": True, "error": None}
    assert p.config.serial_no == 2 and p.status()["last_reload"]["ok"] is True
    (tmp_path / "lvs.cf").write_text(two_servers() + "virtual broken {\n  scheduler = nosuch\n")
    reply = p.handle_control({"cmd": "reload"})
    assert reply["ok"] is False and reply["error"].startswith("reload refused")
    assert p.config.serial_no == 2  # the running configuration stays
    assert p.handle_control({"cmd": "force"}) == {"ok": False, "error": "unknown command 'force'"}


def test_pulse_answers_its_sockets_in_its_loop(pulse, tmp_path):
    ctl, web, lvs_web = (str(tmp_path / n) for n in ("pulse.ctl", "pulse.web.ctl", "lvs.web.ctl"))
    gid = other_gid()
    p = pulse(control_path=ctl, web_control_path=web, web_group=gid, lvs_web_control=lvs_web)
    st = os.stat(web)
    assert (oct(st.st_mode & 0o777), st.st_gid, oct(os.stat(ctl).st_mode & 0o777)) == ("0o660", gid, "0o600")
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("code", p._serve()))
    t.start()
    try:
        assert request(ctl, {"cmd": "status"})["status"]["director"]["web_control"] == lvs_web
        assert request(web, {"cmd": "reload"}) == {"ok": True, "error": None}
        assert request(web, {"cmd": "server.state"}) == {"ok": False,
                                                         "error": "verb server.state is not offered on this socket"}
    finally:
        p.exit_code = 0
        p._wake()
        t.join(WAIT)
    assert result["code"] == 0
    p.stop()
    assert not os.path.exists(ctl) and not os.path.exists(web)


@pytest.fixture
def spawned(monkeypatch):
    """The argv of every director pulse starts (its Popen replaced: nothing runs)."""
    import pylvs.ha.pulse as pulse_mod

    argvs: list[list[str]] = []

    class FakePopen:
        pid = 4242

        def __init__(self, argv, **kw):
            argvs.append(argv)

        def poll(self):
            return None

    monkeypatch.setattr(pulse_mod.subprocess, "Popen", FakePopen)
    return argvs


def test_pulse_hands_the_web_group_to_its_director(pulse, tmp_path, spawned):
    argvs = spawned
    p = pulse(web_control_path=str(tmp_path / "pulse.web.ctl"), web_group=7, lvs_web_control="/x/lvs.web.ctl")
    p._spawn_director()
    assert argvs[-1][-4:] == ["--web-group", "7", "--web-control", "/x/lvs.web.ctl"]
    p.child = None
    q = pulse(lvs_web_control="/x/lvs.web.ctl")  # no --web-group: no web sockets anywhere
    q._spawn_director()
    assert "--web-group" not in argvs[-1] and q.controls == []
    q.child = None


# -- the kernel's expire_* sysctls, as options -------------------------------------------------
def test_expire_options_reach_the_engine_and_the_status(director):
    d, _ = director(two_servers())
    assert d.fwd.opts == {"expire_nodest_conn": False, "expire_quiescent_template": False}  # the kernel's defaults
    e, _ = director(two_servers(), expire_nodest_conn=True, expire_quiescent_template=True)
    assert e.fwd.opts == {"expire_nodest_conn": True, "expire_quiescent_template": True}
    assert ask(e, "status")["status"]["expire"] == e.fwd.opts


@pytest.mark.parametrize("role", ["lvs", "pulse"])
def test_expire_options_parse(role):
    args = build_parser().parse_args([role, "--expire-nodest-conn", "--expire-quiescent-template"])
    assert args.expire_nodest_conn and args.expire_quiescent_template
    args = build_parser().parse_args([role])
    assert not args.expire_nodest_conn and not args.expire_quiescent_template


def test_pulse_hands_the_expire_options_to_its_director(pulse, spawned):
    argvs = spawned
    p = pulse(expire_nodest_conn=True)
    p._spawn_director()
    assert "--expire-nodest-conn" in argvs[-1] and "--expire-quiescent-template" not in argvs[-1]
    p.child = None


@pytest.mark.parametrize("role", ["lvs", "pulse"])
def test_defence_options_parse_into_the_kernels_knobs(role):
    from pylvs.cli.lvs import defense_from_args
    from pylvs.dataplane.defense import Defense

    args = build_parser().parse_args([role, "--drop-entry", "1", "--secure-tcp", "3", "--amemthresh", "4096"])
    assert defense_from_args(args) == Defense(amemthresh=4096, drop_entry=1, secure_tcp=3)
    assert defense_from_args(build_parser().parse_args([role])) == Defense()  # all off, as the kernel's
    for bad in (["--drop-entry", "4"], ["--amemthresh", "-1"], ["--am-droprate", "x"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args([role, *bad])


def test_pulse_hands_the_defence_options_to_its_director(pulse, spawned):
    from pylvs.dataplane.defense import Defense

    argvs = spawned
    p = pulse(defense=Defense(drop_entry=1, drop_packet=3, am_droprate=5))
    p._spawn_director()
    tail = " ".join(argvs[-1])
    assert "--drop-entry 1" in tail and "--drop-packet 3" in tail and "--am-droprate 5" in tail
    assert "--secure-tcp" not in tail and "--amemthresh" not in tail  # defaults are not repeated
    p.child = None


def test_the_director_ticks_its_defences_and_shows_them(director):
    from pylvs.dataplane.defense import Defense

    d, _ = director(two_servers(), defense=Defense(drop_entry=3))
    d.fwd.defense_tick()
    st = ask(d, "status")["status"]
    assert st["defense"]["drop_entry"] == 3 and st["defense"]["engaged"]["drop_entry"]
    assert st["conntab"]["drop_entry"] == 0 and "swap_hold_us" in st
