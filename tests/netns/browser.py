"""A real headless Chromium (Debian's) driven by Playwright, running inside a lab namespace.

``chromium_in(netns, tmp_dir)`` yields a Playwright ``Browser`` whose processes all live
in network namespace `netns`: Playwright launches a wrapper script (written into a fresh
directory under `tmp_dir`) that records its PID and execs
``ip netns exec NETNS /usr/bin/chromium ARGS``.  Playwright talks to Chromium over the
pipes it hands over as fds 3 and 4 (``--remote-debugging-pipe``); ``ip netns exec`` and
both shell scripts pass them through untouched and nothing listens anywhere, so a page
at ``http://127.0.0.1:PORT/`` is the namespace's own loopback, never the root's.

Everything the browser writes (profile, HOME, XDG dirs, Playwright's artifacts, the
wrapper) stays under `tmp_dir`.  Every wait is bounded: pages from ``new_page`` have a
15 s default timeout, the launch 30 s, the close 30 s (then Playwright SIGKILLs the
browser's process group).  After the context we look for Chromium processes still alive
in `netns` whose process group is the one of the process we started (its PID, which the
wrapper records): each is SIGKILLed by PID and the context raises.

``skip_reason()`` says why browser tests cannot run here; ``screenshot(page, name)``
saves a full-page PNG into ``docs/web/`` for the documentation.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # playwright may be missing: skip_reason() reports that
    from playwright.sync_api import Browser, BrowserContext, Page

CHROMIUM = "/usr/bin/chromium"            # Debian's launcher script (sources /etc/chromium.d)
CHROMIUM_BINARY = "/usr/lib/chromium/chromium"  # what it execs: the browser's /proc/PID/exe
IP = shutil.which("ip") or "/usr/sbin/ip"

DEFAULT_TIMEOUT_MS = 15_000   # any page action / expectation
NAVIGATION_TIMEOUT_MS = 15_000
LAUNCH_TIMEOUT_MS = 30_000    # chromium up and talking over the pipe
KILL_WAIT_S = 5.0             # after SIGKILL of a leftover process group

REPO = Path(__file__).resolve().parents[2]
DOCS_WEB = REPO / "docs" / "web"

# Stable rendering for screenshots: fixed viewport, locale, timezone, no animations.
VIEWPORT = {"width": 1280, "height": 800}


def skip_reason() -> str | None:
    """None if browser tests can run here, else why not (for pytest.skip)."""
    if importlib.util.find_spec("playwright") is None:
        return "the playwright Python package is not installed"
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} not found (apt-get install chromium)"
    if not os.access(CHROMIUM_BINARY, os.X_OK):
        return f"{CHROMIUM_BINARY} not found (Debian's chromium package layout expected)"
    if os.geteuid() != 0:
        return f"needs root to run a browser inside a network namespace (euid {os.geteuid()})"
    if not os.access(IP, os.X_OK):
        return "iproute2 'ip' command not found"
    return None


# --- processes ---------------------------------------------------------------------------

def _stat_fields(pid: int) -> list[bytes] | None:
    """Fields of /proc/PID/stat after comm (index 0 = state), or None if gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return data[data.rindex(b")") + 2:].split()


def _netns_id(netns: str) -> tuple[int, int] | None:
    try:
        st = os.stat(f"/run/netns/{netns}")
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def _chromium_in(ns_id: tuple[int, int] | None) -> dict[int, int]:
    """{pid: process group} of live Chromium processes in the namespace `ns_id`."""
    found: dict[int, int] = {}
    if ns_id is None:
        return found
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            exe = os.readlink(f"/proc/{entry}/exe")
            ns = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        if exe == CHROMIUM_BINARY and (ns.st_dev, ns.st_ino) == ns_id:
            fields = _stat_fields(int(entry))
            if fields and fields[0] != b"Z":
                found[int(entry)] = int(fields[2])
    return found


def chromium_pids(netns: str) -> list[int]:
    """PIDs of Chromium processes (any kind: browser, zygote, renderer, gpu) in `netns`."""
    return sorted(_chromium_in(_netns_id(netns)))


def _kill_leftovers(ns_id: tuple[int, int] | None, pgid: int) -> list[int]:
    """SIGKILL, by PID, Chromium processes still alive in the namespace `ns_id` and in
    process group `pgid` (the one Playwright created for the browser we launched); waits at
    most KILL_WAIT_S for them to go and returns their PIDs."""
    left = [pid for pid, group in _chromium_in(ns_id).items() if group == pgid]
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + KILL_WAIT_S
    while time.monotonic() < deadline and any(
            group == pgid for group in _chromium_in(ns_id).values()):
        time.sleep(0.05)
    return left


# --- the browser -------------------------------------------------------------------------

def _write_wrapper(work: Path, netns: str, pid_file: Path) -> Path:
    wrapper = work / "chromium-in-netns.sh"
    wrapper.write_text(
        "#!/bin/sh\n"
        "# Started by Playwright (own session: PID = process group id). Record the PID,\n"
        "# then become Chromium inside the namespace (exec keeps PID and fds 3/4).\n"
        f"echo $$ > {shlex.quote(str(pid_file))}\n"
        f"exec {shlex.quote(IP)} netns exec {shlex.quote(netns)} {CHROMIUM} \"$@\"\n")
    wrapper.chmod(0o700)
    return wrapper


def _browser_env(work: Path, tmp: Path) -> dict[str, str]:
    """A small, fixed environment: HOME and XDG dirs under `work` (Chromium writes
    ~/.pki/nssdb, ~/.config/chromium crash dirs, fontconfig cache...), TMPDIR `tmp`,
    no D-Bus."""
    home = work / "home"
    dirs = {"HOME": home, "XDG_CONFIG_HOME": home / ".config",
            "XDG_CACHE_HOME": home / ".cache", "XDG_DATA_HOME": home / ".local" / "share",
            "XDG_RUNTIME_DIR": work / "run", "TMPDIR": tmp}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
    env = {k: str(v) for k, v in dirs.items()}
    env.update(PATH=os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
               LANG="C.UTF-8", TZ="UTC",
               DBUS_SESSION_BUS_ADDRESS="disabled:", DBUS_SYSTEM_BUS_ADDRESS="disabled:")
    return env


@contextlib.contextmanager
def _driver_tmpdir(path: Path) -> Iterator[None]:
    """The Playwright driver (node) puts the browser profile and artifacts in its
    os.tmpdir(), read from the environment it is started with: point it into `path`."""
    old = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(path)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = old


@contextlib.contextmanager
def chromium_in(netns: str, tmp_dir: Path, *, args: tuple[str, ...] = ()) -> Iterator[Browser]:
    """A headless Chromium running inside network namespace `netns` (see module doc).
    `args`: extra Chromium switches.  Use ``new_page(browser)`` for bounded pages."""
    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="chromium-", dir=tmp_dir))
    pid_file = work / "browser.pid"
    wrapper = _write_wrapper(work, netns, pid_file)
    # Chromium binds its profile's SingletonSocket (a unix socket, not network) at
    # $TMPDIR/org.chromium.Chromium.XXXXXX/SingletonSocket and aborts ("Socket path too
    # long") past sun_path's 107 bytes: pytest's tmp_path is often too long for that.
    chrome_tmp = work / "tmp"
    own_tmp = len(str(chrome_tmp)) + len("/org.chromium.Chromium.XXXXXX/SingletonSocket") > 100
    if own_tmp:
        chrome_tmp = Path(tempfile.mkdtemp(prefix="plchr-"))  # short; removed below
    env = _browser_env(work, chrome_tmp)
    driver_tmp = work / "driver-tmp"
    driver_tmp.mkdir(mode=0o700)

    ns_id = _netns_id(netns)
    if ns_id is None:
        raise FileNotFoundError(f"network namespace {netns!r} not found in /run/netns")
    pgid: int | None = None
    with _driver_tmpdir(driver_tmp):
        pw = sync_playwright().start()
    try:
        try:
            browser = pw.chromium.launch(
                executable_path=str(wrapper), headless=True, chromium_sandbox=False,
                env=env, timeout=LAUNCH_TIMEOUT_MS,
                # Playwright itself passes --headless, --no-sandbox (chromium_sandbox is
                # False by default; root needs it), --user-data-dir=<its temp profile,
                # under driver-tmp>, --remote-debugging-pipe, --disable-dev-shm-usage,
                # --no-first-run, --disable-background-networking, --disable-sync...
                args=["--disable-gpu", "--lang=en-US", *args])
        finally:
            with contextlib.suppress(OSError, ValueError):
                pgid = int(pid_file.read_text().strip())
        try:
            yield browser
        finally:
            browser.close()  # bounded by Playwright: graceful, else SIGKILL of the group
    finally:
        try:
            pw.stop()
        finally:
            left = _kill_leftovers(ns_id, pgid) if pgid is not None else []
            if own_tmp:
                shutil.rmtree(chrome_tmp, ignore_errors=True)
        if left and sys.exc_info()[1] is None:  # never hide the body's own error
            raise RuntimeError(f"chromium processes {left} (group {pgid}) outlived "
                               "browser.close(); killed them")


def new_context(browser: Browser, **kwargs: object) -> BrowserContext:
    """``browser.new_context`` with the harness defaults (viewport, locale, timezone) and
    bounded timeouts."""
    opts: dict[str, object] = {"viewport": VIEWPORT, "locale": "en-US",
                               "timezone_id": "UTC", "reduced_motion": "reduce"}
    opts.update(kwargs)
    context = browser.new_context(**opts)  # type: ignore[arg-type]
    context.set_default_timeout(DEFAULT_TIMEOUT_MS)
    context.set_default_navigation_timeout(NAVIGATION_TIMEOUT_MS)
    return context


def new_page(browser: Browser, **kwargs: object) -> Page:
    """A page in a fresh context (``new_context``), every action bounded by 15 s."""
    return new_context(browser, **kwargs).new_page()


def screenshot(page: Page, name: str, directory: Path | None = None) -> Path:
    """Save a full-page PNG of `page` as ``<directory>/<name>.png`` (default: the
    repository's docs/web/, shown by the documentation); returns its path."""
    directory = DOCS_WEB if directory is None else Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / (name if name.endswith(".png") else f"{name}.png")
    page.screenshot(path=str(path), full_page=True, animations="disabled",
                    timeout=DEFAULT_TIMEOUT_MS)
    return path
