"""Samples -> medians, ratios against A, CPU cost per unit, the issue's targets, markdown.

Pure: no I/O.  Follows ../shared/lab/summarize.py (the reference harness): for every
(config, metric) the median, min and max over runs; the ratio is the median over runs of
value / A *of the same run* (so slow drift of the machine cancels); latency also gets the
median of per-run differences to A ("added").  Cost per unit: whole-box busy CPU time per
connection / request / packet (bulk: busy cores per Gbit/s), and the same for the
forwarding process alone.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

REFERENCE = "A"  # plain kernel forwarding: the denominator of every ratio


@dataclass(frozen=True)
class Metric:
    key: str
    title: str  # column heading
    unit: str
    throughput: bool  # False: a latency (lower is better, no cost per unit)
    cost_scale: float = 1e6  # busy cores * scale / value: us per unit (bulk: cores per Gbit/s)
    cost_unit: str = "us"
    decimals: int = 0


METRICS: dict[str, Metric] = {m.key: m for m in (
    Metric("cps", "new TCP conn/s", "conn/s", True),
    Metric("rps", "HTTP keep-alive req/s", "req/s", True),
    Metric("udp", "UDP 64 B pps delivered", "pps", True),
    Metric("bulk", "TCP bulk Gbit/s (1 stream)", "Gbit/s", True, 1.0, "cores/Gbit/s", 2),
    Metric("lat_p50", "HTTP RTT p50 us", "us", False),
    Metric("lat_p99", "HTTP RTT p99 us", "us", False),
)}
# --metrics names -> the metrics they produce (one wrk -c1 --latency run gives p50 and p99)
METRIC_GROUPS: dict[str, tuple[str, ...]] = {
    "cps": ("cps",), "rps": ("rps",), "udp": ("udp",), "bulk": ("bulk",),
    "lat": ("lat_p50", "lat_p99"),
}

CONFIGS: dict[str, str] = {
    "A": "kernel forwarding, no LB -> rs1",
    "B": "nftables DNAT `numgen inc mod 3` -> VIP",
    "C": "HAProxy `mode tcp` roundrobin -> VIP",
    "D1": "pylvs NAT, per-packet NFQUEUE (`--io nfqueue`) -> VIP",
    "D2": "pylvs NAT, batched native NFQUEUE, engine called from Python (`--io nfq-native`) -> VIP",
    "D3": "pylvs NAT, the whole loop in C, engine as a cfunc (`--io nfq-loop`) -> VIP",
    "D3W": "pylvs NAT, two C loops on two queues, one connection table (`--io nfq-loop --workers 2`) -> VIP",
    "D3F": "pylvs NAT as D3, HTTP a firewall-mark service: replies take the classify pass (`--io nfq-loop`) -> VIP",
    "D4": "pylvs NAT, the C loop on AF_XDP sockets fed by its XDP program (`--io afxdp`) -> VIP",
    "D4B": "pylvs NAT on AF_XDP, busy polling 200 us (`--io afxdp --busy-poll 200`) -> VIP",
    "D4W": "pylvs NAT on AF_XDP, two C loops on two receive queues, one connection table "
           "(`--io afxdp --workers 2`, lab with 2-queue director veths) -> VIP",
    "DR": "pylvs direct routing, the C loop over an AF_PACKET tap (`--io afpacket`) -> VIP",
    "DRL": "pylvs direct routing, the C loop over NFQUEUE (`--io nfq-loop`) -> VIP",
    "DRX": "pylvs direct routing, the C loop on AF_XDP (`--io afxdp`) -> VIP",
    "DRXB": "pylvs direct routing on AF_XDP, busy polling 200 us (`--io afxdp --busy-poll 200`) -> VIP",
}
PYLVS_CONFIGS = ("D1", "D2", "D3", "D3W", "D3F", "D4", "D4B", "D4W", "DR", "DRL", "DRX", "DRXB")
DR_CONFIGS = ("DR", "DRL", "DRX", "DRXB")  # measured on the `direct` lab
XDP_CONFIGS = ("D4", "D4B", "D4W", "DRX", "DRXB")  # judged against the AF_XDP latency goal


@dataclass(frozen=True)
class Sample:
    """One measurement: `value` None when it failed or does not apply (`note` says why)."""

    run: int
    config: str
    metric: str
    value: float | None
    busy_cores: float | None = None  # whole box, /proc/stat
    fwd_cpu_pct: float | None = None  # forwarding process tree, % of one core; None = kernel
    note: str = ""
    fwd_sys_pct: float | None = None  # the part of fwd_cpu_pct spent in the kernel (stime)


@dataclass
class Cell:
    """The summary of one (config, metric) over runs."""

    median: float
    lo: float
    hi: float
    runs: int
    ratio: float | None = None  # median of per-run value / A
    added: float | None = None  # median of per-run value - A (latency)
    box_cost: float | None = None  # median of per-run busy cores * scale / value
    box_cost_ratio: float | None = None  # median of per-run box_cost / A's box_cost
    fwd_pct: float | None = None  # median forwarding-process CPU, % of one core
    fwd_sys_pct: float | None = None  # median of its system (kernel) part
    fwd_cost: float | None = None  # median of per-run fwd cores * scale / value
    notes: list[str] = field(default_factory=list)


def _median(xs: Iterable[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return statistics.median(vals) if vals else None


def _cost(sample: Sample, cores: float | None, scale: float) -> float | None:
    if sample.value is None or cores is None or sample.value <= 0:
        return None
    return cores * scale / sample.value


def summarize(samples: Sequence[Sample]) -> dict[tuple[str, str], Cell | None]:
    """(config, metric) -> Cell, or None when no run produced a value (notes are lost
    then: use `notes_of`)."""
    by_key: dict[tuple[str, str], list[Sample]] = defaultdict(list)
    for s in samples:
        by_key[(s.config, s.metric)].append(s)
    out: dict[tuple[str, str], Cell | None] = {}
    for (cfg, metric), group in by_key.items():
        m = METRICS[metric]
        ok = [s for s in group if s.value is not None]
        if not ok:
            out[(cfg, metric)] = None
            continue
        vals = [s.value for s in ok]
        ref = {s.run: s for s in by_key.get((REFERENCE, metric), []) if s.value is not None}
        cell = Cell(statistics.median(vals), min(vals), max(vals), len(ok),
                    notes=[s.note for s in group if s.note])
        cell.ratio = _median(s.value / ref[s.run].value for s in ok
                             if s.run in ref and ref[s.run].value)
        if not m.throughput:
            cell.added = _median(s.value - ref[s.run].value for s in ok if s.run in ref)
        else:
            cell.box_cost = _median(_cost(s, s.busy_cores, m.cost_scale) for s in ok)
            ratios = []
            for s in ok:
                mine = _cost(s, s.busy_cores, m.cost_scale)
                a = _cost(ref[s.run], ref[s.run].busy_cores, m.cost_scale) if s.run in ref else None
                if mine is not None and a:
                    ratios.append(mine / a)
            cell.box_cost_ratio = _median(ratios)
            cell.fwd_cost = _median(
                _cost(s, s.fwd_cpu_pct / 100.0 if s.fwd_cpu_pct is not None else None, m.cost_scale)
                for s in ok)
        cell.fwd_pct = _median(s.fwd_cpu_pct for s in ok)
        cell.fwd_sys_pct = _median(s.fwd_sys_pct for s in ok)
        out[(cfg, metric)] = cell
    return out


def notes_of(samples: Sequence[Sample], config: str, metric: str) -> list[str]:
    return list(dict.fromkeys(s.note for s in samples
                              if s.config == config and s.metric == metric and s.note))


# --- the targets (issue 11, "Acceptance": ratio to A in the same run) -----------------

@dataclass(frozen=True)
class Target:
    metric: str
    label: str
    kind: str  # "ratio_ge": ratio >= threshold; "added_le": added latency <= threshold (us)
    threshold: float
    anchors: tuple[str, str, str]  # nft DNAT, HAProxy, minimal C NFQUEUE NAT (../shared/lab)
    xdp_threshold: float | None = None  # the AF_XDP configurations' own goal, where stricter

    @property
    def goal(self) -> str:
        if self.kind == "ratio_ge":
            return f">= {self.threshold:.2f}"
        xdp = f" (AF_XDP <= {self.xdp_threshold:.0f} us)" if self.xdp_threshold is not None else ""
        return f"<= {self.threshold:.0f} us{xdp}"

    def threshold_for(self, config: str | None) -> float:
        if config in XDP_CONFIGS and self.xdp_threshold is not None:
            return self.xdp_threshold
        return self.threshold


TARGETS: tuple[Target, ...] = (  # issue 11's
    Target("cps", "new TCP connections/s", "ratio_ge", 0.85, ("0.78", "0.64", "0.80")),
    Target("udp", "64-byte UDP packets/s", "ratio_ge", 1.0, ("0.67", "n/a", "1.04")),
    Target("rps", "keep-alive requests/s", "ratio_ge", 0.95, ("0.83", "0.68", "0.77")),
    Target("bulk", "bulk TCP", "ratio_ge", 0.70, ("1.02", "0.38", "0.06 (0.73 with GSO whole)")),
    Target("lat_p50", "added RTT p50", "added_le", 30.0, ("+4 us", "+26 us", "+25 us"), xdp_threshold=25.0),
    Target("lat_p99", "added RTT p99", "added_le", 80.0, ("+6 us", "+34 us", "+41 us")),
)


def target_value(target: Target, cell: Cell | None) -> float | None:
    if cell is None:
        return None
    return cell.ratio if target.kind == "ratio_ge" else cell.added


def target_met(target: Target, cell: Cell | None, config: str | None = None) -> bool | None:
    """True / False, or None when there is nothing to judge (not run, no A)."""
    v = target_value(target, cell)
    if v is None:
        return None
    # Compare at the displayed precision, so a printed "0.85" never reads "not met".
    if target.kind == "ratio_ge":
        return round(v, 2) >= target.threshold_for(config)
    return round(v) <= target.threshold_for(config)


def _fmt_target_value(target: Target, v: float) -> str:
    return f"{v:.2f}" if target.kind == "ratio_ge" else f"{v:+.0f} us"


def target_cell(target: Target, cell: Cell | None, status: str | None = None, config: str | None = None) -> str:
    if status:
        return "not run"
    met = target_met(target, cell, config)
    if met is None:
        return "not measured"
    return f"{_fmt_target_value(target, target_value(target, cell))} {'met' if met else 'not met'}"


# --- markdown ------------------------------------------------------------------------------

def fmt_value(metric: str, v: float | None) -> str:
    if v is None:
        return "n/a"
    return f"{v:,.{METRICS[metric].decimals}f}"


def headline_cell(metric: str, cell: Cell | None, config: str, notes: Sequence[str] = ()) -> str:
    """``median [min–max] · **ratio**`` (latency: ``median [min–max] (+added)``)."""
    if cell is None:
        return f"n/a ({notes[0]})" if notes else "n/a"
    text = fmt_value(metric, cell.median)
    if cell.runs > 1 and cell.lo != cell.hi:
        text += f" [{fmt_value(metric, cell.lo)}–{fmt_value(metric, cell.hi)}]"
    if config == REFERENCE:
        return text
    if METRICS[metric].throughput:
        return text + (f" · **{cell.ratio:.2f}**" if cell.ratio is not None else " · n/a")
    return text + (f" ({cell.added:+.0f})" if cell.added is not None else "")


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def render(samples: Sequence[Sample], configs: Sequence[str], metrics: Sequence[str],
           status: Mapping[str, str], *, runs: int, dur: float, command: str,
           env: Mapping[str, str] = (), caveats: Sequence[str] = ()) -> str:
    """The report: headline table, ratio table, cost table, targets, command, versions.
    `status`: config -> "not run: ..." for configs that never came up."""
    cells = summarize(samples)
    env = dict(env)
    out = ["# pylvs forwarding benchmark (`make bench-forward`)", ""]
    out.append(f"{runs} run(s) of {dur:g} s per measurement, configurations interleaved within each "
               "run. Values: median [min–max] over runs; **ratio** = median over runs of value / A "
               "in the same run; (+N) = added latency vs A in us (median of per-run differences).")
    out.append("")
    out.append("## Headline table")
    out.append("")
    header = ["config"] + [METRICS[m].title for m in metrics]
    rows = []
    for cfg in configs:
        name = f"**{cfg}** {CONFIGS.get(cfg, cfg)}"
        if cfg in status:
            rows.append([name, status[cfg]] + ["–"] * (len(metrics) - 1))
            continue
        rows.append([name] + [headline_cell(m, cells.get((cfg, m)), cfg, notes_of(samples, cfg, m))
                              for m in metrics])
    out += _table(header, rows)
    out.append("")

    out.append("## Ratio vs A (latency: RTT ratio, > 1 = slower)")
    out.append("")
    rows = []
    for cfg in configs:
        row = [cfg]
        for m in metrics:
            c = cells.get((cfg, m))
            row.append(f"{c.ratio:.2f}" if c is not None and c.ratio is not None else "n/a")
        rows.append(row)
    out += _table(["config"] + list(metrics), rows)
    out.append("")

    thr = [m for m in metrics if METRICS[m].throughput]
    if thr:
        out.append("## CPU cost per unit")
        out.append("")
        out.append("Whole-box busy CPU per unit (ratio vs A), and the forwarding process tree alone "
                   "(HAProxy or pylvs; utime+stime from /proc/PID/stat): % of one core, (sys N) the "
                   "part of it spent in the kernel on the process's behalf (system calls, and the "
                   "packet work a send does inline), cost per unit. "
                   "\"kernel\": the forwarding is softirq work with no process of its own. The box "
                   "figure counts everything on the machine, other load included.")
        out.append("")
        header = ["config"]
        for m in thr:
            header += [f"{m}: box/unit", f"{m}: fwd % · fwd/unit"]
        rows = []
        for cfg in configs:
            row = [cfg]
            for m in thr:
                c = cells.get((cfg, m))
                unit = METRICS[m].cost_unit
                if c is None or c.box_cost is None:
                    row += ["n/a", "n/a"]
                    continue
                box = f"{c.box_cost:.2f} {unit}"
                if c.box_cost_ratio is not None:
                    box += f" ({c.box_cost_ratio:.2f})"
                sys_ = f" (sys {c.fwd_sys_pct:.0f})" if c.fwd_sys_pct is not None else ""
                fwd = "kernel" if c.fwd_pct is None else (
                    f"{c.fwd_pct:.0f} %{sys_} · {c.fwd_cost:.2f} {unit}" if c.fwd_cost is not None
                    else f"{c.fwd_pct:.0f} %{sys_}")
                row += [box, fwd]
            rows.append(row)
        out += _table(header, rows)
        out.append("")

    pylvs_cfgs = [c for c in configs if c in PYLVS_CONFIGS]
    out.append("## Targets (issue 11; ratio to A in the same run)")
    out.append("")
    out.append("Anchors are the issue's numbers from ../shared/lab/RESULTS.md; B and C are this run's "
               "ratios for comparison; each pylvs configuration is judged met / not met.")
    out.append("")
    header = ["measure", "goal", "anchors: nft DNAT / HAProxy / C NFQUEUE NAT"]
    header += [f"{c} (this run)" for c in ("B", "C") if c in configs] + pylvs_cfgs
    rows = []
    for t in TARGETS:
        row = [t.label, t.goal, " / ".join(t.anchors)]
        if t.metric not in metrics:
            rows.append(row + ["not measured"] * (len(header) - 3))
            continue
        for c in ("B", "C"):
            if c in configs:
                v = None if c in status else target_value(t, cells.get((c, t.metric)))
                row.append("n/a" if v is None else _fmt_target_value(t, v))
        row += [target_cell(t, cells.get((c, t.metric)), status.get(c), c) for c in pylvs_cfgs]
        rows.append(row)
    out += _table(header, rows)
    out.append("")
    for c in pylvs_cfgs:
        if c in status:
            out.append(f"- {c}: {status[c]}")
    if any(c in status for c in pylvs_cfgs):
        out.append("")

    if caveats:
        out.append("## Notes")
        out.append("")
        out += [f"- {c}" for c in caveats]
        out.append("")
    out.append("## Command")
    out.append("")
    out.append("```sh")
    out.append(command)
    out.append("```")
    out.append("")
    if env:
        out.append("## Environment and tool versions")
        out.append("")
        out += [f"- {k}: {v}" for k, v in env.items()]
        out.append("")
    failed = [s for s in samples if s.note]
    if failed:
        out.append("## Measurement notes")
        out.append("")
        out += [f"- run {s.run} {s.config} {s.metric}: {s.note}" for s in failed]
        out.append("")
    return "\n".join(out)
