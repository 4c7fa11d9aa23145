"""Logging where the operator looks (anchors B4):

* under systemd (stderr is the journal's stream: ``$JOURNAL_STREAM``), one line per event
  on stderr with a ``<N>`` syslog priority prefix, so journald keeps the levels
  (sd-daemon(3)); nothing else, or journald would store each line twice;
* in the foreground otherwise, timestamped lines on stderr;
* syslog (``/dev/log``, facility daemon) whenever it exists and systemd is not taking
  stderr, as piranha's daemons did;
* ``--logfile PATH`` in addition (reopened when logrotate moves it).  A daemon with
  neither syslog nor a log file writes to ``FALLBACK_LOG_DIR/<role>.log`` and says so on
  the terminal before it detaches: a line is never lost.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from pathlib import Path

# Where syslog listens; PYLVS_SYSLOG_SOCKET moves it (a chrooted rsyslog, a test's socket).
SYSLOG_SOCKET = os.environ.get("PYLVS_SYSLOG_SOCKET", "/dev/log")
FALLBACK_LOG_DIR = Path("/var/log/pylvs")
# sd-daemon(3)'s SD_ERR .. SD_DEBUG: the syslog(3) priorities
PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}


class JournalFormatter(logging.Formatter):
    """``<N>message``: journald reads the priority, and adds time and PID itself."""

    def format(self, record: logging.LogRecord) -> str:
        prio = PRIORITY.get(record.levelno, 6 if record.levelno > logging.DEBUG else 7)
        text = super().format(record)
        return "\n".join(f"<{prio}>{line}" for line in text.splitlines())


def under_journal(env=None, stream=None) -> bool:
    """stderr is the journal's stream (systemd.exec(5): JOURNAL_STREAM=DEV:INODE)."""
    env = os.environ if env is None else env
    value = env.get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(x) for x in value.split(":"))
        st = os.fstat((stream or sys.stderr).fileno())
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


class Logs:
    """The handlers of one daemon; ``detach()`` drops the terminal at READY."""

    def __init__(self, role: str, *, verbose: bool = False, foreground: bool = True,
                 logfile: str | None = None, ident: str | None = None) -> None:  # fmt: skip
        self.role = role
        ident = ident or role
        self.root = logging.getLogger("pylvs")
        self.root.setLevel(logging.DEBUG if verbose else logging.INFO)
        self.terminal: logging.Handler | None = None
        self.destinations: list[str] = []
        journal = foreground and under_journal()  # a daemon lets go of stderr at READY: syslog instead
        h = logging.StreamHandler(sys.stderr)
        if journal:
            h.setFormatter(JournalFormatter("%(message)s"))
            self.destinations.append("journal")
        else:
            h.setFormatter(logging.Formatter(f"%(asctime)s {ident}[%(process)d]: %(message)s"))
            self.destinations.append("stderr")
        self._add(h)
        if not foreground:
            self.terminal = h  # until the daemon is ready: start-up errors reach whoever started it
        if not journal and os.path.exists(SYSLOG_SOCKET):
            s = logging.handlers.SysLogHandler(SYSLOG_SOCKET, facility=logging.handlers.SysLogHandler.LOG_DAEMON)
            s.setFormatter(logging.Formatter(f"{ident}[%(process)d]: %(message)s"))
            self._add(s)
            self.destinations.append("syslog")
        if logfile is None and not foreground and "syslog" not in self.destinations:
            logfile = str(FALLBACK_LOG_DIR / f"{role}.log")
            print(f"pylvs {role}: no syslog ({SYSLOG_SOCKET}) and no --logfile: logging to {logfile}",
                  file=sys.stderr)  # fmt: skip
        self.logfile = logfile
        if logfile:
            Path(logfile).parent.mkdir(parents=True, exist_ok=True)
            f = logging.handlers.WatchedFileHandler(logfile)
            f.setFormatter(logging.Formatter(f"%(asctime)s {ident}[%(process)d]: %(levelname)s %(message)s"))
            self._add(f)
            self.destinations.append(f"file {logfile}")

    def _add(self, h: logging.Handler) -> None:
        self.root.addHandler(h)

    def detach(self) -> None:
        """Stop writing to the terminal (daemon mode, once ready)."""
        if self.terminal is not None:
            self.root.removeHandler(self.terminal)
            self.terminal = None

    def close(self) -> None:
        for h in list(self.root.handlers):
            self.root.removeHandler(h)
            h.close()
