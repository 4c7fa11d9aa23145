"""The panels' fields, as the RHEL 5 guide's chapter 4 names them, and the lvs.cf keys
they write (reference 5): one table per panel, read by the templates (what to draw) and by
``read_form`` (what a submitted form means).

A field's text is checked here first (an address, a port, a number, a name, a regex), so
the message sits beside the field that caused it; the whole candidate file then goes
through ``pylvs check``'s checker (``pylvs.web.store``), whose findings are placed beside
the field on whose line they are.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any

from pylvs.config.dump import quote_problem
from pylvs.config.model import (
    ANY_ADDRESS,
    FWMARK_MAX,
    NETWORKS,
    PERSISTENT_MAX,
    PORT_MAX,
    PROTOCOLS,
    SCHEDULERS,
    SYNCD_ID_MAX,
    WEIGHT_MAX,
    BoundAddress,
)

IFNAME_MAX = 15  # IFNAMSIZ - 1; an lvs.cf label such as eth0:1 is an address label on eth0
# Block names the tool writes: one bare lvs.cf token that is also one URL path segment
# (not "." or "..", which a browser folds away, and not "new", the ADD form's address).
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
RESERVED_NAMES = ("new",)
TEXT_MAX = 1024  # a send string, a command line: piranha's nanny takes 255 for send/expect
SECONDS_MAX = 86400
NETWORK_LABELS = {"nat": "NAT", "direct": "Direct Routing", "tunnel": "Tunneling"}
LOAD_MONITORS = ("none", "uptime", "rup", "ruptime")  # the guide's choices, offered; any command is taken


@dataclass(frozen=True)
class Field:
    """One input: ``name`` in the form, ``attr`` of the model (its lvs.cf keyword), the
    guide's ``label``, and how its text is read (``kind``)."""

    name: str
    label: str
    # ip, ip? (blank: unset), ip0 (blank: 0.0.0.0), mask, port, port? (blank: unset), int,
    # int0 (blank: 0), seconds, bool, choice, text?, dev, ipdev, ipdev? (both blank: unset), name
    kind: str
    attr: str = ""
    choices: tuple[str, ...] = ()  # a choice's values; a text field's suggestions
    lo: float = 0
    hi: float = 0
    help: str = ""


def _f(name: str, label: str, kind: str, **kw: Any) -> Field:
    return Field(name, label, kind, attr=kw.pop("attr", name), **kw)


GLOBAL = (
    _f("primary", "Primary server public IP", "ip"),
    _f("primary_private", "Primary server private IP", "ip?", help="blank: the public address carries heartbeats"),
    _f("network", "Use network type", "choice", choices=NETWORKS),
    _f("nat_router", "NAT Router IP and device", "ipdev?", help="e.g. 10.11.12.10 and eth1:1; NAT only"),
    _f("nat_nmask", "NAT Router netmask", "mask"),
)

REDUNDANCY = (
    _f("backup_active", "Redundant server enabled", "bool"),
    _f("backup", "Redundant server public IP", "ip0"),
    _f("backup_private", "Redundant server private IP", "ip?"),
    _f("keepalive", "Heartbeat interval (seconds)", "seconds", lo=0.05, hi=SECONDS_MAX),
    _f("deadtime", "Assume dead after (seconds)", "seconds", lo=0.05, hi=SECONDS_MAX),
    _f("heartbeat_port", "Heartbeat runs on port", "port", lo=1),
    _f("monitor_links", "Monitor NIC links for failures", "bool"),
    _f("syncdaemon", "Use sync daemon", "bool"),
    _f("syncd_iface", "Sync daemon interface", "dev"),
    _f("syncd_id", "Sync daemon id", "int", lo=0, hi=SYNCD_ID_MAX),
    _f("config_sync", "Sync lvs.cf to the backup (pylvs config sync)", "bool"),
    _f("config_sync_secret", "Config sync secret file", "text?"),
)

VIRTUAL = (
    _f("name", "Name", "name"),
    _f("port", "Application port", "port"),
    _f("protocol", "Protocol", "choice", choices=PROTOCOLS),
    _f("address", "Virtual IP Address and Device", "ipdev", help="e.g. 192.168.26.10 and eth0:1"),
    _f("vip_nmask", "Virtual IP Network Mask", "mask"),
    _f("fwmark", "Firewall Mark", "int0", lo=0, hi=FWMARK_MAX, help="blank or 0: none"),
    _f("sorry_server", "Sorry Server", "ip?"),
    _f("reentry", "Re-entry Time (seconds)", "int", lo=0, hi=SECONDS_MAX),
    _f("timeout", "Service Timeout (seconds)", "int", lo=1, hi=SECONDS_MAX),
    _f("quiesce_server", "Quiesce server", "bool"),
    _f("load_monitor", "Load monitoring tool", "text?", choices=LOAD_MONITORS,
       help="blank: none; uptime, rup, ruptime or a command"),
    _f("scheduler", "Scheduling", "choice", choices=SCHEDULERS),
    _f("persistent", "Persistence (seconds)", "int0", lo=0, hi=PERSISTENT_MAX, help="blank or 0: none"),
    _f("pmask", "Persistence Network Mask", "mask"),
)

REAL = (
    _f("name", "Name", "name"),
    _f("address", "Address", "ip"),
    _f("port", "Port", "port?", help="blank: the virtual server's port"),
    _f("weight", "Weight", "int", lo=0, hi=WEIGHT_MAX),
)

MONITOR = (
    _f("send_program", "Sending Program", "text?", help="%h: the real server's address, %p: its port"),
    _f("send", "Send", "text?"),
    _f("expect", "Expect", "text?"),
    _f("use_regex", "Treat expect string as a regular expression", "bool"),
)

PANELS: Mapping[str, tuple[Field, ...]] = {
    "global": GLOBAL, "redundancy": REDUNDANCY, "virtual": VIRTUAL, "real": REAL, "monitor": MONITOR,
}  # fmt: skip


class FieldError(ValueError):
    pass


def _ip(text: str) -> IPv4Address:
    try:
        return IPv4Address(text)
    except ValueError:
        raise FieldError(f"{text!r} is not an IPv4 address (a dotted quad, e.g. 192.168.1.10)") from None


def _int(text: str, lo: float, hi: float, what: str = "a whole number") -> int:
    try:
        n = int(text, 10)
    except ValueError:
        raise FieldError(f"{text!r} is not {what}") from None
    if not lo <= n <= hi:
        raise FieldError(f"{n} is out of range ({int(lo)} to {int(hi)})")
    return n


def _dev(text: str) -> str:
    if not text or len(text) > IFNAME_MAX or any(c.isspace() or c in "/\"'" for c in text):
        raise FieldError(f"{text!r} is not an interface name (e.g. eth0 or eth0:1, at most {IFNAME_MAX} characters)")
    return text


def parse_value(f: Field, form: Mapping[str, str]) -> Any:
    """The model value of one field from the submitted form; FieldError says why not."""
    raw = form.get(f.name, "")
    text = raw.strip()
    kind = f.kind
    if kind == "bool":
        return raw in ("1", "on", "true")
    if kind in ("ipdev", "ipdev?"):
        ip, dev = form.get(f"{f.name}_ip", "").strip(), form.get(f"{f.name}_dev", "").strip()
        if kind == "ipdev?" and not ip and not dev:
            return None
        if not ip or not dev:
            raise FieldError("both the address and the device are needed")
        return BoundAddress(_ip(ip), _dev(dev))
    if kind == "ip":
        if not text:
            raise FieldError("an address is needed")
        return _ip(text)
    if kind in ("ip?", "ip0"):
        if not text:
            return None if kind == "ip?" else ANY_ADDRESS
        return _ip(text)
    if kind == "mask":
        mask = _ip(text) if text else ANY_ADDRESS
        bits = int(mask)
        if bits and (bits | (bits - 1)) != 0xFFFFFFFF:  # ones then zeros
            raise FieldError(f"{text} is not a netmask (e.g. 255.255.255.0)")
        return mask
    if kind in ("port", "port?"):
        if not text:
            if kind == "port?":
                return None
            raise FieldError("a port is needed")
        return _int(text, f.lo, PORT_MAX, "a port number")
    if kind == "int0":
        return _int(text or "0", f.lo, f.hi)
    if kind == "int":
        if not text:
            raise FieldError("a number is needed")
        return _int(text, f.lo, f.hi)
    if kind == "seconds":
        try:
            n = float(text)
        except ValueError:
            raise FieldError(f"{text!r} is not a number of seconds") from None
        if not f.lo <= n <= f.hi:
            raise FieldError(f"{text} is out of range ({f.lo:g} to {f.hi:g} seconds)")
        return int(n) if n.is_integer() else n
    if kind == "choice":
        if text not in f.choices:
            raise FieldError(f"choose one of {', '.join(f.choices)}")
        return text
    if kind == "dev":
        return _dev(text)
    if kind == "name":
        if not editable_name(text):
            raise FieldError("a name is 1 to 64 letters, digits, '.', '_' or '-', beginning with a letter or digit "
                             f"(not {', '.join(RESERVED_NAMES)})")  # fmt: skip
        return text
    if kind in ("text", "text?"):
        if not text and kind == "text?":
            return None
        if len(raw) > TEXT_MAX:
            raise FieldError(f"at most {TEXT_MAX} characters")
        problem = quote_problem(raw)
        if problem:
            raise FieldError(f"cannot be written in lvs.cf: {problem}")
        return raw
    raise AssertionError(f"field kind {kind!r}")


def editable_name(name: str) -> bool:
    """Whether the panels can address a block of this name (one written by hand may not:
    its row is shown, to be edited in the file)."""
    return bool(NAME_RE.fullmatch(name)) and name not in RESERVED_NAMES


def read_form(fields: tuple[Field, ...], form: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """(model values by attribute, error messages by field name)."""
    values, errors = {}, {}
    for f in fields:
        try:
            values[f.attr] = parse_value(f, form)
        except FieldError as exc:
            errors[f.name] = str(exc)
    return values, errors


def show(f: Field, obj: Any) -> Any:
    """What a field shows for the model object ``obj`` (None: a new block, empty form):
    text for text inputs, a bool for checkboxes, (ip, dev) for ipdev."""
    value = getattr(obj, f.attr, None) if obj is not None else None
    if f.kind in ("ipdev", "ipdev?"):
        return (str(value.ip), value.device) if value is not None else ("", "")
    if f.kind == "bool":
        return bool(value)
    if value is None:
        return ""
    if f.kind in ("mask", "ip0") and value == ANY_ADDRESS:
        return ""
    return str(value)


def echo(f: Field, form: Mapping[str, str]) -> Any:
    """What a field shows when its form comes back with errors: what was typed."""
    if f.kind in ("ipdev", "ipdev?"):
        return (form.get(f"{f.name}_ip", ""), form.get(f"{f.name}_dev", ""))
    if f.kind == "bool":
        return form.get(f.name, "") in ("1", "on", "true")
    return form.get(f.name, "")
