"""``pylvs web`` as a process, without serving: its options, the user it becomes, the
checks it makes as that user before serving, and the warm-up that loads every page and
lazily imported module while it is still root.  tests/netns/test_web_lab.py starts the
real thing and checks its uid."""

from __future__ import annotations

import pytest

from pylvs.cli.main import main
from pylvs.web import auth
from pylvs.web.app import Settings, Web, build_app
from pylvs.web.server import WebError, check_access, identity, parse_listen, warm_up


def test_listen_addresses():
    assert parse_listen("127.0.0.1:3636") == ("127.0.0.1", 3636)
    assert parse_listen("[::1]:3636") == ("::1", 3636)
    for bad in ("127.0.0.1", ":3636", "127.0.0.1:0", "127.0.0.1:70000", "127.0.0.1:http"):
        with pytest.raises(WebError, match="ADDR:PORT"):
            parse_listen(bad)


def test_identity_refuses_a_missing_user_and_root():
    with pytest.raises(WebError, match="does not exist: create it"):
        identity("pylvs-no-such-user")
    with pytest.raises(WebError, match="that is root"):
        identity("root")
    with pytest.raises(WebError, match="group 'pylvs-no-such-group' does not exist"):
        identity("nobody", "pylvs-no-such-group")
    who = identity("nobody")
    assert who.uid != 0 and who.gid in who.groups


def test_check_access_says_what_to_change(tmp_path):
    s = Settings(lvs_cf=str(tmp_path / "ha" / "lvs.cf"), passwd=str(tmp_path / "missing.passwd"),
                 director=str(tmp_path / "lvs.web.ctl"))  # fmt: skip
    problems = check_access(s)
    assert any(p.startswith("error: the password file") and "pylvs passwd" in p for p in problems)
    assert any(p.startswith("error: cannot write") and "chmod g+w" in p for p in problems)
    assert any(p.startswith("warning: no director socket") for p in problems)
    (tmp_path / "ha").mkdir()
    auth.write_password(s.passwd, "long enough password")
    assert [p for p in check_access(s) if p.startswith("error")] == []


def test_warm_up_runs_every_page_kind_without_error(tmp_path):
    s = Settings(lvs_cf=str(tmp_path / "lvs.cf"), passwd=str(tmp_path / "p"), director=str(tmp_path / "none"))
    web = Web(s)
    warm_up(build_app(web), web)
    assert web.templates.env.cache  # every template compiled
    assert not tmp_path.joinpath("lvs.cf").exists()  # and nothing written


def test_web_command_refuses_half_tls_and_a_bad_allow_list(tmp_path, capsys):
    assert main(["web", "--tls-cert", str(tmp_path / "c.pem")]) == 2
    assert "go together" in capsys.readouterr().err
    assert main(["web", "--allow", "10.0.0.0/8,nonsense", "-c", str(tmp_path / "lvs.cf")]) == 1
    assert "not an IP address or network" in capsys.readouterr().err
