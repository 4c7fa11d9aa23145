"""lvs.cf text for a lab: the lab's VIP, NAT router and real servers, in the guide's form.

Used by the end-to-end tests, ``make demo`` and the forwarding benchmark, so that all
three run the same kind of file an operator writes (and ``pylvs check`` accepts it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pylvs.lab import topology as topo


@dataclass(frozen=True)
class Service:
    """One ``virtual`` block; servers default to every real server of the lab."""

    name: str = "www"
    port: int = topo.HTTP_PORT
    protocol: str = "tcp"
    scheduler: str = "wlc"
    weights: Sequence[int] | None = None  # one per real server; None: all 1
    persistent: int = 0
    pmask: str | None = None
    fwmark: int = 0
    quiesce_server: bool = False
    rport: int | None = None  # real servers' port (NAT only); None: the virtual's
    send: str | None = None  # health check (nanny): send / expect / send_program, as written
    expect: str | None = None
    send_program: str | None = None
    use_regex: bool = False
    timeout: int | None = None  # check interval and probe limit, seconds
    reentry: int | None = None
    sorry_server: str | None = None


def lvs_cf(lab: topo.Lab | None = None, services: Sequence[Service] = (Service(),), *,
           kind: str | None = None, rips: Sequence[str] | None = None, serial_no: int = 1,
           extra_globals: str = "", backup: bool = False) -> str:  # fmt: skip
    """The file text.  Pass a Lab, or ``kind`` and ``rips`` for a lab not built yet.
    backup: the guide's two routers (dir1 primary, dir2 backup, heartbeats on both segments)."""
    kind = kind or lab.kind
    rips = list(rips if rips is not None else lab.rips)
    network = {"nat": "nat", "direct": "direct", "tunnel": "tunnel"}[kind]
    head = [
        f"serial_no = {serial_no}",
        f"primary = {topo.DIRECTOR_PUBLIC[0]}",
        "service = lvs",
        f"backup_active = {int(backup)}",
        f"backup = {topo.DIRECTOR_PUBLIC[1] if backup else '0.0.0.0'}",
        f"heartbeat = {int(backup)}",
        f"network = {network}",
    ]
    if backup:
        head += [f"primary_private = {topo.DIRECTOR_PRIVATE[0]}", f"backup_private = {topo.DIRECTOR_PRIVATE[1]}"]
    if network == "nat":
        head += [f"nat_router = {topo.NAT_ROUTER} {topo.PRIVATE_IF}:1", "nat_nmask = 255.255.255.0"]
    if extra_globals:
        head.append(extra_globals.strip())
    blocks = []
    for s in services:
        weights = list(s.weights) if s.weights is not None else [1] * len(rips)
        if len(weights) != len(rips):
            raise ValueError(f"{s.name}: {len(weights)} weights for {len(rips)} real servers")
        lines = [
            f"virtual {s.name} {{",
            "     active = 1",
            f"     address = {topo.VIP} {topo.PUBLIC_IF}:1",
            "     vip_nmask = 255.255.255.255",
            f"     port = {s.port}",
            f"     protocol = {s.protocol}",
            f"     scheduler = {s.scheduler}",
        ]
        if s.fwmark:
            lines.append(f"     fwmark = {s.fwmark}")
        if s.persistent:
            lines.append(f"     persistent = {s.persistent}")
        if s.pmask:
            lines.append(f"     pmask = {s.pmask}")
        if s.quiesce_server:
            lines.append("     quiesce_server = 1")
        for word in ("send", "expect", "send_program"):
            if getattr(s, word) is not None:
                lines.append(f'     {word} = "{getattr(s, word)}"')
        if s.use_regex:
            lines.append("     use_regex = 1")
        for word in ("timeout", "reentry", "sorry_server"):
            if getattr(s, word) is not None:
                lines.append(f"     {word} = {getattr(s, word)}")
        for k, (rip, w) in enumerate(zip(rips, weights, strict=True), start=1):
            lines += [f"     server rs{k} {{", f"         address = {rip}", "         active = 1",
                      f"         weight = {w}"]  # fmt: skip
            if s.rport is not None and network == "nat":
                lines.append(f"         port = {s.rport}")
            lines.append("     }")
        lines.append("}")
        blocks.append("\n".join(lines))
    return "\n".join(head) + "\n\n" + "\n\n".join(blocks) + "\n"
