"""Where a daemon role keeps its runtime files: ``<runtime dir>/<role>.pid``,
``<role>.status.json``, ``<role>.ctl`` and (``--web-group``) ``<role>.web.ctl``.

The runtime directory is ``/run/pylvs`` in the host's own network namespace and
``/run/pylvs/<name>`` inside a namespace named by ``ip netns`` (keepalived's
``/run/keepalived/<namespace>/`` habit), so the routers of a lab on one host, or two roles
on one box, never share a file; ``--runtime-dir`` moves them all at once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

RUN_ROOT = Path("/run/pylvs")
NETNS_RUN = Path("/run/netns")  # where `ip netns add` bind-mounts the namespaces it names
OWN_NETNS = "/proc/self/ns/net"
ROLES = ("lvs", "pulse", "web")


def netns_name() -> str | None:
    """The `ip netns` name of the namespace this process runs in; None in the host's own
    (or an unnamed) namespace.  Where several names bind one namespace, the first sorted."""
    try:
        own = os.stat(OWN_NETNS)
        names = sorted(os.listdir(NETNS_RUN))
    except OSError:
        return None
    for name in names:
        try:
            st = os.stat(NETNS_RUN / name)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino):
            return name
    return None


def default_runtime_dir() -> Path:
    name = netns_name()
    return RUN_ROOT / name if name else RUN_ROOT


@dataclass(frozen=True)
class RuntimePaths:
    """The runtime files of every role under one directory."""

    dir: Path

    @classmethod
    def resolve(cls, runtime_dir: str | os.PathLike[str] | None = None) -> RuntimePaths:
        """``--runtime-dir`` made absolute, or the namespace's default."""
        return cls(Path(runtime_dir).absolute() if runtime_dir else default_runtime_dir())

    def pidfile(self, role: str) -> Path:
        return self.dir / f"{role}.pid"

    def status(self, role: str) -> Path:
        return self.dir / f"{role}.status.json"

    def control(self, role: str) -> Path:
        return self.dir / f"{role}.ctl"

    def web_control(self, role: str) -> Path:
        """The socket the web tool's group may use (``pylvs.control.WEB_VERBS``)."""
        return self.dir / f"{role}.web.ctl"
