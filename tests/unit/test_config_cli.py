"""`pylvs check`: output and keepalived exit codes, through the real command line."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from pylvs.cli import check as check_cli

ROOT = Path(__file__).parents[2]
GOOD = """\
primary = 192.0.2.2
service = lvs
network = direct
virtual web {
     active = 1
     address = 192.0.2.10 eth0:1
     server a {
         address = 192.0.2.21
         active = 1
     }
}
"""
# main.py imports every sub-command module; pylvs.cli.lab belongs to another engineer.
HAVE_MAIN = importlib.util.find_spec("pylvs.cli.lab") is not None


def run_cli(*args: str, module: str = "pylvs.cli.check") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, "check", *args], check=False, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "lvs.cf"
    path.write_text(text)
    return str(path)


def test_valid_file_exit_0(tmp_path):
    path = write(tmp_path, GOOD)
    proc = run_cli("-c", path)
    assert proc.returncode == 0
    assert proc.stdout == f"Configuration file {path} is valid\n" and proc.stderr == ""


def test_warnings_only_exit_0_and_are_printed(tmp_path):
    path = write(tmp_path, GOOD.replace("network = direct", "network = direct\ndeadtime = 017"))
    proc = run_cli("-c", path)
    assert proc.returncode == 0
    assert f"{path}:4: warning: " in proc.stderr and "is valid" in proc.stdout


def test_errors_exit_4_with_every_error_located(tmp_path):
    path = write(tmp_path, GOOD.replace("network = direct", "network direct\nkeepalive = 2 # s"))
    proc = run_cli("-c", path)
    assert proc.returncode == 4
    lines = [line for line in proc.stderr.splitlines() if ": error: " in line or "not valid" in line]
    assert lines[0] == f'{path}:3: error: equal (=) expected after command "network"'
    assert lines[1].startswith(f"{path}:4: error: unexpected arguments")
    assert lines[-1] == f"Configuration file {path} is not valid: 2 errors"
    assert proc.stdout == ""


def test_adjusted_exit_5(tmp_path):
    path = write(tmp_path, GOOD.replace("service = lvs", "service = lvs\nbackup_active = 1"))
    proc = run_cli("-c", path)
    assert proc.returncode == 5
    assert f"{path}:3: adjusted: backup_active = 1 but backup is not set" in proc.stderr
    assert "is valid" in proc.stdout


def test_missing_file_exit_4(tmp_path):
    proc = run_cli("-c", str(tmp_path / "absent.cf"))
    assert proc.returncode == 4
    assert "I/O error while reading configuration" in proc.stderr


def test_empty_file_exit_4(tmp_path):
    proc = run_cli("-c", write(tmp_path, ""))
    assert proc.returncode == 4 and "Empty configuration" in proc.stderr


def test_fos_exit_4(tmp_path):
    path = write(tmp_path, "primary = 192.0.2.2\nservice = fos\nfailover f {\n active = 1\n}\n")
    proc = run_cli("-c", path)
    assert proc.returncode == 4 and "service = fos" in proc.stderr


def test_dump_prints_normalised_config_on_stdout(tmp_path):
    path = write(tmp_path, GOOD.replace("     server a", "     port = http\n     server a"))
    proc = run_cli("-c", path, "--dump")
    assert proc.returncode == 0
    assert proc.stdout.startswith("serial_no = 0\nprimary = 192.0.2.2\n")
    assert "     port = 80\n" in proc.stdout
    assert "is valid" in proc.stderr
    # the dump checks clean too
    dumped = tmp_path / "dumped.cf"
    dumped.write_text(proc.stdout)
    assert run_cli("-c", str(dumped)).returncode == 0


def test_dump_is_not_printed_for_an_invalid_file(tmp_path):
    proc = run_cli("-c", write(tmp_path, GOOD + "bogus = 1\n"), "--dump")
    assert proc.returncode == 4 and proc.stdout == ""


def test_help_documents_exit_codes():
    proc = run_cli("--help")
    assert proc.returncode == 0
    for text in ("/etc/sysconfig/ha/lvs.cf", "exit status", "  4  ", "  5  ", "--dump"):
        assert text in proc.stdout


def test_in_process_main(tmp_path, capsys):
    path = write(tmp_path, GOOD)
    assert check_cli.main(["check", "-c", path]) == 0
    assert capsys.readouterr().out == f"Configuration file {path} is valid\n"
    assert check_cli.main(["check", "-q", "-c", path]) == 0
    assert capsys.readouterr().out == ""


@pytest.mark.skipif(not HAVE_MAIN, reason="pylvs.cli.main imports pylvs.cli.lab, not written yet")
def test_through_pylvs_main(tmp_path):
    assert run_cli("-c", write(tmp_path, GOOD), module="pylvs.cli.main").returncode == 0
    assert run_cli("-c", write(tmp_path, GOOD + "x\n"), module="pylvs.cli.main").returncode == 4
