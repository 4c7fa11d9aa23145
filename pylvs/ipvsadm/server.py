"""The director's side of pylvsadm: the ``ipvs.*`` verbs of its control socket.

``Director.handle_control`` hands every ``ipvs.*`` request here (control thread):

* ``ipvs.apply`` ``{"commands": [Command JSON, ...]}``: table commands and ``--set``,
  each applied in order to a copy of the running table (``pylvs.ipvsadm.table``); a
  refused one is reported and skipped, as ``ipvsadm -R`` goes on after a kernel error.
  The result is compiled and swapped in once (``Director.install``): if that fails,
  nothing of the batch is applied.  Reply: ``errors`` = ``[[index, message, rc], ...]``.
* ``ipvs.get``: the table with counters and rates (``Forwarder.snapshot``), the
  timeouts and the sync daemons: what every listing, the status file and the metrics
  are made from.
* ``ipvs.conns``: the connection table, as ``ipvsadm -L -c`` lists it.
* ``ipvs.zero`` ``{"service": ServiceSpec JSON | null}``: ``ipvsadm -Z``.
* ``ipvs.daemon`` ``{"daemon": DaemonSpec JSON, "start": bool}``: the connection sync.
"""

from __future__ import annotations

import logging
from typing import Any

from pylvs.addr import ip_str
from pylvs.dataplane import conntab as ctm
from pylvs.dataplane import tables as tb
from pylvs.ha import sync
from pylvs.ipvsadm import command as c
from pylvs.ipvsadm import table

log = logging.getLogger("pylvs.lvs")

DAEMON_EXISTS = "Daemon has already run"  # libipvs ipvs_strerror: start-daemon EEXIST
NO_DAEMON = "No daemon is running"  # stop-daemon ESRCH
NO_DEVICE = "No such device"  # ENODEV: no --mcast-interface, or no such device
SYNCID_DEFAULT = 255  # ipvsadm -h: --syncid default
SYNC_MAXLEN_DEFAULT = 1472  # ipvsadm -h: --sync-maxlen default (an Ethernet MTU's UDP payload)
SYNC_TTL_DEFAULT = 1  # ipvsadm -h: --mcast-ttl default
TEMPLATE_STATE = "ASSURED"  # ip_vs_ctpl_state_name_table: what -L -c shows for a template in use
PROTO_NAMES = {ctm.IPPROTO_TCP: "TCP", ctm.IPPROTO_UDP: "UDP", ctm.IPPROTO_IP: "IP"}


def handle(director: Any, req: dict[str, Any]) -> dict[str, Any]:
    verb = req["cmd"]
    if verb == "ipvs.apply":
        return apply(director, [c.Command.from_json(x) for x in req["commands"]])
    if verb == "ipvs.get":
        return {"ok": True, **get(director)}
    if verb == "ipvs.conns":
        return {"ok": True, "conns": conns(director)}
    if verb == "ipvs.zero":
        return zero(director, c.ServiceSpec(**req["service"]) if req.get("service") else None)
    if verb == "ipvs.daemon":
        return daemon(director, c.DaemonSpec(**req["daemon"]), bool(req["start"]))
    return {"ok": False, "error": f"unknown command {verb!r}"}


def apply(director: Any, commands: list[c.Command]) -> dict[str, Any]:
    config = director.config
    errors = []
    for i, cmd in enumerate(commands):
        try:
            config = table.apply(config, cmd)
        except table.IpvsError as exc:
            errors.append([i, str(exc), exc.rc])
    if config is not director.config:
        try:
            director.install(config, "pylvsadm")
        except Exception as exc:  # noqa: BLE001 - the running table stays; the client prints why
            return {"ok": False, "error": f"pylvs: not applied, the running table stays: {exc}",
                    "rc": table.RC_KERNEL}  # fmt: skip
    return {"ok": True, "errors": errors, "generation": int(director.fwd.tables.generation)}


def timeouts(director: Any) -> list[int]:
    """What ``-L --timeout`` prints: the connection table's tcp, tcpfin and udp seconds."""
    t = director.fwd.ct.timeouts
    names = ctm.STATE_NAMES
    return [int(t[names.index("ESTABLISHED")]), int(t[names.index("FIN_WAIT")]), int(t[names.index("UDP")])]


def get(director: Any) -> dict[str, Any]:
    snap = director.fwd.snapshot()
    return {"snapshot": snap, "timeouts": timeouts(director), "daemons": daemons(director)}


def daemons(director: Any) -> list[dict[str, Any]]:
    """The running sync daemons: lvs.cf's (its role follows the director's) and those
    pylvsadm started, a master and a backup at most, as the kernel allows."""
    syncd, cf_spec = director.syncd, director.sync_spec  # once: the metrics thread asks too
    running = []
    if syncd is not None and syncd.role is not None and cf_spec is not None:
        running.append((syncd, cf_spec))
    running += director.sync_daemons.values()  # replaced whole by the control thread, never edited
    out = [{"state": d.role, "mcast_interface": spec.mcast_interface, "syncid": d.syncid,
            "sync_maxlen": spec.sync_maxlen or SYNC_MAXLEN_DEFAULT, "mcast_group": d.group,
            "mcast_port": d.port, "mcast_ttl": spec.mcast_ttl or SYNC_TTL_DEFAULT} for d, spec in running]  # fmt: skip
    return sorted(out, key=lambda x: x["state"] != "master")  # ipvsadm lists the master first


def conns(director: Any) -> list[dict[str, Any]]:
    fwd = director.fwd
    with fwd.exclusive():  # a copy of the live rows only: the dataplane waits microseconds, not seconds
        ct = fwd.ct
        live = ct.entries[ct.entries["live"] != 0].copy()
        now = fwd.clock()
    out = []
    for e in ctm.live_entries(ct._replace(entries=live)):
        if e.expires <= now:
            continue  # dead already, the sweep has not reached it yet
        template = bool(e.flags & ctm.F_TEMPLATE)
        out.append({
            "proto": PROTO_NAMES.get(e.proto, str(e.proto)), "expires": e.expires - now,
            "state": TEMPLATE_STATE if template else e.state, "template": template,
            "caddr": ip_str(e.caddr), "cport": e.cport, "vaddr": ip_str(e.vaddr), "vport": e.vport,
            "daddr": ip_str(e.daddr), "dport": e.dport, "pe_name": None, "pe_data": None,
        })  # fmt: skip
    return out


def zero(director: Any, spec: c.ServiceSpec | None) -> dict[str, Any]:
    """-Z: counters and rate estimators, of one service or of all."""
    fwd = director.fwd
    if spec is not None:
        key = table.spec_key(spec)
        t = fwd.tables
        known = key[0] == "fwmark" or (key[0] in tb.PROTO_BY_NAME and spec.af == 4)
        i = tb.service_index(t, key) if known else -1
        if i < 0 or not t.svc[i]["active"]:
            return {"ok": True, "errors": [[0, table.NO_SERVICE, table.RC_KERNEL]]}
    with fwd.exclusive():
        t = fwd.tables
        if spec is None:
            svc_rows, dest_rows = slice(None), slice(None)
        else:
            off, cap = int(t.svc[i]["dest_off"]), int(t.svc[i]["dest_cap"])
            svc_rows, dest_rows = slice(i, i + 1), slice(off, off + cap)
        fwd.counters.svc[svc_rows] = 0
        fwd.counters.dest[dest_rows] = 0
        fwd.svc_est.zero(svc_rows)
        fwd.dest_est.zero(dest_rows)
    return {"ok": True, "errors": []}


def daemon(director: Any, spec: c.DaemonSpec, start: bool) -> dict[str, Any]:
    """--start-daemon / --stop-daemon: pylvsadm's daemons, beside lvs.cf's."""
    cf = director.syncd if director.syncd is not None and director.syncd.role == spec.state else None
    mine = director.sync_daemons.get(spec.state)
    if not start:
        if mine is None and cf is None:
            return {"ok": True, "errors": [[0, NO_DAEMON, table.RC_KERNEL]]}
        if mine is not None:
            mine[0].stop()
            director.sync_daemons = {k: v for k, v in director.sync_daemons.items() if k != spec.state}
        else:
            cf.stop()  # lvs.cf's: gone until the director restarts
            director.syncd = None
        log.info("pylvsadm: %s sync daemon stopped", spec.state)
        return {"ok": True, "errors": []}
    if mine is not None or cf is not None:
        return {"ok": True, "errors": [[0, DAEMON_EXISTS, table.RC_KERNEL]]}
    from pylvs.ha.syncd import SyncDaemon, iface_address

    try:
        addr = iface_address(spec.mcast_interface) if spec.mcast_interface else None
    except ValueError:
        addr = None
    if addr is None:
        return {"ok": True, "errors": [[0, NO_DEVICE, table.RC_KERNEL]]}
    kw = {"syncid": SYNCID_DEFAULT if spec.syncid is None else spec.syncid, "iface_addr": addr,
          "port": spec.mcast_port or sync.SYNC_PORT, "group": spec.mcast_group or sync.SYNC_MCAST_GROUP}  # fmt: skip
    if spec.sync_maxlen:
        kw["max_size"] = min(spec.sync_maxlen, sync.SYNC_MESG_MAX)
    if spec.mcast_ttl:
        kw["ttl"] = spec.mcast_ttl
    new = SyncDaemon(director.fwd, **kw)
    try:
        (new.start_master if spec.state == "master" else new.start_backup)()
    except OSError as exc:
        return {"ok": True, "errors": [[0, exc.strerror or str(exc), table.RC_KERNEL]]}
    director.sync_daemons = {**director.sync_daemons, spec.state: (new, spec)}
    log.info("pylvsadm: %s sync daemon started on %s, syncid %d", spec.state, spec.mcast_interface, new.syncid)
    return {"ok": True, "errors": []}
