"""The control socket: one JSON request per connection, answered by a handler."""

from __future__ import annotations

import threading

from pylvs.control import ControlSocket, request


def test_request_reply_and_bad_requests(tmp_path):
    path = str(tmp_path / "ctl")
    ctl = ControlSocket(path)
    seen = []

    def handler(req):
        seen.append(req)
        return {"ok": True, "checks": int(req["n"])}

    stop = threading.Event()

    def serve():
        while not stop.is_set():
            ctl.poll(handler)
            stop.wait(0.01)

    t = threading.Thread(target=serve)
    t.start()
    try:
        assert request(path, {"cmd": "force", "n": 2}) == {"ok": True, "checks": 2}
        reply = request(path, {"cmd": "force"})  # the handler's KeyError becomes a reply
        assert reply["ok"] is False and "bad request" in reply["error"]
    finally:
        stop.set()
        t.join()
        ctl.close()
    assert seen[0] == {"v": 1, "cmd": "force", "n": 2}
    assert not (tmp_path / "ctl").exists()


def test_wrong_version_and_no_director(tmp_path):
    path = str(tmp_path / "ctl")
    ctl = ControlSocket(path)
    assert oct((tmp_path / "ctl").stat().st_mode & 0o777) == "0o600"
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            ctl.poll(lambda req: {"ok": True})
            stop.wait(0.01)

    t = threading.Thread(target=serve)
    t.start()
    try:
        reply = request(path, {"cmd": "x", "v": 2})
        assert reply["ok"] is False and "protocol version 2" in reply["error"]
        big = {"cmd": "x", "blob": "y" * 300_000}  # far more than a datagram's worth
        assert request(path, big) == {"ok": True}
    finally:
        stop.set()
        t.join()
        ctl.close()
    import pytest

    with pytest.raises(OSError):
        request(path, {"cmd": "x"})
