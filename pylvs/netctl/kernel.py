"""NetCtl: apply a Plan to the kernel of the current network namespace, and undo it.

The logic (what to install, in which order, what to undo) lives in NetCtl and is shared
with DryRun; the only difference is the System underneath: ``_KernelSystem`` runs
iptables-nft-restore / nft and talks netlink through pyroute2, ``_RecordingSystem``
keeps a small model of the namespace and records every action in ``actions``.

Ownership: our iptables chains start with ``PYLVS-``, our nft table is ``netdev pylvs``
and the addresses we add carry ``IFA_PROTO`` = ADDR_PROTO, so a crashed director's
leftovers can be found and removed (clean_stale) without a state file.  See docs/netctl.md.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from pylvs.netctl.plan import (
    CAPTURE_AFPACKET,
    CAPTURE_AFXDP,
    CAPTURE_NFQUEUE,
    CHAIN_IN,
    CHAIN_PREFIX,
    NFT_FAMILY,
    NFT_TABLE,
    TABLES,
    Address,
    Chain,
    NetCtlError,
    Plan,
    nft_delete_batch,
    render_restore,
)

log = logging.getLogger("pylvs.netctl")

# IFA_PROTO (Linux 6.1+) of the addresses we add: "who added this address".  The kernel
# uses 0-3 (unspec, loopback, RA, link-local); any other u8 is free for user space.
ADDR_PROTO = 0x4C  # 'L' for LVS
COMMAND_TIMEOUT = 15.0  # seconds for one iptables/nft command; they take milliseconds
NEIGH_POLL = 0.01  # seconds between neighbour-table reads while resolving
NEIGH_RETRY = 0.5  # seconds between resolution triggers (the kernel probes at ~1 s anyway)
# Neighbour states whose link-layer address can be used (include/uapi/linux/neighbour.h).
NUD_REACHABLE, NUD_STALE, NUD_DELAY, NUD_PROBE = 0x02, 0x04, 0x08, 0x10
NUD_NOARP, NUD_PERMANENT = 0x40, 0x80
NUD_USABLE = NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_PERMANENT
NTF_USE = 0x01  # neigh add/replace flag: "use" the entry, i.e. start resolving it now
RTN_LOCAL = 2  # route type of a local address
SYSCTL_DIR = "/proc/sys"

# Lines of `iptables -S` for a rule that sets a mark (what the guide's MARK rules print).
_MARK_RULE = re.compile(r"-j (MARK|CONNMARK)\b")


class Neighbour(NamedTuple):
    """Where to send a frame for an address: output device, its MAC, next hop's MAC."""

    ifname: str
    ifindex: int
    mac: str  # next hop's link-layer address (the destination MAC of our frames)
    src_mac: str  # the output device's own address


@dataclass(frozen=True)
class Capabilities:
    """What this kernel offers for capture (detected by trying, see detect_capabilities)."""

    nfqueue_target: bool  # iptables(-nft) NFQUEUE target (nft_compat + nfnetlink_queue)
    notrack_target: bool  # iptables(-nft) CT --notrack
    nft_queue: bool  # nftables' own `queue` statement (CONFIG_NFT_QUEUE)
    netdev_ingress: bool  # nft netdev family ingress chains
    afpacket: bool  # AF_PACKET sockets
    details: str = ""

    def missing_for(self, capture: str) -> list[str]:
        if capture == CAPTURE_AFXDP:
            return []  # no rules: the adapter attaches its program and says why it cannot
        need = ({"nfqueue_target": self.nfqueue_target, "notrack_target": self.notrack_target}
                if capture == CAPTURE_NFQUEUE else
                {"netdev_ingress": self.netdev_ingress, "afpacket": self.afpacket})
        return [k for k, ok in need.items() if not ok]


# --- the kernel -----------------------------------------------------------------------------

SBIN_PATH = "/usr/sbin:/sbin"  # where the tools live when root's PATH lacks them


def _tool(*names: str) -> str | None:
    for n in names:
        path = shutil.which(n) or shutil.which(n, path=SBIN_PATH)
        if path:
            return path
    return None


IPTABLES = _tool("iptables-nft", "iptables")
IPTABLES_RESTORE = _tool("iptables-nft-restore", "iptables-restore")
NFT = _tool("nft")
UNSHARE = _tool("unshare")


def _run(argv: list[str], input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, input=input, capture_output=True, text=True,
                          timeout=COMMAND_TIMEOUT, check=False)


def _need(path: str | None, what: str) -> str:
    if not path:
        raise NetCtlError(f"{what} not found (install the iptables / nftables package)")
    return path


def _probe(argv: list[str], input: str) -> tuple[bool, str]:
    """Run a probe in a throw-away network namespace (unshare -n): nothing we create
    outlives the command, and the director's namespace is never touched."""
    if not UNSHARE:
        return False, "unshare not found: cannot probe in a scratch namespace"
    try:
        proc = _run([UNSHARE, "--net", "--", *argv], input)
    except (OSError, subprocess.SubprocessError) as exc:
        return False, str(exc)
    if proc.returncode == 0:
        return True, "ok"
    lines = [ln.strip() for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
    errors = [ln for ln in lines if "rror" in ln]  # nft: "...: Error: ...", then the input and a caret
    return False, (errors or lines or [f"exit {proc.returncode}"])[0]


_PROBE_NFQUEUE = "*mangle\n:PYLVS-PROBE - [0:0]\n-A PYLVS-PROBE -j NFQUEUE --queue-num 0 --queue-bypass\nCOMMIT\n"
_PROBE_NOTRACK = "*raw\n:PYLVS-PROBE - [0:0]\n-A PYLVS-PROBE -j CT --notrack\nCOMMIT\n"
_PROBE_NFT_QUEUE = "table ip pylvs_probe { chain c { type filter hook prerouting priority 0; queue num 0 bypass; }; }\n"
_PROBE_INGRESS = json.dumps({"nftables": [
    {"add": {"table": {"family": "netdev", "name": "pylvs_probe"}}},
    {"add": {"chain": {"family": "netdev", "table": "pylvs_probe", "name": "c", "type": "filter",
                       "hook": "ingress", "dev": "lo", "prio": 0, "policy": "accept"}}}]})

_caps_lock = threading.Lock()
_caps_cache: Capabilities | None = None


def detect_capabilities() -> Capabilities:
    """Try each capture mechanism for real, each in its own scratch network namespace
    (``unshare -n``), and AF_PACKET by opening a socket.  Cached per process: what the
    kernel offers does not depend on the namespace."""
    global _caps_cache
    with _caps_lock:
        if _caps_cache is not None:
            return _caps_cache
        notes = []
        results = {}
        probes = {
            "nfqueue_target": ([IPTABLES_RESTORE], _PROBE_NFQUEUE, "iptables NFQUEUE target"),
            "notrack_target": ([IPTABLES_RESTORE], _PROBE_NOTRACK, "iptables CT --notrack"),
            "nft_queue": ([NFT, "-f", "-"], _PROBE_NFT_QUEUE, "nft queue statement"),
            "netdev_ingress": ([NFT, "-j", "-f", "-"], _PROBE_INGRESS, "nft netdev ingress chain"),
        }
        for key, (argv, text, what) in probes.items():
            if argv[0] is None:
                results[key], msg = False, "tool not found"
            else:
                results[key], msg = _probe(argv, text)  # type: ignore[arg-type]
            notes.append(f"{what}: {'yes' if results[key] else 'no (' + msg + ')'}")
        try:
            socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close()
            results["afpacket"] = True
            notes.append("AF_PACKET socket: yes")
        except OSError as exc:
            results["afpacket"] = False
            notes.append(f"AF_PACKET socket: no ({exc})")
        _caps_cache = Capabilities(details="; ".join(notes), **results)
        return _caps_cache


def _sysctl_path(name: str) -> str:
    """/proc/sys path of a dotted sysctl name ("/" inside a component stands for ".")."""
    return os.path.join(SYSCTL_DIR, *(part.replace("/", ".") for part in name.split(".")))


class _KernelSystem:
    """The real namespace: iptables-nft, nft, /proc/sys and netlink (pyroute2)."""

    def __init__(self) -> None:
        self._ipr: Any = None
        # One netlink socket, used by the control thread (apply/update) and by whoever
        # resolves neighbours: pyroute2's IPRoute is not safe for concurrent use.
        self.lock = threading.RLock()

    @property
    def ipr(self) -> Any:
        if self._ipr is None:
            from pyroute2 import IPRoute  # imported late: unit tests never need netlink

            self._ipr = IPRoute()
        return self._ipr

    def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    def capabilities(self) -> Capabilities:
        return detect_capabilities()

    # iptables
    def iptables_restore(self, table: str, text: str) -> None:
        proc = _run([_need(IPTABLES_RESTORE, "iptables-restore"), "--noflush"], text)
        if proc.returncode != 0:
            raise NetCtlError(f"iptables-restore --noflush (table {table}) failed: "
                              f"{(proc.stderr or proc.stdout).strip()}\n--- input ---\n{text}")

    def iptables_rules(self, table: str) -> list[str]:
        """``iptables -t TABLE -S``: chain declarations and rules; [] if the table is absent."""
        proc = _run([_need(IPTABLES, "iptables"), "-w", "-t", table, "-S"])
        if proc.returncode != 0:
            if "does not exist" in proc.stderr or "Table does not exist" in proc.stderr:
                return []
            raise NetCtlError(f"iptables -t {table} -S failed: {proc.stderr.strip()}")
        return [ln for ln in proc.stdout.splitlines() if ln and not ln.startswith("#")]

    def table_exists(self, table: str) -> bool:
        """Whether iptables-nft's `ip TABLE` exists (iptables-nft creates it on first use)."""
        if not NFT:
            return True  # cannot tell: never remove it
        return _run([NFT, "list", "table", "ip", table]).returncode == 0

    def chain_exists(self, table: str, chain: str) -> bool:
        """Whether the built-in `chain` exists (iptables-nft creates base chains lazily)."""
        if not NFT:
            return True
        return _run([NFT, "list", "chain", "ip", table, chain]).returncode == 0

    def delete_table(self, table: str, chain: str | None = None) -> None:
        argv = ["delete", "table", "ip", table] if chain is None else ["delete", "chain", "ip", table, chain]
        proc = _run([_need(NFT, "nft"), *argv])
        if proc.returncode != 0:
            raise NetCtlError(f"nft {' '.join(argv)}: {proc.stderr.strip()}")

    # nftables
    def nft(self, batch: str) -> None:
        try:
            import nftables  # the python binding when installed (libnftables)
        except ImportError:
            nftables = None
        if nftables is not None:
            nft = nftables.Nftables()
            rc, _, err = nft.json_cmd(json.loads(batch))
            if rc != 0:
                raise NetCtlError(f"nft (json) failed: {err.strip()}")
            return
        proc = _run([_need(NFT, "nft"), "-j", "-f", "-"], batch)
        if proc.returncode != 0:
            raise NetCtlError(f"nft -j -f - failed: {(proc.stderr or proc.stdout).strip()}")

    def nft_table_exists(self) -> bool:
        if not NFT:
            return False
        return _run([NFT, "list", "table", NFT_FAMILY, NFT_TABLE]).returncode == 0

    # addresses
    def addresses(self) -> dict[tuple[str, str], dict]:
        """(ip, dev) -> {prefixlen, label, proto} of every IPv4 address here."""
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in self.ipr.get_links()}
        out = {}
        for a in self.ipr.get_addr(family=socket.AF_INET):
            out[(a.get_attr("IFA_LOCAL") or a.get_attr("IFA_ADDRESS"), names.get(a["index"], "?"))] = {
                "prefixlen": a["prefixlen"], "label": a.get_attr("IFA_LABEL"),
                "proto": a.get_attr("IFA_PROTO")}
        return out

    def _index(self, dev: str) -> int:
        idx = self.ipr.link_lookup(ifname=dev)
        if not idx:
            raise NetCtlError(f"device {dev} does not exist in this network namespace")
        return idx[0]

    def addr_add(self, a: Address) -> None:
        try:
            self.ipr.addr("add", index=self._index(a.dev), address=a.ip, prefixlen=a.prefixlen,
                          label=a.label, proto=ADDR_PROTO)
        except NetCtlError:
            raise
        except Exception as exc:  # pyroute2 NetlinkError and friends
            raise NetCtlError(f"ip addr add {a}: {exc}") from exc

    def addr_del(self, a: Address) -> None:
        try:
            self.ipr.addr("del", index=self._index(a.dev), address=a.ip, prefixlen=a.prefixlen)
        except NetCtlError:
            raise
        except Exception as exc:
            raise NetCtlError(f"ip addr del {a}: {exc}") from exc

    # sysctls (of the current namespace: /proc/sys/net is per namespace)
    def sysctl_get(self, name: str) -> str:
        try:
            with open(_sysctl_path(name), encoding="ascii") as f:
                return f.read().strip()
        except OSError as exc:
            raise NetCtlError(f"sysctl {name}: {exc}") from exc

    def sysctl_set(self, name: str, value: str) -> None:
        try:
            with open(_sysctl_path(name), "w", encoding="ascii") as f:
                f.write(f"{value}\n")
        except OSError as exc:
            raise NetCtlError(f"sysctl {name}={value}: {exc}") from exc

    # neighbours
    def neighbour(self, ip: str, timeout: float) -> Neighbour:
        with self.lock:  # held per netlink exchange, never across the waits
            ipr = self.ipr
            try:
                route = ipr.route("get", dst=ip)[0]
            except Exception as exc:
                raise NetCtlError(f"neighbour {ip}: no route ({exc})") from exc
            if route["type"] == RTN_LOCAL:
                raise NetCtlError(f"neighbour {ip}: the address is local to this director")
            oif = route.get_attr("RTA_OIF")
            hop = route.get_attr("RTA_GATEWAY") or ip
            link = ipr.get_links(oif)[0]
            ifname, src_mac = link.get_attr("IFLA_IFNAME"), link.get_attr("IFLA_ADDRESS")
        deadline = time.monotonic() + timeout
        next_trigger = 0.0
        while True:
            with self.lock:
                for n in ipr.get_neighbours(dst=hop, ifindex=oif):
                    mac = n.get_attr("NDA_LLADDR")
                    if mac and n["state"] & NUD_USABLE:
                        return Neighbour(ifname, oif, mac, src_mac)
            now = time.monotonic()
            if now >= deadline:
                break
            if now >= next_trigger:
                # NTF_USE: the kernel creates the entry if needed and starts resolving it
                # (an ARP request, as a first packet to it would); nothing else is sent.
                with self.lock, contextlib.suppress(Exception):
                    ipr.neigh("replace", dst=hop, ifindex=oif, flags=NTF_USE)
                next_trigger = now + NEIGH_RETRY
            time.sleep(NEIGH_POLL)
        via = f" via {hop}" if hop != ip else ""
        raise NetCtlError(f"neighbour {ip}{via} on {ifname}: no link-layer address after {timeout:g} s "
                          "(is the host up and on that segment?)")


class _RecordingSystem:
    """A model namespace for DryRun: records each action, changes only its own model."""

    def __init__(self, actions: list[tuple[str, str]], *, addresses: Iterable[Address] = (),
                 sysctls: dict[str, str] | None = None, neighbours: dict[str, Neighbour] | None = None,
                 capabilities: Capabilities | None = None) -> None:
        self.actions = actions
        self.lock = threading.RLock()
        self.addr: dict[tuple[str, str], dict] = {
            (a.ip, a.dev): {"prefixlen": a.prefixlen, "label": a.label, "proto": None} for a in addresses}
        self.sys = dict(sysctls or {})
        self.neigh = dict(neighbours or {})
        self.caps = capabilities or Capabilities(True, True, False, True, True, "dry run")
        self.rules: dict[str, list[str]] = {t: [] for t in TABLES}
        self.nft_table = False

    def close(self) -> None:
        pass

    def capabilities(self) -> Capabilities:
        return self.caps

    def iptables_restore(self, table: str, text: str) -> None:
        self.actions.append(("iptables-restore", text))
        rules = self.rules[table]
        for line in text.splitlines():  # enough of iptables-restore for our own output
            if line.startswith(":"):
                name = line[1:].split()[0]
                rules[:] = [r for r in rules if not r.startswith(f"-A {name} ")]
                if f"-N {name}" not in rules:
                    rules.append(f"-N {name}")
            elif line.startswith("-A "):
                rules.append(line)
            elif line.startswith("-I "):
                _, hook, _pos, *rest = line.split()
                rules.insert(0, " ".join(["-A", hook, *rest]))
            elif line.startswith("-D "):
                rules.remove("-A " + line[3:])
            elif line.startswith("-F "):
                rules[:] = [r for r in rules if not r.startswith(f"-A {line[3:]} ")]
            elif line.startswith("-X "):
                rules.remove(f"-N {line[3:]}")

    def iptables_rules(self, table: str) -> list[str]:
        return list(self.rules[table])

    def table_exists(self, table: str) -> bool:
        return bool(self.rules[table])

    def chain_exists(self, table: str, chain: str) -> bool:
        return True

    def delete_table(self, table: str, chain: str | None = None) -> None:
        self.actions.append(("nft", f"delete table ip {table}" + (f" chain {chain}" if chain else "")))

    def nft(self, batch: str) -> None:
        self.actions.append(("nft", batch))
        cmds = json.loads(batch)["nftables"]
        self.nft_table = len(cmds) > len(nft_delete_batch()["nftables"])  # a replace, not a delete

    def nft_table_exists(self) -> bool:
        return self.nft_table

    def addresses(self) -> dict[tuple[str, str], dict]:
        return {k: dict(v) for k, v in self.addr.items()}

    def addr_add(self, a: Address) -> None:
        self.actions.append(("addr-add", str(a)))
        self.addr[(a.ip, a.dev)] = {"prefixlen": a.prefixlen, "label": a.label, "proto": ADDR_PROTO}

    def addr_del(self, a: Address) -> None:
        self.actions.append(("addr-del", str(a)))
        self.addr.pop((a.ip, a.dev), None)

    def sysctl_get(self, name: str) -> str:
        return self.sys.get(name, "0")

    def sysctl_set(self, name: str, value: str) -> None:
        self.actions.append(("sysctl", f"{name}={value}"))
        self.sys[name] = value

    def neighbour(self, ip: str, timeout: float) -> Neighbour:
        self.actions.append(("neighbour", ip))
        if ip not in self.neigh:
            raise NetCtlError(f"neighbour {ip}: no link-layer address after {timeout:g} s (dry run)")
        return self.neigh[ip]


def _summary(plan: Plan) -> str:
    return (f"capture {plan.capture}: {len(plan.chains)} chain(s), "
            f"{'netdev table, ' if plan.nft else ''}{len(plan.addresses)} address(es), "
            f"{len(plan.sysctls)} sysctl(s)")


# --- NetCtl ------------------------------------------------------------------------------------

def _locked(method: Callable) -> Callable:
    @functools.wraps(method)
    def wrapper(self: NetCtl, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return wrapper


class NetCtl:
    """The director's kernel state in the current network namespace (see module doc).

    apply(plan) installs a Plan (undoing everything on failure), update(plan) replaces it,
    teardown() removes exactly what this object installed and restores the sysctls."""

    def __init__(self) -> None:
        self._sys: Any = _KernelSystem()
        self._reset()

    def _reset(self) -> None:
        self._lock = self._sys.lock  # the system's: neighbour() takes it per netlink call
        self._reset_state()

    def _reset_state(self) -> None:
        self.plan: Plan | None = None
        self._chains: tuple[Chain, ...] = ()  # our chains now installed
        self._nft = False  # our netdev table installed
        self._added: list[Address] = []  # addresses we added (and will remove)
        self._saved: dict[str, str] = {}  # sysctl -> value before we changed it
        # iptables tables (table, None) and built-in chains (table, hook) that did not exist
        # before us: iptables-nft creates them on first use; removed again when left empty.
        self._created: set[tuple[str, str | None]] = set()
        self.warnings: list[str] = []

    # -- detection --
    def capabilities(self) -> Capabilities:
        return self._sys.capabilities()

    def neighbour(self, ip: str, timeout: float = 2.0) -> Neighbour:
        """The output device and next-hop MAC for `ip` (direct routing and tunnelling);
        triggers resolution when the entry is missing; NetCtlError after `timeout`."""
        ipaddress.IPv4Address(ip)
        return self._sys.neighbour(str(ip), timeout)

    def local_addresses(self) -> frozenset[str]:
        """The IPv4 addresses of this namespace: a real server at one of them is this
        director itself (LOCALNODE, as the kernel's inet_addr_type == RTN_LOCAL)."""
        with self._lock:
            return frozenset(ip for ip, _dev in self._sys.addresses())

    # -- the three verbs --
    @_locked
    def apply(self, plan: Plan) -> None:
        """Install `plan`: sysctls, rules (each table atomically), then the addresses
        (traffic is attracted only once it can be captured).  On failure, undo what was
        done and raise NetCtlError."""
        if self.plan is not None:
            raise NetCtlError("apply: a plan is already installed (use update, or teardown first)")
        self._check_caps(plan)
        try:
            self._set_sysctls(plan)
            self._set_rules(plan)
            self._set_addresses(plan)
        except BaseException as exc:
            errors = self._undo()
            if isinstance(exc, NetCtlError) and not errors:
                raise
            raise NetCtlError(f"apply failed and was undone: {exc}"
                              + (f"; undo also failed: {'; '.join(errors)}" if errors else "")) from exc
        self.plan = plan
        self.check_mark_order()
        self._check_rp_filter()
        self._done("apply", _summary(plan))

    @_locked
    def update(self, plan: Plan) -> None:
        """Replace the installed plan by `plan` (a reload): our rules are swapped
        atomically per table, addresses added/removed by difference, sysctls adjusted."""
        if self.plan is None:
            self.apply(plan)
            return
        self._check_caps(plan)
        self._set_sysctls(plan)
        self._set_rules(plan)
        self._set_addresses(plan)
        self.plan = plan
        self.check_mark_order()
        self._check_rp_filter()
        self._done("update", _summary(plan))

    @_locked
    def teardown(self) -> None:
        """Remove what this NetCtl installed and restore the sysctls.  Idempotent; tries
        every step and raises NetCtlError listing what failed."""
        errors = self._undo()
        if errors:
            raise NetCtlError("teardown: " + "; ".join(errors))
        self._done("teardown", "")

    def _done(self, verb: str, detail: str) -> None:
        """A verb completed (DryRun records it after its steps)."""

    @classmethod
    def clean_stale(cls) -> list[str]:
        """Remove what a crashed director left in this namespace: PYLVS-* chains and our
        jumps to them, the `netdev pylvs` table, addresses tagged with ADDR_PROTO.  (The
        sysctls it changed cannot be known and stay.)  Returns what was removed."""
        ctl = cls()
        try:
            return ctl._clean_stale()
        finally:
            ctl.close()

    @_locked
    def close(self) -> None:
        """Release the netlink socket (the installed state stays)."""
        self._sys.close()

    def __enter__(self) -> NetCtl:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.teardown()
        finally:
            self.close()

    # -- steps --
    def _check_caps(self, plan: Plan) -> None:
        if not (plan.chains or plan.nft):
            return
        missing = self.capabilities().missing_for(plan.capture)
        if missing:
            raise NetCtlError(f"capture {plan.capture} needs {', '.join(missing)}, which this kernel "
                              f"lacks ({self.capabilities().details})")

    def _set_sysctls(self, plan: Plan) -> None:
        for name, value in plan.sysctls.items():
            old = self._sys.sysctl_get(name)
            if name not in self._saved:
                self._saved[name] = old
            if old != str(value):
                self._sys.sysctl_set(name, str(value))
        for name in [n for n in self._saved if n not in plan.sysctls]:
            self._restore_sysctl(name)

    def _restore_sysctl(self, name: str) -> None:
        old = self._saved[name]
        if self._sys.sysctl_get(name) != old:
            self._sys.sysctl_set(name, old)
        del self._saved[name]

    def _state(self, table: str) -> tuple[set[str], set[str]]:
        """(our jump rules present, chain names existing) in `table`."""
        rules = self._sys.iptables_rules(table)
        jumps = {r for r in rules if r.startswith("-A ") and r.split()[-1].startswith(CHAIN_PREFIX)
                 and r.split()[-2] == "-j" and len(r.split()) == 4}
        chains = {r.split()[1] for r in rules if r.startswith("-N ")}
        return jumps, chains

    def _set_rules(self, plan: Plan) -> None:
        for table in TABLES:
            new = [c for c in plan.chains if c.table == table]
            old = [c for c in self._chains if c.table == table]
            if not new and not old:
                continue
            if not old:
                if not self._sys.table_exists(table):
                    self._created.add((table, None))
                self._created |= {(table, c.hook) for c in new if (table, None) in self._created
                                  or not self._sys.chain_exists(table, c.hook)}
            else:
                self._created |= {(table, c.hook) for c in new if c.hook not in {o.hook for o in old}
                                  and not self._sys.chain_exists(table, c.hook)}
            jumps, existing = self._state(table)
            text = render_restore(table, new, old, jumps, existing)
            self._sys.iptables_restore(table, text)
            self._chains = tuple(c for c in self._chains if c.table != table) + tuple(new)
        if plan.nft:
            self._sys.nft(plan.nft)
            self._nft = True
        elif self._nft:
            self._sys.nft(json.dumps(nft_delete_batch()))
            self._nft = False

    def _set_addresses(self, plan: Plan) -> None:
        present = self._sys.addresses()
        want = {(a.ip, a.dev) for a in plan.addresses}
        for a in list(self._added):
            if (a.ip, a.dev) not in want:
                self._sys.addr_del(a)
                self._added.remove(a)
        for a in plan.addresses:
            if (a.ip, a.dev) in present:
                continue  # the operator's (or already ours): never touched
            self._sys.addr_add(a)
            self._added.append(a)

    def _undo(self) -> list[str]:
        errors: list[str] = []
        for a in reversed(list(self._added)):
            try:
                if (a.ip, a.dev) in self._sys.addresses():
                    self._sys.addr_del(a)
                self._added.remove(a)
            except (NetCtlError, OSError) as exc:
                errors.append(str(exc))
        for table in TABLES:
            old = [c for c in self._chains if c.table == table]
            if not old:
                continue
            try:
                jumps, existing = self._state(table)
                if jumps & {c.jump for c in old} or existing & {c.name for c in old}:
                    self._sys.iptables_restore(table, render_restore(table, (), old, jumps, existing))
                self._chains = tuple(c for c in self._chains if c.table != table)
                self._drop_created(table)
            except (NetCtlError, OSError, subprocess.SubprocessError) as exc:
                errors.append(str(exc))
        if self._nft:
            try:
                self._sys.nft(json.dumps(nft_delete_batch()))
                self._nft = False
            except (NetCtlError, OSError, subprocess.SubprocessError) as exc:
                errors.append(str(exc))
        for name in list(self._saved):
            try:
                self._restore_sysctl(name)
            except (NetCtlError, OSError) as exc:
                errors.append(str(exc))
        if not errors:
            self.plan = None
        return errors

    def _drop_created(self, table: str) -> None:
        """Remove the built-in chains and the table iptables-nft created for our rules, if
        they are empty again, so the namespace is left as we found it (an empty base chain
        still costs a hook call per packet)."""
        created = sorted((c for c in self._created if c[0] == table), key=lambda c: c[1] is None)
        for _, chain in created:
            self._created.discard((table, chain))
            rules = self._sys.iptables_rules(table)
            if chain is None:
                if rules and all(r.startswith("-P ") and r.endswith(" ACCEPT") for r in rules):
                    self._sys.delete_table(table)
            elif [r for r in rules if r.split()[1:2] == [chain]] == [f"-P {chain} ACCEPT"]:
                self._sys.delete_table(table, chain)

    @_locked
    def check_mark_order(self) -> list[str]:
        """Warn (log, and keep in ``warnings``) when an operator's MARK rule comes after our
        jump in mangle PREROUTING: the packets it marks were queued before it ran.  apply and
        update call it; update moves our jump to the end again."""
        self.warnings = []
        if self.plan is None or not any(c.name == CHAIN_IN for c in self._chains):
            return []
        rules = [r for r in self._sys.iptables_rules("mangle") if r.startswith("-A PREROUTING ")]
        jump = f"-A PREROUTING -j {CHAIN_IN}"
        if jump not in rules:
            return []
        for r in rules[rules.index(jump) + 1:]:
            if _MARK_RULE.search(r):
                msg = (f"mangle PREROUTING rule after pylvs's jump to {CHAIN_IN} sets a mark the "
                       f"queued packets will not carry: {r!r}; add MARK rules before starting pylvs "
                       "(or reload it: update() moves the jump to the end)")
                self.warnings.append(msg)
                log.warning("%s", msg)
        return list(self.warnings)

    def _check_rp_filter(self) -> None:
        """accept_local is not enough under strict reverse-path filtering (rp_filter=1, the
        larger of `all` and the device's counts): the tunnelled packets would still drop."""
        for name in self.plan.sysctls if self.plan else ():
            if not name.endswith(".accept_local"):
                continue
            dev_rp = name.rsplit(".", 1)[0] + ".rp_filter"
            try:
                strict = max(int(self._sys.sysctl_get("net.ipv4.conf.all.rp_filter")),
                             int(self._sys.sysctl_get(dev_rp))) == 1
            except (NetCtlError, OSError, ValueError):
                continue
            if strict:
                msg = (f"{dev_rp} (or conf.all) is 1, strict reverse-path filtering: tunnelled packets "
                       "leaving with the director's own source will be dropped; set it to 0 or 2")
                self.warnings.append(msg)
                log.warning("%s", msg)

    def _clean_stale(self) -> list[str]:
        removed: list[str] = []
        for table in TABLES:
            rules = self._sys.iptables_rules(table)
            chains = [r.split()[1] for r in rules if r.startswith("-N " + CHAIN_PREFIX)]
            jumps = [r for r in rules if r.startswith("-A ") and not r.split()[1].startswith(CHAIN_PREFIX)
                     and re.search(rf"-j {re.escape(CHAIN_PREFIX)}\S*$", r)]
            if not chains and not jumps:
                continue
            lines = [f"*{table}"] + ["-D " + j[3:] for j in jumps]
            lines += [f"-F {c}" for c in chains] + [f"-X {c}" for c in chains] + ["COMMIT"]
            self._sys.iptables_restore(table, "\n".join(lines) + "\n")
            removed += [f"iptables -t {table} {j}" for j in jumps] + [f"iptables -t {table} chain {c}" for c in chains]
            # What the cleanup left empty held nothing of anyone's: drop it as _drop_created does.
            self._created |= {(table, None)} | {(table, j.split()[1]) for j in jumps}
            self._drop_created(table)
        if self._sys.nft_table_exists():
            self._sys.nft(json.dumps(nft_delete_batch()))
            removed.append(f"nft table {NFT_FAMILY} {NFT_TABLE}")
        for (ip, dev), info in self._sys.addresses().items():
            if info.get("proto") == ADDR_PROTO:
                a = Address(ip, info["prefixlen"], dev, info.get("label") or dev)
                self._sys.addr_del(a)
                removed.append(f"address {a}")
        for what in removed:
            log.info("removed stale %s", what)
        return removed


class DryRun(NetCtl):
    """NetCtl's double: the same logic over a model namespace; ``actions`` lists every
    (verb, detail) it would have done: the steps (iptables-restore, nft, addr-add,
    addr-del, sysctl, neighbour), each followed by the completed call (apply, update,
    teardown) that made them.  Start state: `addresses` already present, `sysctls` values (default "0"),
    `neighbours` ip -> Neighbour answers, `capabilities` (default: nfqueue and afpacket)."""

    def __init__(self, *, addresses: Iterable[Address] = (), sysctls: dict[str, str] | None = None,
                 neighbours: dict[str, Neighbour] | None = None,
                 capabilities: Capabilities | None = None) -> None:
        self.actions: list[tuple[str, str]] = []
        self._sys = _RecordingSystem(self.actions, addresses=addresses, sysctls=sysctls,
                                     neighbours=neighbours, capabilities=capabilities)
        self._reset()

    def _done(self, verb: str, detail: str) -> None:
        self.actions.append((verb, detail))


__all__ = ["ADDR_PROTO", "CAPTURE_AFPACKET", "CAPTURE_NFQUEUE", "Capabilities", "DryRun", "NetCtl",
           "NetCtlError", "Neighbour", "detect_capabilities"]
