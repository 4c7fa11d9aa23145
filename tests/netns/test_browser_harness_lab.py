"""The browser harness (tests/netns/browser.py) end to end: a headless Chromium inside the
director's namespace loads a page from a server on that namespace's 127.0.0.1, runs its
JavaScript, and is gone afterwards; the root namespace cannot reach that server."""

from __future__ import annotations

import errno
import socket
import subprocess
import sys
import time
from pathlib import Path

import browser as harness
import pytest
from waits import wait_for

SERVER_START_S = 15.0

INDEX_HTML = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>pylvs browser harness</title></head>
<body>
  <h1>Harness check</h1>
  <form id="f" onsubmit="return false">
    <label>Name <input id="name" name="name" value="dir1"></label>
    <button id="go" type="button">Press me</button>
  </form>
  <p id="out">not pressed</p>
  <script>
    document.getElementById("go").addEventListener("click", () => {
      document.getElementById("out").textContent =
        "pressed by " + document.getElementById("name").value;
    });
  </script>
</body>
</html>
"""


@pytest.fixture(scope="module", autouse=True)
def _browser_support() -> None:
    reason = harness.skip_reason()
    if reason:
        pytest.skip(reason)


def _root_listening_ports() -> set[int]:
    """TCP ports in LISTEN state in this (the root) namespace."""
    ports = set()
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A":  # TCP_LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _free_port(lab, host: str) -> int:
    """A port free on 127.0.0.1 in `host`'s namespace and not listened on in the root one
    (so the root-side connect below can only be refused)."""
    busy = _root_listening_ports()
    for _ in range(50):
        with lab.socket(host) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in busy:
            return port
    raise AssertionError("no port free in both namespaces")


def _serving(lab, host: str, port: int) -> bool:
    with lab.socket(host) as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_chromium_in_director_namespace(make_lab, tmp_path: Path) -> None:
    lab = make_lab("nat", real_servers=1)
    ns = lab.director.netns
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text(INDEX_HTML)
    port = _free_port(lab, "dir1")
    log = (tmp_path / "http.log").open("wb")
    lab.popen("dir1", [sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                       str(port), "--directory", str(site)],
              what="http.server", stdout=log, stderr=subprocess.STDOUT)
    wait_for(lambda: _serving(lab, "dir1", port), SERVER_START_S,
             f"http.server on 127.0.0.1:{port} in {ns}")

    # The root namespace's loopback is another loopback: nothing there on this port.
    with socket.socket() as s:
        s.settimeout(2.0)
        assert s.connect_ex(("127.0.0.1", port)) == errno.ECONNREFUSED

    url = f"http://127.0.0.1:{port}/"
    t0 = time.monotonic()
    with harness.chromium_in(ns, tmp_path) as browser:
        launched = time.monotonic() - t0
        assert browser.is_connected()
        pids = harness.chromium_pids(ns)
        assert pids, "no chromium process inside the director's namespace"
        page = harness.new_page(browser)
        page.goto(url)
        assert page.title() == "pylvs browser harness"
        assert page.locator("#out").text_content() == "not pressed"
        page.fill("#name", "the harness")
        page.click("#go")
        page.wait_for_function(
            "document.getElementById('out').textContent === 'pressed by the harness'")
        shot = harness.screenshot(page, "harness", tmp_path / "shots")
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert harness.chromium_pids(ns), "chromium left the namespace?"
        print(f"chromium launch {launched:.2f} s, {len(pids)} processes in {ns}")

    # The browser is gone (all its processes) once the context ends.
    assert harness.chromium_pids(ns) == []
    # The page was fetched through the director's loopback by the browser.
    log.close()
    assert "GET / HTTP/1.1" in (tmp_path / "http.log").read_text()
