"""FTP through a NAT director with real vsftpd on the real servers and curl on the client.

The RHEL 5 guide's recipe (section 3.5, docs/ftp.md): a firewall-mark-21 virtual server
with persistence, the operator's MARK rules for port 21 and the passive range
10000:20000, vsftpd with ``pasv_min_port``/``pasv_max_port`` and ``pasv_address`` = VIP,
and ``MASQUERADE`` for the active-mode data connections the real servers open from port
20.  All four transfer modes of curl (EPSV, PASV, EPRT, PORT) download a 1 MiB file; each
real server holds a different file and names itself in its banner, so the sha256 of what
arrived says which server sent the data, and the banner which one held the control
connection: persistence keeps them one.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pylvs.lab import topology as topo
from pylvs.lab.director import LabDirector
from pylvs.lab.lvscf import Service, lvs_cf

FTP_PORT = 21
PASV_RANGE = (10000, 20000)  # the guide's pasv_min_port / pasv_max_port
FILE = "data.bin"
FILE_SIZE = 1 << 20
FTP_MARK = 21
# curl's four ways to move data: passive (EPSV, PASV) and active (EPRT, PORT).
MODES = {
    "EPSV": [],
    "PASV": ["--disable-epsv"],
    "EPRT": ["-P", "-"],
    "PORT": ["-P", "-", "--disable-eprt"],
}
BANNER = "pylvs-lab ftp on {name}"


def vsftpd_conf(root: Path, empty: Path, rip: str, name: str, pasv_address: str | None) -> str:
    lines = [
        "listen=YES", "listen_ipv6=NO", f"listen_address={rip}", "background=NO",
        "anonymous_enable=YES", "local_enable=NO", "no_anon_password=YES", f"anon_root={root}",
        "write_enable=YES", "anon_upload_enable=YES", "anon_umask=022",
        "connect_from_port_20=YES", "pasv_enable=YES",
        f"pasv_min_port={PASV_RANGE[0]}", f"pasv_max_port={PASV_RANGE[1]}",
        f"ftpd_banner={BANNER.format(name=name)}",
        # a namespace lab: no seccomp or namespace sandbox of vsftpd's own, our empty dir
        "seccomp_sandbox=NO", "isolate=NO", "isolate_network=NO", f"secure_chroot_dir={empty}",
        "xferlog_enable=NO", "idle_session_timeout=30", "data_connection_timeout=30",
    ]  # fmt: skip
    if pasv_address:
        lines.append(f"pasv_address={pasv_address}")
    return "\n".join(lines) + "\n"


def start_vsftpd(lab, tmp_path: Path, *, pasv_address: str | None) -> dict[str, str]:
    """vsftpd on every real server, each serving its own 1 MiB file (and an upload
    directory); returns server name -> sha256 of its file."""
    empty = tmp_path / "vsftpd-empty"
    empty.mkdir(mode=0o755)
    digests = {}
    for rs in lab.real_servers:
        root = tmp_path / f"ftp-{rs.name}"
        (root / "incoming").mkdir(parents=True)
        root.chmod(0o755)  # vsftpd refuses a root it could write to
        os.chown(root / "incoming", pwd.getpwnam("ftp").pw_uid, -1)  # anonymous uploads land here
        data = os.urandom(FILE_SIZE)
        (root / FILE).write_bytes(data)
        (root / FILE).chmod(0o644)
        digests[rs.name] = hashlib.sha256(data).hexdigest()
        conf = tmp_path / f"vsftpd-{rs.name}.conf"
        conf.write_text(vsftpd_conf(root, empty, rs.ip(), rs.name, pasv_address))
        lab.popen(rs, ["vsftpd", str(conf)], what=f"vsftpd on {rs.name}",
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    return digests


def curl_get(lab, mode: str, out: Path, port: int = FTP_PORT) -> tuple[str, str]:
    """Download the file in `mode` from the client; (the banner's server, the transcript)."""
    r = lab.run("client1", ["curl", "-sS", "-v", "--max-time", "20", *MODES[mode],
                            f"ftp://{topo.VIP}:{port}/{FILE}", "-o", str(out)], timeout=30, check=False)  # fmt: skip
    assert r.returncode == 0, f"{mode}: curl exit {r.returncode}\n{r.stderr[-3000:]}"
    m = re.search(BANNER.format(name=r"(\w+)"), r.stderr)
    assert m, r.stderr[-2000:]
    command = {"EPSV": "EPSV", "PASV": "PASV", "EPRT": "EPRT", "PORT": "PORT "}[mode]
    assert f"> {command}" in r.stderr, f"{mode}: curl did not use it\n{r.stderr[-2000:]}"
    return m.group(1), r.stderr


@pytest.fixture
def vsftpd_available() -> None:
    if shutil.which("vsftpd", path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
        pytest.skip("vsftpd is not installed (make deps installs it)")
    try:
        pwd.getpwnam("ftp")  # the package's anonymous user
    except KeyError:
        pytest.skip("vsftpd's user 'ftp' is missing (reinstall the vsftpd package)")


def test_the_guides_nat_ftp_recipe_in_all_four_modes(make_lab, tmp_path, vsftpd_available):
    lab = make_lab("nat", real_servers=2)
    digests = start_vsftpd(lab, tmp_path, pasv_address=topo.VIP)
    # The guide's packet-filter rules (docs/ftp.md), on the director.
    vip = f"{topo.VIP}/32"
    for ports in (str(FTP_PORT), f"{PASV_RANGE[0]}:{PASV_RANGE[1]}"):
        lab.run("dir1", ["iptables", "-t", "mangle", "-A", "PREROUTING", "-p", "tcp", "-d", vip, "--dport", ports,
                         "-j", "MARK", "--set-mark", str(FTP_MARK)])  # fmt: skip
    lab.run("dir1", ["iptables", "-t", "nat", "-A", "POSTROUTING", "-p", "tcp", "-s",
                     topo.SEGMENT_NETS[topo.PRIVATE], "--sport", "20", "-j", "MASQUERADE"])  # fmt: skip
    text = lvs_cf(lab, [Service(name="ftp", port=FTP_PORT, scheduler="rr", fwmark=FTP_MARK, persistent=600,
                                send=None, expect="220")])  # fmt: skip
    d = LabDirector(lab, tmp_path / "lvs", text, io="nfq-loop")  # marks are netfilter's: not afxdp
    try:
        d.wait_for(lambda s: sum(len(v["dests"]) for v in s["services"]) == 2, 30, "both servers in")
        for mode in MODES:
            out = tmp_path / f"got-{mode}.bin"
            server, transcript = curl_get(lab, mode, out)
            got = hashlib.sha256(out.read_bytes()).hexdigest()
            assert out.stat().st_size == FILE_SIZE, mode
            # persistence: the data came from the server that held the control connection
            assert got == digests[server], f"{mode}: control on {server}, data from another server"
        masq = lab.run("dir1", ["iptables", "-t", "nat", "-L", "POSTROUTING", "-v", "-n", "-x"]).stdout
        line = next(ln for ln in masq.splitlines() if "MASQUERADE" in ln)
        assert int(line.split()[0]) >= 2, masq  # the two active-mode data connections, from port 20
    finally:
        d.stop()
