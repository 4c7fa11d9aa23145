"""A director in-process for unit tests: a recording netctl (netctl.DryRun), packets
fed through ``FeedAdapter`` in the director's own dataplane thread, probes that always
pass.  Shared by tests/unit/test_director.py and test_metrics.py."""

from __future__ import annotations

import queue
import threading
import time

import pylvs.netctl as NETCTL
from pylvs.dataplane import engine as en
from pylvs.director import Director
from pylvs.health.probes import CheckResult
from pylvs.health.runner import HealthRunner


class FeedAdapter:
    """Packets in through ``send``; each batch's verdicts and bytes come back."""

    def __init__(self, handle):
        self.handle = handle
        self.inbox: queue.Queue = queue.Queue()
        self.out: queue.Queue = queue.Queue()
        self.closed = False

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                packets = self.inbox.get(timeout=0.05)
            except queue.Empty:
                continue
            b = en.batch_from_packets([bytes(p) for p in packets])
            v = self.handle(b)
            self.out.put([(en.VERDICT_NAMES[v.verdict[i]], en.packet_bytes(b, i)) for i in range(b.n)])

    def send(self, packets, timeout=10.0):
        self.inbox.put(packets)
        return self.out.get(timeout=timeout)

    def stats(self):
        return {"fed": True}

    def close(self):
        self.closed = True


async def always_up(spec, *, clock=time.monotonic):
    """A probe that never touches the network: every server answers."""
    return CheckResult(True, "ok", 0.0)


def healthy(config, on_change):
    return HealthRunner(config, on_change, probe=always_up)


def feed_directors(tmp_path, default_text: str | None = None):
    """The body of a fixture: ``make(text, **kw) -> (Director, FeedAdapter)``, started;
    each stopped afterwards."""
    made = []

    def make(text: str | None = default_text, **kw) -> tuple[Director, FeedAdapter]:
        cf = tmp_path / "lvs.cf"
        if text is not None:  # None: a bare director (pylvs lvs --bare)
            cf.write_text(text)
        feed = {}

        def factory(_d, handle):
            feed["a"] = FeedAdapter(handle)
            return feed["a"]

        kw.setdefault("make_health", healthy)
        kw.setdefault("capacity", 1024)
        ctl = kw.pop("ctl", None) or NETCTL.DryRun()
        d = Director(None if text is None else str(cf), io="feed", ctl=ctl, adapters={"feed": factory},
                     status_path=str(tmp_path / "status.json"), **kw)  # fmt: skip
        d.start()
        made.append(d)
        return d, feed.get("a")

    yield make
    for d in made:
        if not d.stop_event.is_set():
            d.stop()
