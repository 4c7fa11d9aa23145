"""The web configuration tool in a real headless Chromium against a real director, in a NAT
lab: the RHEL 5 guide's chapter 4 from GLOBAL SETTINGS to a running virtual server, every
panel photographed for docs/web.md.

Everything runs in the director's namespace (dir1): ``pylvs web`` on its own 127.0.0.1:3636,
started as root and serving as ``nobody``; the browser (tests/netns/browser.py); and the
director, started (as an operator runs ``service pulse start`` after the tool) on the file
the tool wrote, with ``--web-group nogroup`` so the tool reaches its web socket.  The
files live in a directory of their own under /tmp, since the tool's user cannot enter
pytest's 0700 one.  Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import browser as harness
import pytest
from waits import wait_for

from pylvs.config.check import check_text
from pylvs.lab import topology as topo
from pylvs.lab.director import LabDirector

PASSWORD = "chapter four password"
WEB = "http://127.0.0.1:3636"
USER, GROUP = "nobody", "nogroup"  # Debian's: an unprivileged user that exists on every box
INTERVAL = 2  # lvs.cf timeout of the virtual server: check interval and probe limit
REFRESH = 2  # CONTROL/MONITORING auto update, seconds
SLACK = 6.0  # scheduling and status latency on a shared 2-vCPU machine
START_TIMEOUT = 30.0
EXPECT_TIMEOUT_MS = 20_000


@pytest.fixture
def files():
    """A directory the tool's user can reach: etc/ (lvs.cf, the director's runtime files;
    the tool writes here) and conf/ (the password file)."""
    d = Path(tempfile.mkdtemp(prefix="pylvs-web-lab-"))
    try:
        d.chmod(0o755)
        for sub in ("etc", "conf"):
            (d / sub).mkdir()
            shutil.chown(d / sub, USER, GROUP)
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _uid_of(pid: int) -> tuple[int, ...]:
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("Uid:"))
    return tuple(int(x) for x in line.split()[1:])


def _listening(lab, port: int) -> bool:
    out = lab.run("dir1", ["ss", "-Hltn", f"sport = :{port}"], check=False).stdout
    return bool(out.strip())


def _start_web(lab, d: Path) -> subprocess.Popen:
    argv = [sys.executable, "-m", "pylvs", "web", "-c", str(d / "etc" / "lvs.cf"), "--passwd",
            str(d / "conf" / "piranha.passwd"), "--user", USER, "--director-control", str(d / "etc" / "lvs.web.ctl"),
            "--pulse-control", str(d / "etc" / "pulse.web.ctl")]  # fmt: skip
    with open(d / "web.log", "wb") as log:
        proc = lab.popen("dir1", argv, what="web", stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + START_TIMEOUT
    while not _listening(lab, 3636):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"pylvs web did not start:\n{(d / 'web.log').read_text()}")
        time.sleep(0.2)
    return proc


def _held(lab, n: int) -> list[socket.socket]:
    """``n`` connections through the VIP, established and waiting to send their request."""
    out = []
    for _ in range(n):
        s = lab.socket("client1")
        s.settimeout(5)
        s.connect((topo.VIP, topo.HTTP_PORT))
        out.append(s)
    return out


def _finish(s: socket.socket) -> str:
    """Send the held connection's request; the name of the real server that answered."""
    with s:
        s.sendall(b"GET / HTTP/1.0\r\nHost: vip\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1."), data[:200]
    return body.decode().strip()


def _fetch(page, method: str, path: str, body: str | None = None) -> tuple[int, str, str]:
    """(status, final URL, text) of a request the page itself makes, with its cookies."""
    return tuple(page.evaluate(
        """async ([method, url, body]) => {
            const init = {method, credentials: "same-origin"};
            if (body !== null) {
                init.body = body;
                init.headers = {"content-type": "application/x-www-form-urlencoded"};
            }
            const r = await fetch(url, init);
            return [r.status, r.url, await r.text()];
        }""", [method, f"{WEB}{path}", body]))


def _fill(page, values: dict[str, str]) -> None:
    for name, value in values.items():
        page.fill(f"[name='{name}']", value)


def _accept(page) -> None:
    page.click("button[name=accept]")


def test_web_tool_in_a_browser(make_lab, files, tmp_path):
    reason = harness.skip_reason()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import expect

    lab = make_lab("nat", real_servers=2)
    rs1, rs2 = lab.rips
    d = files
    cf = d / "etc" / "lvs.cf"
    out = subprocess.run([sys.executable, "-m", "pylvs", "passwd", "-f", str(d / "conf" / "piranha.passwd"),
                          "--owner", USER, PASSWORD], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    web = _start_web(lab, d)
    # started as root, it serves as nobody: every uid of the process (real, effective, saved, fs)
    assert set(_uid_of(web.pid)) == {65534}, (d / "web.log").read_text()
    director = None
    try:
        with harness.chromium_in(lab.hosts["dir1"].netns, tmp_path) as browser:
            page = harness.new_page(browser)
            shot = lambda name: harness.screenshot(page, name)  # noqa: E731

            # -- log in: a wrong password is refused, the one from `pylvs passwd` lets us in
            page.goto(f"{WEB}/monitor")
            expect(page).to_have_url(f"{WEB}/login?next=/monitor")
            shot("login")
            page.fill("#password", "not the password")
            page.click("button[type=submit]")
            expect(page.locator(".errors")).to_contain_text("Wrong user name or password")
            page.fill("#password", PASSWORD)
            page.click("button[type=submit]")
            expect(page).to_have_url(f"{WEB}/monitor")

            # -- chapter 4 on a fresh lvs.cf: GLOBAL SETTINGS
            page.click("text=GLOBAL SETTINGS")
            _fill(page, {"primary": topo.DIRECTOR_PUBLIC[0], "nat_router_ip": topo.NAT_ROUTER,
                         "nat_router_dev": f"{topo.PRIVATE_IF}:1", "nat_nmask": "255.255.255.0"})  # fmt: skip
            page.select_option("[name=network]", "nat")
            shot("global-settings")
            _accept(page)
            expect(page.locator(".flash.ok")).to_contain_text("Accepted: global settings")
            page.click("text=REDUNDANCY")
            shot("redundancy")

            # VIRTUAL SERVERS: ADD, the VIRTUAL SERVER panel
            page.click("text=VIRTUAL SERVERS")
            page.click("a.button:text-is('ADD')")
            _fill(page, {"name": "www", "port": str(topo.HTTP_PORT), "address_ip": topo.VIP,
                         "address_dev": f"{topo.PUBLIC_IF}:1", "vip_nmask": "255.255.255.255",
                         "timeout": str(INTERVAL), "reentry": str(2 * INTERVAL)})  # fmt: skip
            page.select_option("[name=scheduler]", "rr")
            shot("virtual-server")
            _accept(page)
            expect(page).to_have_url(f"{WEB}/virtual/www")

            # REAL SERVER: two, each added then activated
            page.click("nav.tabs >> text=REAL SERVER")
            for name, rip in (("rs1", rs1), ("rs2", rs2)):
                page.click("a.button:text-is('ADD')")
                _fill(page, {"name": name, "address": rip, "weight": "1"})
                if name == "rs2":
                    shot("real-server")
                _accept(page)
                page.click(f"tr[data-name={name}] >> button:text-is('ACTIVATE')")
                expect(page.locator(f"tr[data-name={name}] td").first).to_have_text("active")
            shot("real-servers")

            # MONITORING SCRIPTS
            page.click("nav.tabs >> text=MONITORING SCRIPTS")
            _fill(page, {"send": "GET / HTTP/1.0\\r\\n\\r\\n", "expect": "HTTP"})
            shot("monitoring-scripts")
            _accept(page)
            expect(page.locator(".flash.ok")).to_contain_text("monitoring script of www")

            # VIRTUAL SERVERS: ACTIVATE, then APPLY with the diff
            page.click("text=VIRTUAL SERVERS")
            page.click("tr[data-name=www] >> button:text-is('ACTIVATE')")
            shot("virtual-servers")
            page.click("text=review the diff and APPLY")
            expect(page.locator("#diff")).to_contain_text("+virtual www {")
            shot("apply")
            assert not cf.exists()  # nothing written before APPLY
            page.click("#apply")
            expect(page.locator("#written")).to_contain_text("serial_no 1")
            expect(page.locator("#reloaded")).to_contain_text("no running director answered")
            result = check_text(cf.read_text())
            assert result.ok, result.diagnostics

            # the operator starts the director on that file (service pulse start, in the guide)
            director = LabDirector(lab, d / "etc", cf.read_text(), extra=("--web-group", GROUP))
            for _ in range(6):
                reply = lab.http_get("client1", topo.VIP, topo.HTTP_PORT)
                assert reply.body.decode().strip() in ("rs1", "rs2")
            answered = {lab.http_get("client1", topo.VIP, topo.HTTP_PORT).body.decode().strip() for _ in range(4)}
            assert answered == {"rs1", "rs2"}

            # CONTROL/MONITORING: both up, with their connection counts, refreshed in place
            page.goto(f"{WEB}/monitor?refresh={REFRESH}")
            row = lambda name: page.locator(f"table.monitor tr[data-server={name}]")  # noqa: E731
            for name in ("rs1", "rs2"):
                expect(row(name).locator("td.status")).to_have_text("UP", timeout=EXPECT_TIMEOUT_MS)
                expect(row(name).locator("td.conns")).not_to_have_text("0", timeout=EXPECT_TIMEOUT_MS)
            assert int(row("rs1").locator("td.conns").inner_text()) >= 3
            expect(page.locator("#director-state")).to_contain_text(f"pid {director.pid}")
            page.wait_for_timeout(3 * REFRESH * 1000)  # three samples: the charts have lines
            shot("control-monitoring")

            # -- bad input: refused beside its field, lvs.cf byte-identical
            before = cf.read_bytes()
            page.goto(f"{WEB}/virtual/www")
            page.fill("[name=address_ip]", "10.77.1.300")
            page.fill("[name=port]", "70000")
            _accept(page)
            expect(page.locator("#error-address")).to_contain_text("not an IPv4 address")
            expect(page.locator("#error-port")).to_contain_text("out of range")
            shot("field-errors")
            page.goto(f"{WEB}/virtual/www/scripts")
            page.fill("[name=expect]", "HTTP/1.[01")
            page.check("[name=use_regex]")
            _accept(page)
            expect(page.locator("#error-expect")).to_be_visible()
            assert cf.read_bytes() == before
            page.goto(f"{WEB}/apply")
            expect(page.locator("main")).to_contain_text("No pending changes")

            # -- drain rs1 from the page: new connections avoid it, held ones continue
            held = _held(lab, 4)  # rr: two on each server
            wait_for(lambda: sum(r["active"] for s in director.status()["services"] for r in s["dests"]) >= 4,
                     10, "the held connections in the table")  # fmt: skip
            page.goto(f"{WEB}/monitor?refresh={REFRESH}")
            row("rs1").locator("button.drain").click()
            expect(page.locator(".flash.ok")).to_contain_text("www / rs1: DRAIN")
            expect(row("rs1").locator("td.status")).to_have_text("DRAIN", timeout=EXPECT_TIMEOUT_MS)
            expect(row("rs1").locator("td.weight")).to_contain_text("0")
            shot("drain")
            fresh = [lab.http_get("client1", topo.VIP, topo.HTTP_PORT).body.decode().strip() for _ in range(6)]
            assert fresh == ["rs2"] * 6
            assert sorted(_finish(s) for s in held) == ["rs1", "rs1", "rs2", "rs2"]
            row("rs1").locator("button.ready").click()
            expect(row("rs1").locator("td.status")).to_have_text("UP", timeout=EXPECT_TIMEOUT_MS)
            answered = {lab.http_get("client1", topo.VIP, topo.HTTP_PORT).body.decode().strip() for _ in range(4)}
            assert answered == {"rs1", "rs2"}

            # -- stop rs2's server: DOWN within a check interval and a refresh, no reload by hand
            page.goto(f"{WEB}/monitor?refresh={REFRESH}")
            proc = next(p for p in lab.processes if p.host == "rs2" and p.what == "servers")
            os.kill(proc.pid, signal.SIGTERM)
            proc.popen.wait(10)
            expect(row("rs2").locator("td.status")).to_have_text(
                "DOWN", timeout=int((INTERVAL + REFRESH + SLACK) * 1000))
            expect(row("rs2").locator("td.reason")).not_to_be_empty()
            shot("server-down")

            # -- CSRF and sessions: a POST without the token, and pages without a session
            # (fetch() from the pages: the browser is in dir1; Playwright's own request
            # context would connect from the root namespace, where nothing listens)
            status, _, body = _fetch(page, "POST", "/virtual/www/toggle", "active=1")
            assert status == 403 and "CSRF" in body
            stranger = harness.new_context(browser).new_page()
            stranger.goto(f"{WEB}/login")
            status, url, body = _fetch(stranger, "GET", "/virtual")
            assert status == 200 and url.startswith(f"{WEB}/login") and 'id="password"' in body
            assert _fetch(stranger, "GET", "/status.json")[0] == 401
            assert _fetch(stranger, "POST", "/global", "primary=10.0.0.1")[0] == 403
            assert cf.read_bytes() == before

            # -- two operators at once: the second APPLY on a stale serial_no is refused
            other = harness.new_context(browser).new_page()
            other.goto(f"{WEB}/login")
            other.fill("#password", PASSWORD)
            other.click("button[type=submit]")
            for p, weight in ((page, "3"), (other, "5")):
                p.goto(f"{WEB}/virtual/www/real/rs1")
                p.fill("[name=weight]", weight)
                p.click("button[name=accept]")
                p.goto(f"{WEB}/apply")
                expect(p.locator("#diff")).to_contain_text(f"weight = {weight}")
            page.click("#apply")
            expect(page.locator("#written")).to_contain_text("serial_no 2")
            expect(page.locator("#reloaded")).to_contain_text("the director reloaded")
            shot("applied")
            written = cf.read_bytes()
            other.click("#apply")
            expect(other.locator("#refused")).to_contain_text("serial_no 2")
            harness.screenshot(other, "stale-apply")
            assert cf.read_bytes() == written
            wait_for(lambda: director.status()["serial_no"] == 2, 10, "the director on serial_no 2")
            w = {d_["addr"]: d_["weight"] for s in director.status()["services"] for d_ in s["dests"]}
            assert w.get(rs1) == 3

            page.goto(f"{WEB}/password")
            shot("change-password")
    finally:
        if director is not None:
            director.stop()
        with contextlib.suppress(ProcessLookupError):
            os.kill(web.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            web.wait(10)
        if web.poll() is None:
            web.kill()
    assert web.returncode == 0, (d / "web.log").read_text()
    log = (d / "web.log").read_text()
    assert PASSWORD not in log and "not the password" not in log
