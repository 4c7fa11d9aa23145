"""`pylvs lab up / list / down` end to end: the lab outlives the `up` command, `list`
shows it, `down` removes exactly what the record names."""

from __future__ import annotations

import importlib
import json
import secrets
import subprocess
import sys

import pytest

from pylvs.lab import netns, state

CLI_TIMEOUT = 60.0


def _cli(*args: str, module: str = "pylvs.cli.lab") -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", module]
    if module == "pylvs.cli.main":
        argv.append("lab")
    return subprocess.run(argv + list(args), capture_output=True, text=True,
                          timeout=CLI_TIMEOUT, check=False)


def _up_list_down(module: str) -> None:
    name = "plt" + secrets.token_hex(3)
    up = _cli("up", "nat", "-n", "2", "--name", name, module=module)
    try:
        assert up.returncode == 0, up.stderr
        assert f"ip netns exec {name}-rs1" in up.stdout or f"{name}-rs1" in up.stdout
        assert "10.77.2.254" in up.stdout  # the NAT router, the real servers' gateway
        rec = state.read(name)
        assert rec is not None and rec.persistent
        assert all(map(netns.netns_exists, rec.netns))
        pids = [p.pid for p in rec.processes]
        assert len(pids) == 2 and all(map(netns.pid_running, pids))  # outlived `up`

        # The lab works after its creator exited: the director reaches both servers.
        for rs, body in ((f"{name}-rs1", "rs1"), (f"{name}-rs2", "rs2")):
            rip = rec.summary["hosts"][body]["interfaces"]["eth0"]["address"]
            code = (f"import urllib.request as u;"
                    f"print(u.urlopen('http://{rip}/', timeout=3).read().decode(), end='')")
            got = subprocess.run(
                netns.exec_argv(f"{name}-dir1", [sys.executable, "-c", code]),
                capture_output=True, text=True, timeout=CLI_TIMEOUT, check=False)
            assert got.stdout == f"{body}\n", (rs, got.stderr)

        listed = _cli("list", module=module)
        assert listed.returncode == 0
        line = next(ln for ln in listed.stdout.splitlines() if ln.startswith(name))
        assert "nat" in line and " up" in line
        as_json = json.loads(_cli("list", "--json", module=module).stdout)
        assert any(item["name"] == name for item in as_json)

        down = _cli("down", name, module=module)
        assert down.returncode == 0, down.stderr
        assert not any(map(netns.netns_exists, rec.netns))
        assert not any(map(netns.pid_running, pids))
        assert state.read(name) is None
        assert name not in _cli("list", module=module).stdout
    finally:
        rec = state.read(name)
        if rec is not None:
            state.teardown(rec)


def test_cli_up_list_down(netns_support):
    _up_list_down("pylvs.cli.lab")


def test_cli_through_pylvs_main(netns_support):
    try:
        importlib.import_module("pylvs.cli.main")
    except ImportError as exc:
        pytest.skip(f"pylvs.cli.main does not import yet: {exc}")
    _up_list_down("pylvs.cli.main")


def test_cli_errors(netns_support):
    assert _cli("down", "nosuchlab").returncode == 1
    assert _cli("down").returncode == 2  # neither NAME nor --all
    bad = _cli("up", "nat", "--name", "Bad_Name")
    assert bad.returncode == 1 and "lab name" in bad.stderr
