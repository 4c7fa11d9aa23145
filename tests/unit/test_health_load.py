"""pylvs.health.load: nanny's load command (-U) and its parser (reference 4.1, 4.6)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from ipaddress import IPv4Address

import pytest

from pylvs.config.model import Config, VirtualServer
from pylvs.health.load import load_argv, parse_load, sample_load

# Captured output of the tools nanny parses.
UPTIME = " 15:01:27 up 3 days,  2:03,  1 user,  load average: 0.12, 0.08, 0.05\n"
UPTIME_BUSYBOX = " 15:01:27 up 3 days,  2:03,  load average: 2.50, 1.08, 0.95\n"
RUP = "web1          up  3 days,  2:03,     load average: 1.75, 0.08, 0.05\n"
RUPTIME = "web1          up   3+02:03,     1 user,  load 0.40, 0.31, 0.25\n"


@pytest.mark.parametrize(("text", "load"), [
    (UPTIME, 0.12), (UPTIME_BUSYBOX, 2.5), (RUP, 1.75), (RUPTIME, 0.40),
    (UPTIME.encode(), 0.12),
    ("load average: 0.12", None),   # nanny: the number must be followed by ',' or ' '
    ("load average: x.y, 1", None),
    ("no such host\n", None),
    ("", None),
])
def test_parse_load(text, load):
    assert parse_load(text) == load


def _v(lm):
    return VirtualServer(name="www", load_monitor=lm)


def test_load_argv():
    c = Config(primary=IPv4Address("192.0.2.2"))
    assert load_argv(c, _v(None), "10.0.0.2") is None
    assert load_argv(c, _v("none"), "10.0.0.2") is None
    assert load_argv(c, _v("uptime"), "10.0.0.2") == ["rsh", "10.0.0.2", "uptime"]
    ssh = Config(primary=IPv4Address("192.0.2.2"), rsh_command="ssh -o BatchMode=yes")
    assert load_argv(ssh, _v("uptime"), "10.0.0.2") == ["ssh", "-o", "BatchMode=yes", "10.0.0.2", "uptime"]
    assert load_argv(c, _v("rup"), "10.0.0.2", which=lambda n: None) is None  # not installed
    assert load_argv(c, _v("rup"), "10.0.0.2", which=lambda n: "/usr/bin/rup") == ["rup", "10.0.0.2"]
    assert load_argv(c, _v("ruptime"), "10.0.0.2", which=lambda n: "/x") == ["ruptime", "10.0.0.2"]


def _py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_sample_load_runs_the_command():
    assert asyncio.run(sample_load(_py(f"print({UPTIME!r})"), 5)) == 0.12


def test_sample_load_failures_are_none():
    assert asyncio.run(sample_load(_py(f"import sys; print({UPTIME!r}); sys.exit(1)"), 5)) is None
    assert asyncio.run(sample_load(["/nonexistent/pylvs-load"], 5)) is None
    # a hanging command is killed at the time limit (bounded: 0.5 s)
    assert asyncio.run(sample_load(_py("import time; time.sleep(30)"), 0.5)) is None


@pytest.mark.parametrize("tool", ["rup", "ruptime"])
def test_real_tool_output_parses(tool):
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (its output is covered by test_parse_load)")
    out = subprocess.run([path, "localhost"], capture_output=True, text=True, timeout=10, check=False).stdout
    if "load" not in out:
        pytest.skip(f"{tool} localhost printed no load line (no rstatd/rwhod running): {out!r}")
    assert parse_load(out) is not None
