"""systemd/pylvs-pulse.service and pylvs-lvs.service: `systemd-analyze verify` passes on
them as `make install-files` installs them, and they keep the conventions of
docs/service.md (Type=notify, the config check before start and reload, SIGHUP reload,
Restart=on-failure, network-online.target, bounded capabilities).

verify runs with --root on a temporary root holding the installed units, a stand-in
/usr/sbin/pylvs (the virtual environment is what `make install` adds; its
install-files part is what is tested here), /bin/sh, /bin/kill and the host's
targets, since verify looks for every Exec binary and dependency under the root; with
MANPATH pointing at the installed pages it also finds Documentation=man:pylvs(8) and
man:lvs.cf(5).  --recursive-errors=yes makes every warning fail it.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pylvs.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]
UNITS = {"pylvs-pulse.service": "pulse", "pylvs-lvs.service": "lvs"}
UNIT_DIR = "lib/systemd/system"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
HOST_UNIT_DIRS = (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system"))


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Section -> key -> values in order (systemd keeps repeated keys: ExecReload=...)."""
    out: dict[str, dict[str, list[str]]] = {}
    section = None
    for raw in text.splitlines():
        ln = raw.strip()
        if not ln or ln.startswith(("#", ";")):
            continue
        if ln.startswith("["):
            section = out.setdefault(ln.strip("[]"), {})
            continue
        key, _, value = ln.partition("=")
        assert section is not None, raw
        section.setdefault(key.strip(), []).append(value.strip())
    return out


def unit(name: str) -> dict[str, dict[str, list[str]]]:
    return parse_unit((ROOT / "systemd" / name).read_text())


def words(values: list[str]) -> list[str]:
    return [w for v in values for w in v.split()]


@pytest.fixture(scope="module")
def verify_root(tmp_path_factory) -> Path:
    if not shutil.which("make"):
        pytest.skip("make is not installed")
    root = tmp_path_factory.mktemp("root")
    subprocess.run(["make", "-s", "-C", str(ROOT), "install-files", f"DESTDIR={root}",
                    f"MANPAGE_PYTHON={sys.executable}"], check=True, capture_output=True, text=True)
    sbin = root / "usr/sbin"
    sbin.mkdir(parents=True, exist_ok=True)
    stub = sbin / "pylvs"
    stub.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m pylvs \"$@\"\n")
    stub.chmod(0o755)
    (root / "usr/bin").mkdir(parents=True, exist_ok=True)
    (root / "bin").symlink_to("usr/bin")  # merged /usr, as Debian 12
    for tool in ("/bin/sh", "/bin/kill"):
        shutil.copy(os.path.realpath(tool), root / "usr/bin" / Path(tool).name)
    targets = root / "usr/lib/systemd/system"
    targets.mkdir(parents=True, exist_ok=True)
    for host_dir in HOST_UNIT_DIRS:
        for target in host_dir.glob("*.target"):
            if target.is_file() and not (targets / target.name).exists():
                shutil.copy(target, targets / target.name)
    return root


def verify(root: Path, *units: str) -> subprocess.CompletedProcess[str]:
    if SYSTEMD_ANALYZE is None:
        pytest.skip("systemd-analyze is not installed (Debian: systemd): the units cannot be verified")
    env = dict(os.environ)
    args = [SYSTEMD_ANALYZE, "verify", "--recursive-errors=yes", f"--root={root}"]
    if shutil.which("man"):
        env["MANPATH"] = str(root / "usr/share/man")
    else:
        args.append("--man=no")  # without man-db, Documentation= cannot be looked up
    return subprocess.run([*args, *units], capture_output=True, text=True, env=env, timeout=120)


def test_installed_units_verify_clean(verify_root):
    run = verify(verify_root, *UNITS)
    assert run.returncode == 0 and run.stdout + run.stderr == "", run.stdout + run.stderr


def test_verify_would_catch_a_broken_unit(verify_root):
    """The harness is not vacuous: an unknown key and a missing binary fail it."""
    text = (verify_root / UNIT_DIR / "pylvs-lvs.service").read_text()
    text = text.replace("ExecStart=/usr/sbin/pylvs", "ExecStart=/usr/sbin/no-such-pylvs")
    text = text.replace("[Service]\n", "[Service]\nTypo=notify\n")
    (verify_root / UNIT_DIR / "pylvs-broken.service").write_text(text)
    try:
        run = verify(verify_root, "pylvs-broken.service")
    finally:
        (verify_root / UNIT_DIR / "pylvs-broken.service").unlink()
    out = run.stdout + run.stderr
    assert run.returncode != 0
    assert "Typo" in out and "no-such-pylvs" in out, out


@pytest.mark.parametrize("name", sorted(UNITS))
def test_unit_conventions(name):
    u = unit(name)
    role, other = UNITS[name], next(n for n in UNITS if n != name)
    svc, head = u["Service"], u["Unit"]
    assert svc["Type"] == ["notify"] and svc["NotifyAccess"] == ["main"]
    assert svc["Restart"] == ["on-failure"]
    assert "network-online.target" in words(head["After"]) and "network-online.target" in words(head["Wants"])
    assert set(words(head["Documentation"])) >= {"man:pylvs(8)", "man:lvs.cf(5)"}
    assert other in words(head["Conflicts"])
    assert svc["EnvironmentFile"] == ["-/etc/default/pylvs"]
    (pre,) = svc["ExecStartPre"]
    assert "/usr/sbin/pylvs check" in pre and '-c "${LVS_CF}"' in pre
    assert svc["ExecStart"] == [f"/usr/sbin/pylvs {role} --nodaemon -c ${{LVS_CF}} ${role.upper()}_ARGS"]
    assert svc["ExecReload"][-1] == "/bin/kill -HUP $MAINPID"
    assert svc["ExecReload"][:-1] == [pre]  # the same check before each reload
    assert svc["KillMode"] == ["mixed"]
    assert svc["RuntimeDirectory"] == ["pylvs"] and svc["RuntimeDirectoryPreserve"] == ["yes"]
    assert svc["LimitMEMLOCK"] == ["infinity"]
    caps = set(words(svc["CapabilityBoundingSet"]))
    assert {"CAP_NET_ADMIN", "CAP_NET_RAW"} <= caps
    assert "CAP_SYS_MODULE" not in caps
    assert "MemoryDenyWriteExecute" not in svc  # numba writes code at run time
    assert u["Install"]["WantedBy"] == ["multi-user.target"]


@pytest.mark.parametrize("name", sorted(UNITS))
def test_exec_start_is_a_valid_command_line(name):
    """Every option a unit passes exists in the parser (pylvs(8))."""
    svc = unit(name)["Service"]
    env = dict(v.split("=", 1) for e in svc["Environment"] for v in e.split())
    assert env["LVS_CF"] == "/etc/sysconfig/ha/lvs.cf"
    argv = svc["ExecStart"][0].replace("${LVS_CF}", env["LVS_CF"]).split()
    argv = [a for a in argv if not re.fullmatch(r"\$[A-Z_]+", a)]  # empty $*_ARGS vanish
    assert argv[0] == "/usr/sbin/pylvs"
    args = build_parser().parse_args(argv[1:])
    assert args.command == UNITS[name]
    check = shlex.split(svc["ExecStartPre"][0].replace("$$", "$"))
    assert check[:2] == ["/bin/sh", "-c"]
    assert build_parser().parse_args(["check", "-q", "-c", env["LVS_CF"]]).command == "check"


@pytest.mark.parametrize("name", sorted(UNITS))
def test_unit_variables_have_defaults_and_the_default_file_sets_them(name):
    """The units run without /etc/default/pylvs; the example file sets each variable."""
    svc = unit(name)["Service"]
    defaults = {v.split("=", 1)[0] for e in svc["Environment"] for v in e.split()}
    used = set()
    for key in ("ExecStartPre", "ExecStart", "ExecReload"):
        for value in svc[key]:
            used |= set(re.findall(r"(?<!\$)\$\{?([A-Z_]+)\}?", value)) - {"MAINPID"}
    assert used and used <= defaults
    default_file = (ROOT / "systemd/pylvs.default").read_text()
    assigned = set(re.findall(r"^([A-Z_]+)=", default_file, flags=re.M))
    assert used <= assigned


def _start_pre(name: str, cf: Path) -> subprocess.CompletedProcess[str]:
    """The ExecStartPre command as systemd runs it: $$ -> $, ${LVS_CF} expanded; the
    installed /usr/sbin/pylvs replaced by this interpreter's pylvs."""
    cmd = unit(name)["Service"]["ExecStartPre"][0]
    cmd = cmd.replace("$$", "\0").replace("${LVS_CF}", str(cf)).replace("\0", "$")
    argv = shlex.split(cmd)
    argv[-1] = argv[-1].replace("/usr/sbin/pylvs", f"{shlex.quote(sys.executable)} -m pylvs")
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


ADJUSTED = """\
serial_no = 1
primary = 192.0.2.2
service = lvs
backup_active = 1
network = nat
nat_router = 10.11.12.254 eth1:1
virtual www {
     active = 1
     address = 192.0.2.10 eth0:1
     port = 80
     server web1 {
         address = 10.11.12.11
         active = 1
         weight = 1
     }
}
"""


@pytest.mark.parametrize("name", sorted(UNITS))
def test_exec_start_pre_stops_only_on_errors(name, tmp_path):
    good, adjusted, bad = tmp_path / "good.cf", tmp_path / "adjusted.cf", tmp_path / "bad.cf"
    good.write_text((ROOT / "examples/lvs.cf.nat-wlc").read_text())
    adjusted.write_text(ADJUSTED)
    bad.write_text(ADJUSTED.replace("port = 80", "prot = 80"))
    plain = subprocess.run([sys.executable, "-m", "pylvs", "check", "-q", "-c", str(adjusted)],
                           capture_output=True, text=True)
    assert plain.returncode == 5  # pylvs check says "adjusted"; the unit must still start
    assert _start_pre(name, good).returncode == 0
    assert _start_pre(name, adjusted).returncode == 0
    run = _start_pre(name, bad)
    assert run.returncode == 4 and "unknown command" in run.stderr
    assert _start_pre(name, tmp_path / "missing.cf").returncode == 4


PROBE = ("from pylvs.netctl.kernel import detect_capabilities as d; c = d(); "
         "print(','.join(c.missing_for('nfqueue') + c.missing_for('afpacket')) or 'none'); print(c.details)")


@pytest.mark.parametrize("name", sorted(UNITS))
def test_the_capability_set_lets_the_director_probe_and_capture(name):
    """The director probes netfilter in a throw-away namespace before it installs rules:
    under the unit's CapabilityBoundingSet (setpriv, as systemd would set it) nothing the
    NFQUEUE and AF_PACKET captures need may be missing (without CAP_SYS_ADMIN, unshare
    fails and every probe with it)."""
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or not setpriv:
        pytest.skip("needs root and setpriv (util-linux) to run the probe under a bounding set")
    caps = [c.removeprefix("CAP_").lower() for c in words(unit(name)["Service"]["CapabilityBoundingSet"])]
    bounding = "-all," + ",".join(f"+{c}" for c in caps)
    full = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    if full.stdout.split("\n")[0] != "none":
        pytest.skip(f"this kernel lacks a capture mechanism even with every capability: {full.stdout}")
    got = subprocess.run([setpriv, f"--bounding-set={bounding}", "--", sys.executable, "-c", PROBE],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert got.returncode == 0, got.stderr
    assert got.stdout.split("\n")[0] == "none", got.stdout
    # the positive control: one capability fewer, and the probe fails
    without = subprocess.run([setpriv, f"--bounding-set={bounding},-sys_admin", "--", sys.executable, "-c", PROBE],
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert without.stdout.split("\n")[0] != "none", without.stdout


def test_web_unit_verifies_and_runs_the_tool_unprivileged(verify_root):
    """pylvs-web.service: verify passes; ExecStart parses as `pylvs web`; its capabilities
    are only what becoming pylvs-web and binding need, and it may write only lvs.cf's
    directory."""
    run = verify(verify_root, "pylvs-web.service")
    assert run.returncode == 0 and run.stdout + run.stderr == "", run.stdout + run.stderr
    svc = unit("pylvs-web.service")["Service"]
    env = dict(v.split("=", 1) for e in svc["Environment"] for v in e.split())
    argv = [a for a in svc["ExecStart"][0].replace("${LVS_CF}", env["LVS_CF"]).split() if a != "$WEB_ARGS"]
    args = build_parser().parse_args(argv[1:])
    assert args.command == "web" and args.configfile == env["LVS_CF"] and args.user == "pylvs-web"
    assert set(words(svc["CapabilityBoundingSet"])) == {"CAP_SETUID", "CAP_SETGID", "CAP_NET_BIND_SERVICE"}
    assert svc["ProtectSystem"] == ["strict"] and svc["ReadWritePaths"] == ["/etc/sysconfig/ha"]
    assert "WEB_ARGS" in set(re.findall(r"^([A-Z_]+)=", (ROOT / "systemd/pylvs.default").read_text(), flags=re.M))
