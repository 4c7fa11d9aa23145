"""The control socket: one JSON request per datagram, answered by a handler."""

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
    assert seen[0] == {"cmd": "force", "n": 2}
    assert not (tmp_path / "ctl").exists()
