"""CONTROL/MONITORING as data: the director's status (its control socket's ``status``)
joined with its health checks by ``pylvs status``'s own code (``service_views``), one row
per real server in HAProxy's stats-page shape (state, last check, weight, connections,
rates), and the same rows as CSV for scripts."""

from __future__ import annotations

import csv
import io
import time
from typing import Any

from pylvs.cli.status import ago, health_words, service_views

# HAProxy's row states (anchors B5): the class colours the row.
UP, DOWN, DRAIN, MAINT, SORRY, NOCHECK = "UP", "DOWN", "DRAIN", "MAINT", "SORRY", "no check"
CSV_COLUMNS = ("virtual", "server", "address", "port", "forward", "status", "reason", "last_check_s", "weight",
               "configured_weight", "active", "inactive", "conns", "inpkts", "outpkts", "inbytes", "outbytes",
               "cps", "inpps", "outpps", "inbps", "outbps")  # fmt: skip


def _names(lvs: dict) -> dict[tuple[str, int], tuple[str, str]]:
    """(RIP, port) -> (virtual name, server name), from the status's ``virtuals``."""
    out = {}
    for v in lvs.get("virtuals") or []:
        for s in v.get("servers") or []:
            port = s.get("port") or v.get("port")
            out.setdefault((str(s.get("address")), int(port or 0)), (v.get("name"), s.get("name")))
            out[(v.get("name"), str(s.get("address")), int(port or 0))] = (v.get("name"), s.get("name"))
    return out


def server_row(vname: str | None, at: tuple | None, dest: dict | None, check: dict | None, *, forward: str,
               checked: bool, names: dict, now: float) -> dict[str, Any]:  # fmt: skip
    addr, port = (at if at else (str((check or {}).get("address", "?")), 0))
    named = names.get((vname, addr, port)) or names.get((addr, port)) or (None, None)
    sname = (check or {}).get("server") or named[1]
    word, reason = health_words(check, service_checked=checked)
    admin = (check or {}).get("admin")
    if check is None:
        state = SORRY if checked else NOCHECK
    elif admin == "maint":
        state = MAINT
    elif admin == "drain" and check.get("up"):
        state = DRAIN
    else:
        state = UP if check.get("up") else DOWN
    if admin == "drain":
        reason = "; ".join(x for x in ("drained: weight 0 for new connections", reason) if x)
    stats, rates = (dest or {}).get("stats") or {}, (dest or {}).get("rates") or {}
    last_at = (check or {}).get("last_at")
    return {
        "virtual": vname, "server": sname, "address": addr, "port": port,
        "forward": (dest or {}).get("forward") or forward, "state": state, "health": word, "reason": reason,
        "last_check": ago(max(0.0, now - last_at)) if isinstance(last_at, (int, float)) else "never",
        "last_check_s": round(now - last_at, 1) if isinstance(last_at, (int, float)) else None,
        "weight": (dest or {}).get("weight", 0), "configured_weight": (check or {}).get("configured_weight"),
        "active": int((dest or {}).get("active", 0)), "inactive": int((dest or {}).get("inactive", 0)),
        "conns": int(stats.get("conns", 0)), "inpkts": int(stats.get("inpkts", 0)),
        "outpkts": int(stats.get("outpkts", 0)), "inbytes": int(stats.get("inbytes", 0)),
        "outbytes": int(stats.get("outbytes", 0)),
        "cps": rates.get("cps", 0), "inpps": rates.get("inpps", 0), "outpps": rates.get("outpps", 0),
        "inbps": rates.get("inbps", 0), "outbps": rates.get("outbps", 0),
        "in_table": dest is not None,
    }  # fmt: skip


def monitor(lvs: dict | None, now: float | None = None) -> list[dict[str, Any]]:
    """The virtual servers, each with its rows."""
    if not lvs:
        return []
    now = time.time() if now is None else now
    names = _names(lvs)
    out = []
    for view in service_views(lvs):
        svc = view.svc or {}
        rows = [server_row(view.name, at, dest, check, forward=view.forward, checked=view.checked, names=names,
                           now=now) for at, dest, check in view.rows]  # fmt: skip
        if svc.get("fwmark"):
            where = f"FWM {svc['fwmark']}"
        elif svc:
            where = f"{svc.get('proto')} {svc.get('vip')}:{svc.get('port')}"
        else:
            where = "not in the table"
        stats, rates = svc.get("stats") or {}, svc.get("rates") or {}
        out.append({"name": view.name, "where": where, "scheduler": svc.get("scheduler"),
                    "persistent": svc.get("persistent", 0), "rows": rows,
                    "active": sum(r["active"] for r in rows), "inactive": sum(r["inactive"] for r in rows),
                    "conns": int(stats.get("conns", 0)), "cps": rates.get("cps", 0),
                    "inpps": rates.get("inpps", 0), "outpps": rates.get("outpps", 0)})  # fmt: skip
    return out


FORMULA_START = ("=", "+", "-", "@")  # a spreadsheet would run such a cell (a reason quotes a server's reply)


def _cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def csv_text(services: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for svc in services:
        for r in svc["rows"]:
            w.writerow([_cell(svc["name"] if c == "virtual" else r["state"] if c == "status" else r.get(c))
                        for c in CSV_COLUMNS])  # fmt: skip
    return buf.getvalue()
