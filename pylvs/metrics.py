"""Prometheus metrics of a running director (``pylvs lvs --metrics ADDR:PORT``).

A prometheus-client custom collector: nothing is counted per packet.  Every scrape calls
the director's ``status()`` (the forwarder's counters and tables copied under the gate,
the health runner's snapshot) and turns that one dict into series, so a scrape costs one
status read however many packets went by.  ``FAMILIES`` below is the whole list: name,
type, help, labels and how each is read.

The IPVS families are node_exporter's (collector/ipvs_linux.go) under ``pylvs_`` with
its labels and label values, so dashboards built on ``node_ipvs_*`` port by changing the
prefix; the health families follow HAProxy's exporter (one series per state).
docs/metrics.md lists the series and shows a scrape configuration.

    server = MetricsServer("127.0.0.1:9101", director.status)
    server.start()      # binds now (OSError: the director refuses to start)
    server.close()
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from pylvs.dataplane import engine as en

# node_exporter's --collector.ipvs.backend-labels default, in its order.
IPVS_LABELS = ("local_address", "local_port", "remote_address", "remote_port", "proto", "local_mark")
# A firewall-mark service as node_exporter labels it (procfs reads /proc/net/ip_vs's
# "FWM  %08X" line): proto FWM, no address, port 0, the mark as 8 upper-case hex digits.
FWM_PROTO = "FWM"
FWM_MARK_FORMAT = "{:08X}"
HEALTH_STATES = ("UP", "DOWN")  # HAProxy's server states that nanny has
HA_STATES = ("active", "standby")  # Director.status()["role"]
# The engine's counter slots (engine.REASON_NAMES) whose packet is not forwarded and not
# handed to the local stack: dropped, or rejected (dropped and answered with ICMP port
# unreachable: "no_dest").  The first slots, up to C_FRAGMENT, are the forwarded ones.
NOT_DROPPED = frozenset({"no_service", "not_syn", "icmp_unmatched", "icmp_other",  # passed
                         "parse_ok", "parse_fragment", "rewrite_OK",  # never counted
                         "parse_other_proto"})  # passed: not TCP/UDP/ICMP  # fmt: skip
DROP_REASONS = tuple(n for n in en.REASON_NAMES[en.C_FRAGMENT:] if n not in NOT_DROPPED)
# The five statistics of a service (engine.STAT_NAMES) and node_exporter's family for each.
TOTALS = (("conns", "connections", "The total number of connections made."),
          ("inpkts", "incoming_packets", "The total number of incoming packets."),
          ("outpkts", "outgoing_packets", "The total number of outgoing packets."),
          ("inbytes", "incoming_bytes", "The total amount of incoming data, in bytes."),
          ("outbytes", "outgoing_bytes", "The total amount of outgoing data, in bytes."))  # fmt: skip
ALL_ADDRESSES = "0.0.0.0"  # ":PORT": every IPv4 address, as prometheus-client's default
CLOSE_TIMEOUT = 5.0  # seconds close() waits for the server thread


# -- labels -------------------------------------------------------------------------------
def service_labels(svc: dict) -> tuple[str, str, str, str]:
    """(local_address, local_port, proto, local_mark) of a Forwarder.snapshot() service."""
    if svc.get("fwmark"):
        return "", "0", FWM_PROTO, FWM_MARK_FORMAT.format(int(svc["fwmark"]))
    return str(svc["vip"]), str(svc["port"]), str(svc["proto"]).upper(), ""


def ipvs_labels(service: tuple[str, str, str, str], rip: Any, rport: Any) -> tuple[str, ...]:
    laddr, lport, proto, mark = service
    return laddr, lport, str(rip), str(rport), proto, mark


def health_labels(check: dict) -> tuple[str, ...] | None:
    """IPVS labels of a HealthRunner.snapshot() entry, from its key ((service key), RIP,
    port), the service key being ("fwmark", mark) or (protocol, VIP, port)."""
    try:
        skey, rip, rport = check["key"]
        if skey[0] == "fwmark":
            service = ("", "0", FWM_PROTO, FWM_MARK_FORMAT.format(int(skey[1])))
        else:
            service = (str(skey[1]), str(skey[2]), str(skey[0]).upper(), "")
    except (KeyError, TypeError, ValueError, IndexError):
        return None  # not a key we know: no series rather than a wrong one
    return ipvs_labels(service, rip, rport)


# -- readers: status -> (label values, value) pairs --------------------------------------
class Scrape(NamedTuple):
    status: dict
    totals: dict[str, int]  # STAT_NAMES summed over services, removed ones included
    last_success: float | None  # time of the last successful configuration load


Samples = Iterable[tuple[tuple[str, ...], float]]


def _backends(key: str) -> Callable[[Scrape], Samples]:
    def read(s: Scrape) -> Samples:
        for svc in s.status.get("services", ()):
            service = service_labels(svc)
            for d in svc.get("dests", ()):
                yield ipvs_labels(service, d["addr"], d["port"]), d[key]
    return read


def _checks(read_one: Callable[[dict], float | None]) -> Callable[[Scrape], Samples]:
    def read(s: Scrape) -> Samples:
        for c in s.status.get("health") or ():
            labels, value = health_labels(c), read_one(c)
            if labels is not None and value is not None:
                yield labels, value
    return read


def _check_status(s: Scrape) -> Samples:
    for c in s.status.get("health") or ():
        labels = health_labels(c)
        if labels is not None:
            for state in HEALTH_STATES:
                yield (*labels, state), float((state == "UP") == bool(c.get("up")))


def _one_of(key: str, states: tuple[str, ...]) -> Callable[[Scrape], Samples]:
    """One series per state, 1 for the current (absent key: no series)."""
    def read(s: Scrape) -> Samples:
        if key in s.status:
            for state in states:
                yield (state,), float(s.status[key] == state)
    return read


def _value(key: str, sub: str | None = None) -> Callable[[Scrape], Samples]:
    """status[key] (or status[key][sub]) as one unlabelled sample, none when absent."""
    def read(s: Scrape) -> Samples:
        v = s.status.get(key)
        if sub is not None:
            v = v.get(sub) if isinstance(v, dict) else None
        if isinstance(v, (bool, int, float)):
            yield (), float(v)
    return read


def _last_success(s: Scrape) -> Samples:
    if s.last_success is not None:
        yield (), s.last_success


def _total(stat: str) -> Callable[[Scrape], Samples]:
    def read(s: Scrape) -> Samples:
        if "services" in s.status:
            yield (), s.totals[stat]
    return read


def _drops(s: Scrape) -> Samples:
    if "reasons" in s.status:  # every drop reason, 0 included: rate() sees the first one
        for reason in DROP_REASONS:
            yield (reason,), s.status["reasons"].get(reason, 0)


def _conntab(s: Scrape) -> Samples:
    if "conntab" in s.status:  # entries the table removed, by why (each entry once)
        for reason in ("expired", "drop_entry"):
            yield (reason,), s.status["conntab"].get(reason, 0)


def _defense(s: Scrape) -> Samples:
    if "defense" in s.status:
        for name, on in sorted(s.status["defense"]["engaged"].items()):
            yield (name,), int(on)


def _up_downs(c: dict) -> int | None:
    # HAProxy's check_up_down counts UP->DOWN transitions.  nanny's servers start down and
    # every change flips up/down (health.monitor), so half the changes went down.
    return None if c.get("changes") is None else int(c["changes"]) // 2


COUNTER, GAUGE = "counter", "gauge"
BACKEND = IPVS_LABELS
STATE = (*IPVS_LABELS, "state")


class Family(NamedTuple):
    name: str
    type: str
    help: str
    labels: tuple[str, ...]
    read: Callable[[Scrape], Samples]


FAMILIES = (
    *(Family(f"pylvs_ipvs_{name}_total", COUNTER, help, (), _total(stat)) for stat, name, help in TOTALS),
    Family("pylvs_ipvs_backend_connections_active", GAUGE,
           "The current active connections by local and remote address.", BACKEND, _backends("active")),
    Family("pylvs_ipvs_backend_connections_inactive", GAUGE,
           "The current inactive connections by local and remote address.", BACKEND, _backends("inactive")),
    Family("pylvs_ipvs_backend_weight", GAUGE,
           "The current backend weight by local and remote address.", BACKEND, _backends("weight")),
    Family("pylvs_backend_status", GAUGE,
           "Health of a real server as its checks see it: 1 for the current state (UP or DOWN).", STATE,
           _check_status),
    Family("pylvs_backend_check_up_down_total", COUNTER,
           "UP to DOWN transitions of a real server's health.", BACKEND, _checks(_up_downs)),
    Family("pylvs_backend_check_duration_seconds", GAUGE,
           "Duration of the last health check of a real server.", BACKEND, _checks(lambda c: c.get("duration"))),
    Family("pylvs_backend_configured_weight", GAUGE,
           "The weight lvs.cf gives a real server (pylvs_ipvs_backend_weight is the one in use: lower "
           "during slow start, 0 when quiesced, moved by load feedback).", BACKEND,
           _checks(lambda c: c.get("configured_weight"))),
    Family("pylvs_ha_state", GAUGE, "The director's role: 1 for the current one (active or standby).",
           ("state",), _one_of("role", HA_STATES)),
    Family("pylvs_ha_managed", GAUGE, "1 when pulse runs this director (its role follows the heartbeats).",
           (), _value("managed")),
    Family("pylvs_dataplane_packets_dropped_total", COUNTER,
           "Packets the forwarding engine dropped (or rejected with ICMP port unreachable), by reason.",
           ("reason",), _drops),
    Family("pylvs_conn_table_entries", GAUGE, "Entries in the connection table (templates included).", (),
           _value("connections")),
    Family("pylvs_conn_table_capacity", GAUGE, "Entries the connection table can hold.", (), _value("size")),
    Family("pylvs_conn_table_removed_total", COUNTER,
           "Entries the connection table removed, by reason: expired (their time was up) or drop_entry "
           "(the defence).", ("reason",), _conntab),
    Family("pylvs_defense_engaged", GAUGE,
           "1 while a defence against a full connection table is engaged (drop_entry, drop_packet, "
           "secure_tcp).", ("defense",), _defense),
    Family("pylvs_config_generation", GAUGE,
           "Generation of the running tables: 1 at start, +1 per compile (a reload or a health change).", (),
           _value("generation")),
    Family("pylvs_config_serial_no", GAUGE, "serial_no of the running lvs.cf (the same on both routers when "
           "in sync).", (), _value("serial_no")),
    Family("pylvs_config_last_reload_successful", GAUGE, "1 if the last configuration load succeeded.", (),
           _value("last_reload", "ok")),
    Family("pylvs_config_last_reload_success_timestamp_seconds", GAUGE,
           "Time of the last successful configuration load (start or reload), Unix seconds.", (),
           _last_success),
    Family("pylvs_config_reloads_total", COUNTER, "Configuration reloads applied.", (), _value("reloads")),
    Family("pylvs_config_reload_failures_total", COUNTER, "Configuration reloads refused (the file kept running).",
           (), _value("failed_reloads")),
    Family("pylvs_process_start_time_seconds", GAUGE, "Start time of the director, Unix seconds.", (),
           _value("started")),
)  # fmt: skip


# -- the collector ------------------------------------------------------------------------
def _empty(f: Family) -> CounterMetricFamily | GaugeMetricFamily:
    return (CounterMetricFamily if f.type == COUNTER else GaugeMetricFamily)(f.name, f.help, labels=f.labels)


def _service_key(svc: dict) -> tuple:
    return svc.get("proto"), svc.get("vip"), svc.get("port"), svc.get("fwmark")


class StatusCollector(Collector):
    """``FAMILIES`` read from one ``status()`` call per scrape."""

    def __init__(self, status: Callable[[], dict]) -> None:
        self.status = status
        self._lock = threading.Lock()  # scrapes may run in parallel (one thread each)
        self._last: dict[tuple, dict[str, int]] = {}  # service key -> its stats at the last scrape
        self._retired = dict.fromkeys(en.STAT_NAMES, 0)
        self._last_success: float | None = None

    def _totals(self, services: list[dict]) -> dict[str, int]:
        """Statistics summed over services, as /proc/net/ip_vs_stats: a service removed by a
        reload keeps its share (its last scraped one), so the totals never go back."""
        with self._lock:
            now = {_service_key(s): s.get("stats", {}) for s in services}
            for key, stats in self._last.items():
                if key not in now:
                    for k in self._retired:
                        self._retired[k] += int(stats.get(k, 0))
            self._last = now
            return {k: r + sum(int(st.get(k, 0)) for st in now.values()) for k, r in self._retired.items()}

    def _success_time(self, status: dict) -> float | None:
        """last_reload says when the last attempt was; after a failed one, the last success
        is the one this collector saw at an earlier scrape (none if it saw none)."""
        last = status.get("last_reload")
        with self._lock:
            if isinstance(last, dict) and last.get("ok") and last.get("time") is not None:
                self._last_success = float(last["time"])
            elif self._last_success is None and isinstance(status.get("started"), (int, float)):
                self._last_success = float(status["started"])  # the file loaded at start was good
            return self._last_success

    def describe(self):
        """The families without samples: lets the registry serve ``?name[]=`` filters
        (and read no status when registering)."""
        return [_empty(f) for f in FAMILIES]

    def collect(self):
        status = self.status()
        scrape = Scrape(status, self._totals(status.get("services") or []), self._success_time(status))
        for f in FAMILIES:
            family = _empty(f)
            sums: dict[tuple[str, ...], float] = {}
            for labels, value in f.read(scrape):  # summed per label set, as node_exporter does
                sums[labels] = sums.get(labels, 0.0) + float(value)
            for labels, value in sums.items():
                family.add_metric(labels, value)
            yield family


# -- the server ---------------------------------------------------------------------------
def parse_listen(text: str) -> tuple[str, int]:
    """``ADDR:PORT``, ``[IPv6]:PORT`` or ``:PORT`` (every IPv4 address) -> (address, port)."""
    want = "expected ADDR:PORT, [IPv6]:PORT or :PORT"
    host, sep, port = text.strip().rpartition(":")
    if not sep or not port:
        raise ValueError(f"metrics listen address {text!r}: {want}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if ":" not in host:
            raise ValueError(f"metrics listen address {text!r}: brackets are for IPv6 addresses")
    elif ":" in host:
        raise ValueError(f"metrics listen address {text!r}: write an IPv6 address in brackets, [ADDR]:PORT")
    if host:
        try:
            host = str(ipaddress.ip_address(host))
        except ValueError:
            raise ValueError(f"metrics listen address {text!r}: {host!r} is not an IP address") from None
    if not (port.isascii() and port.isdigit()) or int(port) > 0xFFFF:
        raise ValueError(f"metrics listen address {text!r}: port {port!r} is not a number from 0 to 65535")
    return host or ALL_ADDRESSES, int(port)


class MetricsServer:
    """The collector behind prometheus-client's HTTP server (``/metrics``, any path)."""

    def __init__(self, listen: str, status: Callable[[], dict]) -> None:
        self.address: tuple[str, int] = parse_listen(listen)
        self.registry = CollectorRegistry()
        self.registry.register(StatusCollector(status))
        ProcessCollector(registry=self.registry)  # CPU, memory, open files of this process
        self._httpd = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind now (OSError propagates) and serve from a daemon thread."""
        host, port = self.address
        self._httpd, self._thread = start_http_server(port, host, registry=self.registry)
        self.address = (host, int(self._httpd.server_address[1]))

    def close(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(CLOSE_TIMEOUT)
            self._httpd = self._thread = None
