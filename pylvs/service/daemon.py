"""Daemon start-up that tells the truth: the command returns only once the daemon runs,
with its exit code and its reason on stderr when it does not.

``daemonize()`` forks twice as a classic daemon does, but the first parent stays until
the daemon says ``READY`` (or ``EXIT n``) on a pipe, or dies: ``pylvs lvs -c broken.cf``
then exits 4 with the located errors on the terminal instead of 0 with a dead PID file.
Until it is ready the daemon keeps the terminal's stderr, so its start-up log lines are
seen; at ``READY`` it lets go of the terminal (``detach_output``).
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

EXIT_FAILURE = 1


def daemonize(what: str) -> int:
    """Fork into the background.  Returns, in the daemon, the descriptor to give
    ``Notifier(ready_fd=...)``; the calling process exits with the daemon's start result."""
    r, w = os.pipe()
    if os.fork():
        os.close(w)
        os._exit(_wait_ready(r, what))
    os.close(r)
    os.setsid()
    if os.fork():
        os._exit(0)
    os.chdir("/")  # paths were made absolute before: nothing depends on the cwd
    fd = os.open(os.devnull, os.O_RDONLY)
    os.dup2(fd, 0)
    os.close(fd)
    return w


def _wait_ready(r: int, what: str) -> int:
    data = b""
    while chunk := _read(r):
        data += chunk
    line = data.decode(errors="replace").strip()
    if line == "READY":
        return 0
    if line.startswith("EXIT "):
        with contextlib.suppress(ValueError):
            return int(line.split()[1])
    print(f"{what}: the daemon exited during start-up (see the log above)", file=sys.stderr)
    return EXIT_FAILURE


def _read(fd: int) -> bytes:
    while True:
        try:
            return os.read(fd, 4096)
        except InterruptedError:
            continue


def detach_output() -> None:
    """The daemon is running: stdout and stderr go to /dev/null (the log has it all)."""
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(os.devnull, os.O_WRONLY)
    for n in (1, 2):
        os.dup2(fd, n)
    os.close(fd)


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` at once: a reader sees the old file or the new one,
    never half of one (PID files, the status files read every second)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_pidfile(path: Path) -> None:
    """Once running."""
    write_atomic(path, f"{os.getpid()}\n")


def remove_pidfile(path: Path) -> None:
    """On exit; only our own (a successor's file is left alone)."""
    with contextlib.suppress(OSError, ValueError):
        if int(path.read_text().split()[0]) == os.getpid():
            path.unlink()
