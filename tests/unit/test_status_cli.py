"""``pylvs status``: the screen rendered from fixed status data, the file states (running,
stale, missing, unreadable) and their exit codes, ``--json``."""

from __future__ import annotations

import copy
import json
import os

import pytest

from pylvs.cli import status as S
from pylvs.cli.main import main

NOW = 1_700_000_000.0


def dest(addr, weight, active=0, inactive=0, cps=0, inpps=0, outpps=0, forward="Masq", port=80):
    return {"addr": addr, "port": port, "forward": forward, "weight": weight, "active": active,
            "inactive": inactive, "persistent": 0, "uthreshold": 0, "lthreshold": 0,
            "stats": {"conns": active + inactive, "inpkts": 0, "outpkts": 0, "inbytes": 0, "outbytes": 0},
            "rates": {"cps": cps, "inpps": inpps, "outpps": outpps, "inbps": 0, "outbps": 0}}


def check(service, addr, skey, *, up=True, weight=1, configured=1, mode="normal", quiesced=False, last=True,
          reason="ok", passes=19, needed=18, last_at=NOW - 3.0, **extra):
    entry = {"service": service, "server": addr, "address": f"{addr}:80", "key": [skey, addr, 80], "up": up,
             "weight": weight, "configured_weight": configured, "mode": mode, "quiesced": quiesced, "last": last,
             "reason": reason, "duration": 0.01, "changes": 1, "passes": passes, "needed": needed, "interval": 10,
             "last_at": last_at, "next_check_in": 7.0, "slow_start": False, "next_weight": None,
             "next_step_checks": None, "next_step_in": None, "next_step_at": None, "full_weight_in": None,
             "slow_start_steps": 0, "slow_start_steps_left": 0}
    entry.update(extra)
    return entry


WWW = ["tcp", "192.0.2.10", 80]
MARK = ["fwmark", 7]


def lvs_status():
    return {
        "pid": 4242, "config": "/etc/sysconfig/ha/lvs.cf", "io": "nfq-loop", "network": "nat", "role": "active",
        "generation": 12, "size": 65536, "connections": 57, "reloads": 3, "failed_reloads": 1,
        "serial_no": 7, "started": NOW - 7384, "managed": True,
        "last_reload": {"ok": True, "time": NOW - 600, "error": None},
        "sync": None,
        "services": [
            {"proto": "TCP", "vip": "192.0.2.10", "port": 80, "fwmark": 0, "scheduler": "wlc", "persistent": 0,
             "pmask": "255.255.255.255",
             "stats": {"conns": 123456, "inpkts": 0, "outpkts": 0, "inbytes": 0, "outbytes": 0},
             "rates": {"cps": 12, "inpps": 340, "outpps": 320, "inbps": 0, "outbps": 0},
             "dests": [dest("10.0.0.2", 100, 30, 12, 6, 200, 190), dest("10.0.0.3", 6, 2, 1, 1, 20, 19)]},
            {"proto": "TCP", "vip": "0.0.0.1", "port": 0, "fwmark": 7, "scheduler": "rr", "persistent": 300,
             "pmask": "255.255.255.0",
             "stats": {"conns": 9, "inpkts": 0, "outpkts": 0, "inbytes": 0, "outbytes": 0},
             "rates": {"cps": 0, "inpps": 0, "outpps": 0, "inbps": 0, "outbps": 0},
             "dests": [dest("10.0.0.9", 1, 12, 0)]},
        ],
        "health": [
            check("www", "10.0.0.2", WWW, weight=100, configured=100),
            check("www", "10.0.0.3", WWW, weight=6, configured=96, slow_start=True, next_weight=12,
                  next_step_checks=2, next_step_in=14.2, next_step_at=NOW + 12.2, full_weight_in=95.0,
                  slow_start_steps=1, slow_start_steps_left=4),
            check("www", "10.0.0.4", WWW, up=False, weight=0, configured=50, last=False,
                  reason="connection refused", passes=0, last_at=NOW - 1.5),
            check("www", "10.0.0.5", WWW, up=False, weight=0, configured=1, mode="forced_down", passes=0),
            check("www", "10.0.0.6", WWW, up=False, weight=0, configured=1, last=True, passes=1, needed=2),
            check("shop", "10.0.0.7", MARK, up=False, weight=0, configured=4, last=False, reason="timeout",
                  passes=0, last_at=NOW - 125),
        ],
    }


def pulse_status():
    return {"pid": 4200, "config": "/etc/sysconfig/ha/lvs.cf", "role": "primary", "state": "active",
            "linkfail": False, "childfail": False, "director": {"pid": 4242, "role": "active", "exits": 0},
            "keepalive": 2, "deadtime": 6, "peers": ["192.0.2.3"], "counters": {}, "heard_ago": 0.4,
            "log": ["partner dead: activating lvs"], "confsync": None}


def sources(lvs=None, pulse=None, *, lvs_age=0.5, pulse_age=0.3):
    lvs = lvs_status() if lvs is None else lvs
    pulse = pulse_status() if pulse is None else pulse
    return (S.Source("lvs", "/run/pylvs/lvs.status.json", S.RUNNING, lvs, lvs_age),
            S.Source("pulse", "/run/pylvs/pulse.status.json", S.RUNNING, pulse, pulse_age))


SCREEN = "".join([
    'HA:       primary router, active (pulse pid 4200, peer 192.0.2.3, heard 0.7 s ago,'
    ' keepalive 2 s, deadtime 6 s)\n',
    '          last event: partner dead: activating lvs\n',
    'director: active (run by pulse), pid 4242, up 2 h 03 min, io nfq-loop, network nat,'
    ' config /etc/sysconfig/ha/lvs.cf\n',
    '          serial_no 7, generation 12, reloads 3 (1 failed), connections 57 of 65536\n',
    '\n',
    'TCP  192.0.2.10:80 (www)  wlc  conns 32 active, 13 inactive, 123k total  12 conn/s  340/320 pkt/s in/out\n',
    '  -> RemoteAddress:Port    Forward Health           Weight ActConn InActConn   CPS  InPPS OutPPS  Checked\n',
    '  -> 10.0.0.2:80           Masq    UP              100/100      30        12     6    200'
    '    190  3.0 s ago\n',
    '  -> 10.0.0.3:80           Masq    UP                 6/96       2         1     1     20'
    '     19  3.0 s ago  slow start: 6 of 96, next step in 12 s (to 12), at 96 in 1 min 34 s\n',
    '  -> 10.0.0.4:80           Masq    DOWN               0/50       0         0     0      0'
    '      0  1.5 s ago  connection refused\n',
    '  -> 10.0.0.5:80           Masq    DOWN forced         0/1       0         0     0      0'
    '      0  3.0 s ago  forced down\n',
    '  -> 10.0.0.6:80           Masq    DOWN                0/1       0         0     0      0'
    '      0  3.0 s ago  re-entry: 1 of 2 passing checks\n',
    '\n',
    'FWM  7 (shop)  rr  persistent 300 s mask 255.255.255.0  conns 12 active, 0 inactive, 9'
    ' total  0 conn/s  0/0 pkt/s in/out\n',
    '  -> RemoteAddress:Port    Forward Health           Weight ActConn InActConn   CPS  InPPS OutPPS  Checked\n',
    '  -> 10.0.0.7:80           Masq    DOWN                0/4       0         0     0      0'
    '      0  2 min 05 s ago  timeout\n',
    '  -> 10.0.0.9:80           Masq    sorry                 1      12         0     0      0'
    '      0  -  sorry server\n',
])


def test_the_whole_screen():
    assert S.render(*sources(), now=NOW) == SCREEN


def test_slow_start_line_says_where_it_is_and_when_it_moves():
    line = next(x for x in SCREEN.splitlines() if "10.0.0.3:80" in x)
    assert "UP" in line and " 6/96 " in line
    assert line.endswith("slow start: 6 of 96, next step in 12 s (to 12), at 96 in 1 min 34 s")


@pytest.mark.parametrize(("extra", "age", "note"), [
    # the wall-clock time wins: the file's age does not matter
    ({"next_step_at": NOW + 12.2, "next_step_in": 99.0}, 30.0, "slow start: 3 of 100, next step in 12 s (to 6)"),
    # only the relative time: counted from when the file was written
    ({"next_step_at": None, "next_step_in": 14.2}, 2.0, "slow start: 3 of 100, next step in 12 s (to 6)"),
    ({"next_step_at": NOW - 0.5}, 0.0, "slow start: 3 of 100, next step due now (to 6)"),
    ({"next_step_at": NOW + 0.2}, 0.0, "slow start: 3 of 100, next step in 1 s (to 6)"),
    ({"next_step_at": None, "next_step_in": None, "next_step_checks": 2}, 0.0,
     "slow start: 3 of 100, next step after 2 more passing checks (to 6)"),
    ({"next_step_at": NOW + 5, "full_weight_in": 125.0, "slow_start_steps_left": 6}, 0.0,
     "slow start: 3 of 100, next step in 5 s (to 6), at 100 in 2 min 05 s"),
    ({"next_weight": None, "next_step_at": NOW + 5}, 0.0, "slow start: 3 of 100, next step in 5 s"),
])
def test_slow_start_note(extra, age, note):
    fields = {"weight": 3, "configured": 100, "slow_start": True, "next_weight": 6, "next_step_checks": 1}
    c = check("www", "10.0.0.2", WWW, **{**fields, **extra})
    assert S.slow_start_note(c, now=NOW, age=age) == note


def test_no_slow_start_note_outside_slow_start():
    assert S.slow_start_note(check("www", "10.0.0.2", WWW, weight=100, configured=100), now=NOW) is None


@pytest.mark.parametrize(("fields", "words"), [
    ({"up": True}, ("UP", "")),
    ({"up": True, "mode": "forced_up"}, ("UP forced", "forced up")),
    ({"up": False, "mode": "forced_down"}, ("DOWN forced", "forced down")),
    ({"up": False, "last": False, "reason": "expect mismatch"}, ("DOWN", "expect mismatch")),
    ({"up": False, "last": False, "reason": ""}, ("DOWN", "check failed")),
    ({"up": False, "last": False, "reason": "timeout", "quiesced": True}, ("DOWN quiesced", "timeout")),
    ({"up": False, "last": None}, ("DOWN", "not checked yet")),
    ({"up": False, "last": True, "passes": 2, "needed": 3}, ("DOWN", "re-entry: 2 of 3 passing checks")),
])
def test_health_words(fields, words):
    c = check("www", "10.0.0.2", WWW)
    c.update(fields)
    assert S.health_words(c, service_checked=True) == words


def test_a_table_row_without_a_check():
    assert S.health_words(None, service_checked=True) == ("sorry", "sorry server")
    assert S.health_words(None, service_checked=False) == ("-", "")


def test_an_older_director_status_without_the_new_keys():
    """No serial_no, started, last_reload, needed or slow-start fields: shown without them."""
    lvs = lvs_status()
    for k in ("serial_no", "started", "managed", "last_reload"):
        del lvs[k]
    for c in lvs["health"]:
        for k in ("needed", "slow_start", "next_weight", "next_step_in", "next_step_at", "full_weight_in",
                  "next_step_checks", "slow_start_steps_left", "next_check_in"):
            c.pop(k)
    text = S.render(*sources(lvs), now=NOW)
    assert "director: active, pid 4242, io nfq-loop, network nat, config /etc/sysconfig/ha/lvs.cf\n" in text
    assert "          generation 12, reloads 3 (1 failed), connections 57 of 65536\n" in text
    assert "slow start" not in text
    assert "re-entry: 1 of ? passing checks" in text
    line = next(x for x in text.splitlines() if "10.0.0.3:80" in x)
    assert " 6/96 " in line


def test_uptime_from_proc_when_the_file_has_none():
    lvs = lvs_status()
    del lvs["started"]
    a, b = sources(lvs)
    a = S.Source(a.role, a.path, a.state, a.data, a.age, started=NOW - 61)
    assert ", up 1 min 01 s," in S.render(a, b, now=NOW)


def test_failed_reload_and_last_error():
    lvs = lvs_status()
    lvs["last_reload"] = {"ok": False, "time": NOW - 42, "error": "lvs.cf:12: error: unknown scheduler 'nosuch'"}
    lvs["last_error"], lvs["last_error_at"] = "nfqueue: queue 0 overrun", NOW - 5
    text = S.render(*sources(lvs), now=NOW)
    assert ("          last reload FAILED 42 s ago, still running the previous config: "
            "lvs.cf:12: error: unknown scheduler 'nosuch'\n") in text
    assert "          last error (5.0 s ago): nfqueue: queue 0 overrun\n" in text


def test_pulse_backup_standby_with_trouble():
    pulse = pulse_status()
    pulse.update(role="backup", state="standby", heard_ago=None, linkfail=True,
                 director={"pid": 1, "role": "standby", "exits": 2},
                 confsync={"serving": False, "last": {"status": "applied", "reason": "", "serial_no": 8}})
    text = S.render(*sources(None, pulse), now=NOW)
    assert text.startswith("HA:       backup router, standby (pulse pid 4200, peer 192.0.2.3, peer not heard, "
                           "keepalive 2 s, deadtime 6 s)\n"
                           "          a monitored link is down; director exited 2 time(s)\n"
                           "          config sync: serial_no 8, applied\n")


# ----------------------------------------------------------------- daemons not running


def test_no_pulse_is_a_standalone_director():
    lvs, _ = sources()
    pulse = S.Source("pulse", "/run/pylvs/pulse.status.json", S.MISSING)
    text = S.render(lvs, pulse, now=NOW)
    assert text.startswith("HA:       pulse not running (no /run/pylvs/pulse.status.json): a standalone director\n"
                           "director: active (run by pulse), pid 4242")
    assert S.exit_code(lvs, pulse) == S.EXIT_RUNNING
    assert S.exit_code(lvs, pulse, pulse_required=True) == S.EXIT_NOT_RUNNING


def test_nothing_running():
    lvs = S.Source("lvs", "/run/pylvs/lvs.status.json", S.MISSING)
    pulse = S.Source("pulse", "/run/pylvs/pulse.status.json", S.MISSING)
    assert S.render(lvs, pulse, now=NOW) == (
        "HA:       pulse not running (no /run/pylvs/pulse.status.json): a standalone director\n"
        "director: not running (no status file /run/pylvs/lvs.status.json)\n")
    assert S.exit_code(lvs, pulse) == 3


@pytest.mark.parametrize(("alive", "why"), [(False, " (pid 4242 is gone)"), (True, " (pid 4242 still exists: hung?)"),
                                            (None, "")])
def test_a_stale_file_is_not_running_and_still_shows_its_last_state(alive, why):
    lvs, pulse = sources(lvs_age=42.0)
    lvs = S.Source(lvs.role, lvs.path, S.STALE, lvs.data, 42.0, pid_alive=alive, started=NOW - 100)
    text = S.render(lvs, pulse, now=NOW)
    assert (f"director: NOT RUNNING: /run/pylvs/lvs.status.json not rewritten for 42 s{why}; below, its last "
            "state\ndirector: active (run by pulse), pid 4242, io nfq-loop") in text  # no uptime: not up
    assert "TCP  192.0.2.10:80 (www)" in text
    assert S.exit_code(lvs, pulse) == 3
    stale_pulse = S.Source("pulse", pulse.path, S.STALE, pulse.data, 9.0, pid_alive=False)
    assert S.exit_code(sources()[0], stale_pulse) == 3
    assert "pulse: NOT RUNNING: /run/pylvs/pulse.status.json not rewritten for 9 s (pid 4200 is gone)" in S.render(
        sources()[0], stale_pulse, now=NOW)


def test_an_unreadable_file_is_status_unknown():
    lvs = S.Source("lvs", "/x/lvs.status.json", S.ERROR, error="not a status file (bad JSON: boom)")
    _, pulse = sources()
    assert "director: status unknown: /x/lvs.status.json: not a status file (bad JSON: boom)\n" in S.render(
        lvs, pulse, now=NOW)
    assert S.exit_code(lvs, pulse) == 4


# ----------------------------------------------------------------- reading the files


def write(path, data, age=0.0):
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    t = os.stat(path).st_mtime - age
    os.utime(path, (t, t))
    return str(path)


def test_read_source_states(tmp_path):
    now = os.stat(write(tmp_path / "probe", "")).st_mtime
    fresh = S.read_source("lvs", write(tmp_path / "a.json", {"pid": os.getpid()}), now=now + 1)
    assert (fresh.state, fresh.pid_alive, round(fresh.age)) == (S.RUNNING, True, 1)
    assert fresh.started is not None and fresh.started <= now + 1
    stale = S.read_source("lvs", write(tmp_path / "b.json", {"pid": 2**22 + 12345}, age=30), now=now)
    assert (stale.state, stale.pid_alive, stale.started) == (S.STALE, False, None)
    assert S.read_source("lvs", write(tmp_path / "c.json", {}, age=30), now=now, stale_after=60).state == S.RUNNING
    assert S.read_source("lvs", str(tmp_path / "none.json"), now=now).state == S.MISSING
    bad = S.read_source("lvs", write(tmp_path / "d.json", "{not json"), now=now)
    assert bad.state == S.ERROR and bad.error.startswith("not a status file (bad JSON")
    lst = S.read_source("lvs", write(tmp_path / "e.json", "[1, 2]"), now=now)
    assert (lst.state, lst.error) == (S.ERROR, "not a status file (a JSON list, not an object)")
    (tmp_path / "dir.json").mkdir()
    d = S.read_source("lvs", str(tmp_path / "dir.json"), now=now)
    assert d.state == S.ERROR and d.error.startswith("cannot read it")


def test_durations_and_counts():
    assert [S.duration(x) for x in (0, 12.4, 60, 192, 7384, 90000)] == [
        "0 s", "12 s", "1 min 00 s", "3 min 12 s", "2 h 03 min", "1 d 1 h"]
    assert [S.count(x) for x in (950, 12345, 34_000_000, None)] == ["950", "12k", "34M", "-"]


# ----------------------------------------------------------------- the command


def test_command_text_and_exit_codes(tmp_path, capsys):
    lvs = write(tmp_path / "lvs.status.json", lvs_status())
    assert main(["status", "--lvs-status", lvs, "--pulse-status", str(tmp_path / "pulse.status.json")]) == 3
    out = capsys.readouterr().out
    assert "HA:       pulse not running" in out and "TCP  192.0.2.10:80 (www)" in out
    write(tmp_path / "pulse.status.json", pulse_status())
    assert main(["status", "--runtime-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("HA:       primary router, active (pulse pid 4200") and "slow start: 6 of 96" in out
    write(tmp_path / "lvs.status.json", "{", age=0)
    assert main(["status", "--runtime-dir", str(tmp_path)]) == 4
    err = capsys.readouterr().err
    assert err.startswith(f"pylvs status: {tmp_path}/lvs.status.json: not a status file")
    write(tmp_path / "lvs.status.json", lvs_status(), age=20)
    assert main(["status", "--runtime-dir", str(tmp_path)]) == 3
    assert "director: NOT RUNNING" in capsys.readouterr().out
    assert main(["status", "--runtime-dir", str(tmp_path), "--stale-after", "60"]) == 0
    capsys.readouterr()


def test_command_json(tmp_path, capsys):
    write(tmp_path / "lvs.status.json", lvs_status())
    write(tmp_path / "pulse.status.json", pulse_status())
    assert main(["status", "--runtime-dir", str(tmp_path), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["lvs"] == json.loads(json.dumps(lvs_status())) and got["pulse"] == pulse_status()
    assert got["exit"] == 0 and got["files"]["lvs"]["state"] == "running"
    assert got["files"]["pulse"]["path"] == str(tmp_path / "pulse.status.json")
    (tmp_path / "pulse.status.json").unlink()
    (tmp_path / "lvs.status.json").unlink()
    assert main(["status", "--runtime-dir", str(tmp_path), "--json"]) == 3
    got = json.loads(capsys.readouterr().out)
    assert (got["lvs"], got["pulse"], got["files"]["lvs"]["state"], got["exit"]) == (None, None, "missing", 3)


def test_render_does_not_change_its_input():
    lvs = lvs_status()
    before = copy.deepcopy(lvs)
    S.render(*sources(lvs), now=NOW)
    assert lvs == before


def test_the_director_pulse_names_is_read(tmp_path, capsys):
    """When pulse's status says where its director writes (director.status), that file is read."""
    elsewhere = write(tmp_path / "child.json", lvs_status())
    pulse = pulse_status()
    pulse["director"]["status"] = elsewhere
    write(tmp_path / "pulse.status.json", pulse)
    assert main(["status", "--runtime-dir", str(tmp_path), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["files"]["lvs"]["path"] == elsewhere and got["lvs"]["pid"] == 4242
