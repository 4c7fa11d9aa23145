"""`make install-files DESTDIR=...`: the units, the man pages (gzipped), /etc/default/pylvs
and the example lvs.cf land where docs/service.md says, an operator's files are never
overwritten, and nothing runs systemctl.

The full `make install` (a virtual environment with numba, the numba cache compiled:
about 1.5 minutes with a local wheel mirror) is not run here; `make -n install` shows
what it would do, and docs/service.md says how it was tried.
"""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pylvs import manpages

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def make(target: str, destdir: Path, *extra: str, dry_run: bool = False) -> subprocess.CompletedProcess[str]:
    argv = ["make", "-s", "-C", str(ROOT), *(["-n"] if dry_run else []), target, f"DESTDIR={destdir}",
            f"MANPAGE_PYTHON={sys.executable}", *extra]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    return run


@pytest.fixture(scope="module")
def staged(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("destdir")
    make("install-files", root)
    return root


def test_layout(staged):
    files = {str(p.relative_to(staged)) for p in staged.rglob("*") if p.is_file()}
    assert {
        "lib/systemd/system/pylvs-pulse.service",
        "lib/systemd/system/pylvs-lvs.service",
        "etc/default/pylvs",
        "etc/sysconfig/ha/lvs.cf",
        "usr/share/man/man8/pylvs.8.gz",
        "usr/share/man/man5/lvs.cf.5.gz",
        "usr/share/doc/pylvs/examples/lvs.cf.nat-wlc",
    } <= files
    for unit in ("pylvs-pulse.service", "pylvs-lvs.service"):
        installed = staged / "lib/systemd/system" / unit
        assert installed.read_text() == (ROOT / "systemd" / unit).read_text()
        assert installed.stat().st_mode & 0o777 == 0o644
    assert (staged / "etc/default/pylvs").read_text() == (ROOT / "systemd/pylvs.default").read_text()
    assert (staged / "etc/sysconfig/ha/lvs.cf").read_text() == (ROOT / "examples/lvs.cf.nat-wlc").read_text()
    assert not (staged / "opt").exists()  # install-files leaves the environment to install


def test_man_pages_are_the_generated_ones_gzipped(staged):
    expected = manpages.pages()
    found = {p.name.removesuffix(".gz"): p for p in (staged / "usr/share/man").rglob("*.gz")}
    assert set(found) == set(expected)
    for name, path in found.items():
        assert path.parent.name == f"man{name.rsplit('.', 1)[1]}"
        raw = path.read_bytes()
        assert raw[4:8] == b"\0\0\0\0"  # gzip -n: no time stamp, reproducible
        assert gzip.decompress(raw).decode() == expected[name]


def test_existing_configuration_is_never_overwritten(tmp_path):
    (tmp_path / "etc/default").mkdir(parents=True)
    (tmp_path / "etc/sysconfig/ha").mkdir(parents=True)
    (tmp_path / "etc/default/pylvs").write_text("LVS_CF=/srv/mine.cf\n")
    (tmp_path / "etc/sysconfig/ha/lvs.cf").write_text("# the operator's\n")
    make("install-files", tmp_path)
    make("install-files", tmp_path)  # and twice in a row is fine
    assert (tmp_path / "etc/default/pylvs").read_text() == "LVS_CF=/srv/mine.cf\n"
    assert (tmp_path / "etc/sysconfig/ha/lvs.cf").read_text() == "# the operator's\n"


def test_other_directories_are_written_into_the_units(tmp_path):
    make("install-files", tmp_path, "SBINDIR=/usr/local/sbin", "SYSCONFDIR=/usr/local/etc",
         "UNITDIR=/usr/lib/systemd/system")
    text = (tmp_path / "usr/lib/systemd/system/pylvs-lvs.service").read_text()
    assert "ExecStart=/usr/local/sbin/pylvs lvs" in text and "/usr/sbin/" not in text
    assert "EnvironmentFile=-/usr/local/etc/default/pylvs" in text
    assert "LVS_CF=/usr/local/etc/sysconfig/ha/lvs.cf" in text
    assert (tmp_path / "usr/local/etc/default/pylvs").is_file()


def test_full_install_plan(tmp_path):
    """`make -n install`: what the full install would run (nothing is run, nothing built)."""
    dest = tmp_path / "stage"
    out = make("install", dest, "PREFIX=/opt/pylvs", dry_run=True).stdout
    for ln in out.splitlines():
        if re.search(r"(^|[\s;&|(])systemctl\s", ln):
            assert ln.lstrip().startswith("echo"), ln  # only the advice printed at the end
    assert f"-m venv {dest}/opt/pylvs" in out
    assert f's|{dest}/opt/pylvs|/opt/pylvs|g' in out  # dh-virtualenv's rewrite of the paths
    assert f"ln -sfn /opt/pylvs/bin/pylvs {dest}/usr/sbin/pylvs" in out
    assert f"ln -sfn /opt/pylvs/bin/pylvsadm {dest}/usr/sbin/pylvsadm" in out  # the ipvsadm command
    assert "-m pylvs.precompile" in out
    assert not dest.exists()
