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
import time
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


def curl_put(lab, mode: str, src: Path, name: str) -> str:
    """Upload `src` as incoming/`name` in `mode`; returns the server named in the banner."""
    r = lab.run("client1", ["curl", "-sS", "-v", "--max-time", "20", *MODES[mode], "-T", str(src),
                            f"ftp://{topo.VIP}/incoming/{name}"], timeout=30, check=False)  # fmt: skip
    assert r.returncode == 0, f"{mode} upload: curl exit {r.returncode}\n{r.stderr[-3000:]}"
    m = re.search(BANNER.format(name=r"(\w+)"), r.stderr)
    assert m, r.stderr[-2000:]
    return m.group(1)


def test_the_ftp_helper_serves_a_plain_port_21_nat_service(make_lab, tmp_path, vsftpd_available):
    """No firewall mark, no pasv_address, no persistence, no MASQUERADE: the helper rewrites
    the 227 (10,77,2,1x -> 10,77,1,100: one byte longer, so every later reply on the control
    connection moves), files the data connections in advance under the control
    connection's server, and translates the active ones from port 20 to the VIP."""
    lab = make_lab("nat", real_servers=2)
    digests = start_vsftpd(lab, tmp_path, pasv_address=None)
    text = lvs_cf(lab, [Service(name="ftp", port=FTP_PORT, scheduler="rr", expect="220")])
    d = LabDirector(lab, tmp_path / "lvs", text)
    try:
        d.wait_for(lambda s: sum(len(v["dests"]) for v in s["services"]) == 2, 30, "both servers in")
        servers = set()
        for mode in MODES:
            for _ in range(2):  # rr: both servers, control and data each time on one of them
                out = tmp_path / f"got-{mode}.bin"
                server, transcript = curl_get(lab, mode, out)
                servers.add(server)
                assert hashlib.sha256(out.read_bytes()).hexdigest() == digests[server], mode
                if mode == "PASV":  # the client was told the VIP, and the reply grew by a byte
                    assert re.search(r"< 227 Entering Passive Mode \(10,77,1,100,\d+,\d+\)", transcript), transcript
        assert servers == set(digests)
        up = tmp_path / "upload.bin"
        up.write_bytes(os.urandom(FILE_SIZE // 2 + 7))
        for mode in ("PASV", "PORT"):
            server = curl_put(lab, mode, up, f"up-{mode}.bin")
            landed = tmp_path / f"ftp-{server}" / "incoming" / f"up-{mode}.bin"
            assert landed.read_bytes() == up.read_bytes(), mode
    finally:
        d.stop()


# The takeover: two routers with pulse and connection sync (as tests/netns/test_takeover.py).
FAST = "keepalive = 0.2\ndeadtime = 0.6\ngarp_count = 3\ngarp_interval = 0.3\ngarp_refresh = 1\n"
SYNC = "syncdaemon = 1\nsyncd_iface = eth1\nsyncd_id = 7\n"
RATE = "40k"  # bytes/s: 1 MiB takes about 25 s, long enough to take over in the middle


def test_a_takeover_in_the_middle_of_a_passive_download(make_lab, tmp_path, vsftpd_available):
    """The 227 has been rewritten (the control connection carries a sequence adjustment)
    and the data is flowing when the active router's pulse is stopped: the backup, which
    has both connections from connection sync (the control one with its SEQ_DATA), takes
    over and the download completes, whole."""
    from pylvs.lab.director import LabPulse

    lab = make_lab("nat", real_servers=2, directors=2)
    digests = start_vsftpd(lab, tmp_path, pasv_address=None)
    text = lvs_cf(lab, [Service(name="ftp", port=FTP_PORT, scheduler="rr", expect="220")], backup=True,
                  extra_globals=FAST + SYNC)  # fmt: skip
    routers = [LabPulse(lab, tmp_path, text, host=h) for h in ("dir1", "dir2")]
    try:
        routers[0].wait_for(lambda s: s["state"] == "active" and s["director"]["role"] == "active", 30, "active")
        routers[1].wait_for(lambda s: s["state"] == "standby" and s["director"]["role"] == "standby", 30, "standby")
        out = tmp_path / "got.bin"
        log = tmp_path / "curl.log"
        with log.open("w") as err:
            curl = lab.popen("client1", ["curl", "-sS", "-v", "--max-time", "90", "--disable-epsv", "--limit-rate",
                                         RATE, f"ftp://{topo.VIP}/{FILE}", "-o", str(out)],
                             what="curl", stdout=subprocess.DEVNULL, stderr=err)  # fmt: skip

        def synced() -> int:  # the standby's table starts empty: only synced entries
            try:
                return routers[1].lvs_control({"cmd": "status"})["status"]["connections"]
            except (OSError, ValueError, KeyError):
                return 0

        deadline = time.monotonic() + 30
        while (synced() < 2 or not out.exists() or out.stat().st_size < FILE_SIZE // 8) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert synced() >= 2, "the control and data connections never reached dir2"
        got = out.stat().st_size
        assert 0 < got < FILE_SIZE, f"not in the middle of the download: {got} bytes"
        assert routers[0].stop() == 0  # the takeover
        routers[1].wait_for(lambda s: s["state"] == "active" and s["director"]["role"] == "active", 30, "takeover")
        code = curl.wait(timeout=120)
        transcript = log.read_text()
        assert code == 0, transcript[-3000:]
        assert re.search(r"< 227 Entering Passive Mode \(10,77,1,100,", transcript), transcript[-3000:]
        assert "< 226" in transcript, transcript[-3000:]  # the reply after the takeover, seq-adjusted
        server = re.search(BANNER.format(name=r"(\w+)"), transcript).group(1)
        assert hashlib.sha256(out.read_bytes()).hexdigest() == digests[server]
    finally:
        for p in routers:
            p.stop()
