"""Fixtures for tests that build real topologies in network namespaces (pylvs.lab).

* ``make_lab(kind, real_servers=3, directors=1, **kwargs)``: a fresh lab for this test,
  removed after it (also when the test fails).
* ``shared_lab(kind, real_servers=3, directors=1, **kwargs)``: one lab per parameter set
  for the whole session, for tests that only look and send probes (faster).

Both skip with the precise reason when not root or when namespaces / veth cannot be
created here (tried once per session).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pylvs.lab import Lab, build_lab, netns
from pylvs.lab.director import LabDirector

HERE = Path(__file__).parent
SETUP_ERRORS = (OSError, RuntimeError, subprocess.SubprocessError)  # what a failed probe raises


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.netns)


def _netns_unsupported() -> str | None:
    """None if we can build labs here, else why not."""
    if os.geteuid() != 0:
        return f"needs root to create network namespaces (euid {os.geteuid()})"
    if not shutil.which("ip"):
        return "iproute2 'ip' command not found"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun missing (tunnel labs need TUN)"
    a, b = (f"plprobe{secrets.token_hex(2)}{s}" for s in "ab")
    try:
        try:
            netns.add_netns(a)
            netns.add_netns(b)
        except SETUP_ERRORS as exc:
            return f"cannot create network namespaces: {exc}"
        try:
            netns.veth(a, "p0", b, "p1")
        except SETUP_ERRORS as exc:
            return f"cannot create veth pairs between namespaces: {exc}"
        try:
            netns.ip(a, "link", "add", "br0", "type", "bridge")
        except SETUP_ERRORS as exc:
            return f"cannot create bridges in a namespace: {exc}"
    finally:
        for ns in (a, b):
            with contextlib.suppress(*SETUP_ERRORS):
                netns.del_netns(ns)
    return None


@pytest.fixture(scope="session")
def netns_support() -> None:
    reason = _netns_unsupported()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def make_lab(netns_support: None) -> Iterator[Callable[..., Lab]]:
    labs: list[Lab] = []

    def make(kind: str, real_servers: int = 3, directors: int = 1, **kwargs: object) -> Lab:
        lab = build_lab(kind, real_servers, directors, **kwargs)
        labs.append(lab)
        return lab

    yield make
    for lab in labs:
        lab.destroy()


@pytest.fixture(scope="session")
def shared_lab(netns_support: None) -> Iterator[Callable[..., Lab]]:
    labs: dict[tuple, Lab] = {}

    def get(kind: str, real_servers: int = 3, directors: int = 1, **kwargs: object) -> Lab:
        key = (kind, real_servers, directors, tuple(sorted(kwargs.items())))
        if key not in labs:
            labs[key] = build_lab(kind, real_servers, directors, **kwargs)
        return labs[key]

    yield get
    for lab in labs.values():
        lab.destroy()


@pytest.fixture
def director(tmp_path) -> Iterator[Callable[..., LabDirector]]:
    """``director(lab, text)``: ``pylvs lvs`` in the lab's dir1 from this lvs.cf text,
    stopped after the test (a test file may define its own, with more options)."""
    running: list[LabDirector] = []

    def start(lab: Lab, text: str) -> LabDirector:
        d = LabDirector(lab, tmp_path / "lvs", text)
        running.append(d)
        return d

    yield start
    for d in running:
        d.stop()
