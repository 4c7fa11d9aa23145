"""Config sync (pylvs.ha.confsync): the HMAC exchange over loopback, and applying a fetched lvs.cf."""

from __future__ import annotations

import logging
import os
import socket
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pylvs.ha import confsync as cs

EXAMPLE = Path(__file__).parents[2] / "examples" / "lvs.cf.primary-backup"
SECRET = b"0123456789abcdef0123456789abcdef"
LOOPBACK = "127.0.0.1"


def config_text(serial: int, extra: str = "") -> str:
    text = EXAMPLE.read_text()
    assert "serial_no = 1\n" in text
    return text.replace("serial_no = 1\n", f"serial_no = {serial}\n{extra}")


@pytest.fixture
def primary_file(tmp_path: Path) -> Path:
    d = tmp_path / "primary"
    d.mkdir()
    p = d / "lvs.cf"
    p.write_text(config_text(5))
    return p


@pytest.fixture
def serve(primary_file: Path) -> Iterator[Callable[..., cs.ConfigServer]]:
    servers: list[cs.ConfigServer] = []

    def start(secret: bytes = SECRET, path: Path | None = None, **kw: object) -> cs.ConfigServer:
        server = cs.ConfigServer(str(path or primary_file), secret, bind=(LOOPBACK, 0), **kw)  # type: ignore[arg-type]
        server.start()
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.stop()


# -- the exchange ------------------------------------------------------------------------------

def test_good_fetch(serve: Callable[..., cs.ConfigServer], primary_file: Path) -> None:
    server = serve()
    assert server.address is not None
    body = cs.fetch(LOOPBACK, server.address[1], SECRET, timeout=5.0)
    assert body == primary_file.read_bytes()
    server.stop()  # joins the thread: the counter is in
    assert server.stats.served == 1 and server.stats.refused_bad_hmac == 0
    # what the status pages show: who fetched which serial_no
    assert server.stats.last_peer == LOOPBACK and server.stats.last_serial == 5 and server.stats.last_at


def test_path_provider_is_read_per_request(serve: Callable[..., cs.ConfigServer], tmp_path: Path) -> None:
    a, b = tmp_path / "a.cf", tmp_path / "b.cf"
    a.write_bytes(b"serial_no = 1\n")
    b.write_bytes(b"serial_no = 2\n")
    current = [a]
    server = cs.ConfigServer(lambda: str(current[0]), SECRET, bind=(LOOPBACK, 0))
    with server:
        assert server.address is not None
        assert cs.fetch(LOOPBACK, server.address[1], SECRET) == a.read_bytes()
        current[0] = b
        assert cs.fetch(LOOPBACK, server.address[1], SECRET) == b.read_bytes()


def test_wrong_secret_refused_on_both_sides(serve: Callable[..., cs.ConfigServer],
                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pylvs.ha.confsync")
    server = serve()
    assert server.address is not None
    with pytest.raises(cs.ConfigSyncError, match=r"refused by 127\.0\.0\.1: bad HMAC \(wrong secret\?\)"):
        cs.fetch(LOOPBACK, server.address[1], b"another secret, not the primary's")
    server.stop()  # joins the thread: its log line and counter are in
    assert server.stats.refused_bad_hmac == 1 and server.stats.served == 0
    assert "config sync: refused request from 127.0.0.1: bad HMAC (wrong secret?)" in caplog.messages


def _fake_primary(answer: Callable[[bytes], bytes]) -> tuple[int, threading.Thread, socket.socket]:
    """A one-shot server answering the request it reads with answer(request)."""
    listener = socket.socket()
    listener.bind((LOOPBACK, 0))
    listener.listen(1)
    listener.settimeout(5)

    def run() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(5)
            req = b""
            while len(req) < cs.REQUEST_SIZE:
                chunk = conn.recv(cs.REQUEST_SIZE - len(req))
                if not chunk:
                    return
                req += chunk
            conn.sendall(answer(req))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return listener.getsockname()[1], t, listener


def _nonce(request: bytes) -> bytes:
    return request[len(cs.MAGIC):len(cs.MAGIC) + cs.NONCE_SIZE]


@pytest.mark.parametrize("how", ["tampered body", "replayed answer", "wrong secret", "truncated tag"])
def test_bad_answer_refused(how: str) -> None:
    body = config_text(7).encode()

    def answer(req: bytes) -> bytes:
        nonce = _nonce(req)
        if how == "tampered body":
            good = cs.make_answer(SECRET, nonce, body)
            return good.replace(b"serial_no = 7", b"serial_no = 9")
        if how == "replayed answer":  # a genuine answer, but to an older request
            return cs.make_answer(SECRET, b"\x01" * cs.NONCE_SIZE, body)
        if how == "wrong secret":
            return cs.make_answer(b"x" * 32, nonce, body)
        return cs.make_answer(SECRET, nonce, body)[:-1]

    port, t, listener = _fake_primary(answer)
    with listener:
        expected = r"connection closed" if how == "truncated tag" else r"bad HMAC from 127\.0\.0\.1: wrong secret\?"
        with pytest.raises(cs.ConfigSyncError, match=expected):
            cs.fetch(LOOPBACK, port, SECRET, timeout=5.0)
        t.join(5)


def test_oversize_answer_refused_without_reading_it() -> None:
    def answer(req: bytes) -> bytes:
        return cs.ANSWER_HEAD.pack(cs.MAGIC, cs.STATUS_OK, cs.MAX_BODY + 1)

    port, t, listener = _fake_primary(answer)
    with listener:
        with pytest.raises(cs.ConfigSyncError, match="too large"):
            cs.fetch(LOOPBACK, port, SECRET, timeout=5.0)
        t.join(5)


def test_oversize_file_not_served(serve: Callable[..., cs.ConfigServer], tmp_path: Path) -> None:
    big = tmp_path / "big.cf"
    big.write_bytes(b"#" * (cs.MAX_BODY + 1))
    server = serve(path=big)
    assert server.address is not None
    with pytest.raises(cs.ConfigSyncError, match="refused by 127.0.0.1: its lvs.cf is too large"):
        cs.fetch(LOOPBACK, server.address[1], SECRET)
    server.stop()
    assert server.stats.refused_too_large == 1


def test_silent_server_times_out() -> None:
    with socket.socket() as listener:
        listener.bind((LOOPBACK, 0))
        listener.listen(1)  # accepts in the kernel, never answers
        with pytest.raises(cs.ConfigSyncError, match="timed out"):
            cs.fetch(LOOPBACK, listener.getsockname()[1], SECRET, timeout=0.3)


def test_nothing_listening() -> None:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        port = s.getsockname()[1]  # bound, not listening: connection refused
        with pytest.raises(cs.ConfigSyncError, match=f"cannot connect to 127.0.0.1:{port}"):
            cs.fetch(LOOPBACK, port, SECRET, timeout=2.0)


def test_malformed_request_counted(serve: Callable[..., cs.ConfigServer]) -> None:
    server = serve()
    assert server.address is not None
    with socket.create_connection(server.address, timeout=5) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n" + b"x" * (cs.REQUEST_SIZE - 18))
        assert s.recv(64) == cs.make_refusal(cs.STATUS_MALFORMED)
    server.stop()
    assert server.stats.refused_malformed == 1


def test_request_tag_is_not_an_answer_tag() -> None:
    nonce = b"\x02" * cs.NONCE_SIZE
    req_tag = cs.make_request(SECRET, nonce)[-cs.TAG_SIZE:]
    assert req_tag != cs.answer_tag(SECRET, nonce, cs.STATUS_OK, b"")
    assert cs.check_request(SECRET, cs.make_request(SECRET, nonce)) == (cs.STATUS_OK, nonce)
    assert cs.check_request(b"other" * 8, cs.make_request(SECRET, nonce))[0] == cs.STATUS_BAD_HMAC


# -- read_secret -------------------------------------------------------------------------------

def test_read_secret(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    p = tmp_path / "secret"
    with pytest.raises(cs.ConfigSyncError, match=f"config_sync_secret {p}: no such file"):
        cs.read_secret(str(p))
    p.write_bytes(b"\n")
    with pytest.raises(cs.ConfigSyncError, match="empty"):
        cs.read_secret(str(p))
    p.write_bytes(SECRET + b"\n")
    p.chmod(0o600)
    caplog.set_level(logging.WARNING, logger="pylvs.ha.confsync")
    assert cs.read_secret(str(p)) == SECRET
    assert not caplog.records
    p.chmod(0o644)
    assert cs.read_secret(str(p)) == SECRET
    assert any("readable by group or others" in m for m in caplog.messages)


# -- apply_fetched -----------------------------------------------------------------------------

@pytest.fixture
def backup_file(tmp_path: Path) -> Path:
    d = tmp_path / "backup"
    d.mkdir()
    p = d / "lvs.cf"
    p.write_text(config_text(5))
    p.chmod(0o640)
    return p


def test_apply_newer(backup_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pylvs.ha.confsync")
    body = config_text(6).encode()
    out = cs.apply_fetched(body, str(backup_file), "10.77.1.1")
    assert out.status == "applied" and out.applied and out.serial_no == 6
    assert backup_file.read_bytes() == body
    assert stat.S_IMODE(backup_file.stat().st_mode) == 0o640  # the old file's mode kept
    assert os.listdir(backup_file.parent) == ["lvs.cf"]  # no temp file left
    assert "config sync: applied lvs.cf from 10.77.1.1: serial_no 5 -> 6" in caplog.messages


def test_apply_to_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "lvs.cf"
    out = cs.apply_fetched(config_text(1).encode(), str(p), "10.77.1.1")
    assert out.applied and p.read_text() == config_text(1)


def test_apply_older_refused(backup_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    before = backup_file.read_bytes()
    out = cs.apply_fetched(config_text(3).encode(), str(backup_file), "10.77.1.1")
    assert out.status == "refused" and out.reason == "serial_no 3 is older than ours (5)"
    assert "config sync: refused lvs.cf from 10.77.1.1: serial_no 3 is older than ours (5)" in caplog.messages
    assert backup_file.read_bytes() == before


def test_apply_bad_file_refused_with_location(backup_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    before = backup_file.read_bytes()
    bad = config_text(9, extra="keepalive = soon\n")  # line 11 of the fetched file
    line = bad.splitlines().index("keepalive = soon") + 1
    out = cs.apply_fetched(bad.encode(), str(backup_file), "10.77.1.1")
    assert out.status == "refused" and out.reason.startswith(f"10.77.1.1:lvs.cf:{line}: error:")
    assert any(m.startswith(f"config sync: 10.77.1.1:lvs.cf:{line}: error:") for m in caplog.messages)
    assert "config sync: refused lvs.cf from 10.77.1.1: 1 error" in caplog.messages
    assert backup_file.read_bytes() == before


def test_apply_non_utf8_refused(backup_file: Path) -> None:
    out = cs.apply_fetched(b"serial_no = 9\n\xff\n", str(backup_file), "10.77.1.1")
    assert out.status == "refused" and out.reason.startswith("10.77.1.1:lvs.cf:2:")


def test_apply_same_serial_unchanged(backup_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    same = backup_file.read_bytes()
    out = cs.apply_fetched(same, str(backup_file), "10.77.1.1")
    assert out.status == "unchanged" and not caplog.records
    different = config_text(5, extra="# edited without bumping serial_no\n").encode()
    out = cs.apply_fetched(different, str(backup_file), "10.77.1.1")
    assert out.status == "unchanged"
    assert backup_file.read_bytes() == same
    assert any("same serial_no 5" in m and "bump serial_no" in m for m in caplog.messages)


def test_failed_write_keeps_old_file(backup_file: Path, monkeypatch: pytest.MonkeyPatch,
                                     caplog: pytest.LogCaptureFixture) -> None:
    before = backup_file.read_bytes()

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cs.os, "replace", broken_replace)
    out = cs.apply_fetched(config_text(8).encode(), str(backup_file), "10.77.1.1")
    assert out.status == "refused" and "No space left on device" in out.reason
    assert backup_file.read_bytes() == before
    assert os.listdir(backup_file.parent) == ["lvs.cf"]  # the temp file removed
    assert any("the old file is kept" in m for m in caplog.messages)


def test_failed_write_read_only_directory(backup_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = backup_file.read_bytes()
    if os.geteuid() == 0:  # root writes into a read-only directory anyway: fail the temp file as it would
        def denied(**kw: object) -> tuple[int, str]:
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(cs.tempfile, "mkstemp", denied)
    backup_file.parent.chmod(0o555)
    try:
        out = cs.apply_fetched(config_text(8).encode(), str(backup_file), "10.77.1.1")
    finally:
        backup_file.parent.chmod(0o755)
    assert out.status == "refused" and "Permission denied" in out.reason
    assert backup_file.read_bytes() == before


# -- the client --------------------------------------------------------------------------------

def test_client_poll_once(serve: Callable[..., cs.ConfigServer], primary_file: Path, backup_file: Path,
                          caplog: pytest.LogCaptureFixture) -> None:
    primary_file.write_text(config_text(6))
    server = serve()
    assert server.address is not None
    client = cs.ConfigSyncClient(str(backup_file), LOOPBACK, server.address[1], SECRET, interval=10)
    assert client.poll_once().status == "applied"
    assert backup_file.read_bytes() == primary_file.read_bytes()
    assert client.poll_once().status == "unchanged"

    wrong = cs.ConfigSyncClient(str(backup_file), LOOPBACK, server.address[1], b"w" * 32, interval=10)
    caplog.set_level(logging.DEBUG, logger="pylvs.ha.confsync")
    out = wrong.poll_once()
    assert out.status == "refused" and "bad HMAC" in out.reason
    again = wrong.poll_once()
    assert again.reason == out.reason
    lines = [r for r in caplog.records if r.getMessage().startswith("config sync: fetching from 127.0.0.1 failed")]
    assert [r.levelno for r in lines] == [logging.WARNING, logging.DEBUG]  # logged on the change only


def test_client_run_calls_back_and_stops(serve: Callable[..., cs.ConfigServer], primary_file: Path,
                                         backup_file: Path) -> None:
    primary_file.write_text(config_text(6))
    server = serve()
    assert server.address is not None
    stop = threading.Event()
    applied: list[cs.Outcome] = []

    def on_applied(o: cs.Outcome) -> None:
        applied.append(o)
        stop.set()

    client = cs.ConfigSyncClient(str(backup_file), LOOPBACK, server.address[1], SECRET, interval=30)
    t = threading.Thread(target=client.run, args=(stop, on_applied), daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive() and [o.serial_no for o in applied] == [6]
