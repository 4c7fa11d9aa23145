"""Network-namespace primitives for the lab: `ip` commands inside a namespace, sysctls,
veth pairs created between two lab namespaces, sockets opened inside a namespace, and
processes identified by (PID, start time) so that we only ever end our own.

Everything here acts *inside* a named lab namespace (``ip -n NS ...``, ``ip netns exec
NS ...``); nothing configures the root namespace.  Namespaces are the ones `ip netns add`
creates (a bind mount under /run/netns), so ``ip netns exec`` and people can enter them.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping, Sequence

from pylvs.service.lock import remove_unheld_locks

IP = shutil.which("ip") or "/usr/sbin/ip"
SYSCTL = shutil.which("sysctl") or "/usr/sbin/sysctl"
NETNS_DIR = "/run/netns"  # where `ip netns add` mounts named namespaces

CLONE_NEWNET = 0x40000000  # setns(2) nstype for a network namespace
IFNAMSIZ = 16  # kernel limit incl. the NUL: interface names are at most 15 characters

DEFAULT_TIMEOUT = 10.0  # seconds for one ip/sysctl command; they take milliseconds
TERM_GRACE = 2.0  # seconds between SIGTERM and SIGKILL when ending our processes

_libc = ctypes.CDLL(None, use_errno=True)


class NetnsError(RuntimeError):
    """A namespace command failed; the message holds the command and its stderr."""


def _run(argv: Sequence[str], *, input: str | None = None, check: bool = True,
         timeout: float = DEFAULT_TIMEOUT) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), input=input, capture_output=True, text=True,
                          timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise NetnsError(f"{' '.join(argv)}: exit {proc.returncode}: "
                         f"{(proc.stderr or proc.stdout).strip()}")
    return proc


def check_ifname(name: str) -> str:
    if not 0 < len(name) < IFNAMSIZ or "/" in name or " " in name:
        raise ValueError(f"bad interface name {name!r} (1..{IFNAMSIZ - 1} chars)")
    return name


# --- namespaces -----------------------------------------------------------------------

def list_netns() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def netns_exists(name: str) -> bool:
    return os.path.exists(os.path.join(NETNS_DIR, name))


def add_netns(name: str) -> None:
    if netns_exists(name):
        raise NetnsError(f"namespace {name} already exists")
    _run([IP, "netns", "add", name])


def del_netns(name: str) -> None:
    """Remove a named namespace; a missing one is not an error (cleanup is idempotent)."""
    if netns_exists(name):
        with contextlib.suppress(OSError):  # what daemons killed in it left (pylvs.service.lock)
            remove_unheld_locks(os.path.join(NETNS_DIR, name))
        proc = _run([IP, "netns", "del", name], check=False)
        if proc.returncode != 0 and netns_exists(name):
            raise NetnsError(f"ip netns del {name}: {proc.stderr.strip()}")


def netns_pids(name: str) -> list[int]:
    """PIDs of processes whose network namespace is `name` (for warnings on teardown)."""
    proc = _run([IP, "netns", "pids", name], check=False)
    return [int(p) for p in proc.stdout.split() if p.isdigit()]


def exec_argv(netns: str, argv: Sequence[str]) -> list[str]:
    """The argv that runs `argv` inside `netns` (ip execs it, so the PID is the command's)."""
    return [IP, "netns", "exec", netns, *argv]


# --- configuration inside a namespace ---------------------------------------------------

def ip(netns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``ip -n NETNS ARGS``."""
    return _run([IP, "-n", netns, *args], check=check)


def ip_batch(netns: str, lines: Iterable[str]) -> None:
    """Several ``ip`` commands inside `netns` in one process (``ip -n NS -batch -``)."""
    text = "".join(line.strip() + "\n" for line in lines if line.strip())
    if text:
        _run([IP, "-n", netns, "-batch", "-"], input=text)


def sysctl(netns: str, settings: Mapping[str, int | str], *, optional: bool = False) -> None:
    """Set sysctls inside `netns` in one process.  `optional`: ignore unknown keys (e.g.
    bridge-nf-call-* exist only when br_netfilter is loaded)."""
    if not settings:
        return
    argv = [SYSCTL, "-q", "-w"] + (["-e"] if optional else [])
    argv += [f"{k}={v}" for k, v in settings.items()]
    proc = _run(exec_argv(netns, argv), check=False)
    if proc.returncode != 0 and not optional:
        raise NetnsError(f"sysctl in {netns}: {proc.stderr.strip()}")


def read_sysctl(netns: str, key: str) -> str:
    return _run(exec_argv(netns, [SYSCTL, "-n", key])).stdout.strip()


def veth(ns_a: str, name_a: str, ns_b: str, name_b: str, *,
         mac_a: str | None = None, mac_b: str | None = None, queues: int = 1) -> None:
    """A veth pair with one end in each lab namespace.  The command runs inside `ns_a` and
    the kernel creates the peer directly in `ns_b`: no end ever exists in the root
    namespace.  `queues`: receive and transmit queues of both ends (the sender's transmit
    queue, picked by its flow hash, is the receiver's receive queue)."""
    multi = ["numtxqueues", str(queues), "numrxqueues", str(queues)] if queues > 1 else []
    argv = ["link", "add", check_ifname(name_a), *multi]
    if mac_a:
        argv += ["address", mac_a]
    argv += ["type", "veth", "peer", "name", check_ifname(name_b), *multi]
    if mac_b:
        argv += ["address", mac_b]
    argv += ["netns", ns_b]
    ip(ns_a, *argv)


def link_info(netns: str) -> dict[str, dict]:
    """``ip -j link`` inside `netns`, keyed by interface name."""
    import json

    out = ip(netns, "-j", "link", "show").stdout
    return {link["ifname"]: link for link in json.loads(out or "[]")}


# --- sockets inside a namespace -----------------------------------------------------------

def _setns_current_thread(netns: str) -> None:
    fd = os.open(os.path.join(NETNS_DIR, netns), os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({netns}): {os.strerror(err)}")
    finally:
        os.close(fd)


def socket_in(netns: str, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM,
              proto: int = 0) -> socket.socket:
    """A socket that lives in `netns`, usable from this process.

    A socket belongs to the namespace of the thread that created it, for its whole life.
    A fresh thread joins `netns` (setns only changes that thread), creates the socket and
    ends, so the caller's own namespace never changes."""
    result: dict[str, object] = {}

    def worker() -> None:
        try:
            _setns_current_thread(netns)
            result["sock"] = socket.socket(family, type, proto)
        except BaseException as exc:  # noqa: BLE001 -- re-raised in the caller below
            result["err"] = exc

    thread = threading.Thread(target=worker, name=f"setns-{netns}", daemon=True)
    thread.start()
    thread.join()
    if "err" in result:
        raise result["err"]  # type: ignore[misc]
    return result["sock"]  # type: ignore[return-value]


# --- processes we started -----------------------------------------------------------------

def proc_start_time(pid: int) -> int | None:
    """Start time of `pid` in clock ticks since boot (field 22 of /proc/PID/stat), or None
    if it is gone.  (PID, start time) names one process even after PID reuse."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm (field 2) may hold spaces/parens: fields after the last ')' are fixed.
    rest = data[data.rindex(b")") + 2:].split()
    if rest[0] == b"Z":  # a zombie has finished; only its parent's wait() is missing
        return None
    return int(rest[19])


def is_same_process(pid: int, start_time: int | None) -> bool:
    now = proc_start_time(pid)
    return now is not None and (start_time is None or now == start_time)


def end_process(pid: int, start_time: int | None, *, grace: float = TERM_GRACE,
                popen: subprocess.Popen | None = None) -> None:
    """SIGTERM, then SIGKILL after `grace`, the process (pid, start_time) if it is still
    that process.  Reaps it when we are its parent (`popen`)."""
    if popen is not None and popen.poll() is not None:
        return
    if not is_same_process(pid, start_time):
        if popen is not None:
            popen.poll()
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, grace)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if popen is not None:
                if popen.poll() is not None:
                    return
            elif not is_same_process(pid, start_time):
                return
            time.sleep(0.01)


def pid_running(pid: int) -> bool:
    return proc_start_time(pid) is not None


PR_SET_PDEATHSIG = 1  # prctl: signal sent to us when the thread that forked us ends


def die_with_parent() -> None:
    """preexec_fn for helpers of labs owned by this process: PR_SET_PDEATHSIG, so they end
    even if the owner is SIGKILLed (a single prctl call between fork and exec)."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
