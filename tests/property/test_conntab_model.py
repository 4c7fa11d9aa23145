"""The numba connection table against a plain dict model, on random operation sequences.

The model keeps records keyed the way IPVS keys connections and applies the reference's
rules directly (7.3 to 7.7): dead entries are those whose time has passed and that
control nothing; the active/inactive/persistent counts are recomputed from the records.
After every step the real table must hold exactly the model's records, less any dead
ones it has reaped, and agree on every lookup and counter.  The defences (defense.py) are
drawn too: their modes, the once-a-second tick (levels from the fill, the drop_entry scan),
a full table's eviction of a half-open entry, and secure_tcp's state table and timeout.
"""

from __future__ import annotations

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from naive import ConnRecord as Rec
from naive import tcp_next_state as model_next_state
from naive import update_defense_level

from pylvs.dataplane import conntab as ct
from pylvs.dataplane.defense import Defense

CAPACITY = 16  # small, so full tables, probe wrap-around and eviction all happen
N_DESTS = 3
CLIENTS = (0x0A000001, 0x0A000002, 0x0A010001)
VIPS = (0xC0A80164, 0xC0A80165)
RIPS = (0x0A00000B, 0x0A00000C, 0x0A00000D)  # dest i has address RIPS[i]
PORTS = (80, 443, 1024, 40000)
FLOOD_NET = 0xC6120000  # 198.18.0.0/15 (RFC 2544), the spoofed sources of syn_flood
class ConnTableModel(RuleBasedStateMachine):
    @initialize()
    def setup(self):
        self.t = ct.create(CAPACITY, N_DESTS)
        self.last_counts = [(0, 0, 0)] * N_DESTS
        self.recs: dict[int, Rec] = {}
        self.now = 1000.0
        self.defense = Defense()
        self.engaged = {"dropentry": 0, "drop_rate": 0, "secure": 0}
        self.todrop = [0] * ct.TODROP_PKTS
        self.dropped = 0  # entries the model says drop_entry removed

    # -- model helpers -----------------------------------------------------------------
    def n_control(self, rec: Rec) -> int:
        number = next(n for n, r in self.recs.items() if r is rec)
        return sum(1 for r in self.recs.values() if r.control == number)

    def find(self, key) -> int:
        for n, r in self.recs.items():
            if r.key == key:
                return n
        return -1

    def expect_lookup(self, key) -> int:
        """What a lookup must return, applying the reap-or-postpone rule to the model."""
        n = self.find(key)
        if n < 0:
            return -1
        rec = self.recs[n]
        if rec.expires <= self.now:
            if self.n_control(rec) > 0:
                rec.expires = self.now + ct.TEMPLATE_POSTPONE
            else:
                self.drop(n)
                return -1
        return n

    def real_lookup(self, key) -> int:
        proto, caddr, cport, vaddr, vport, template = key
        if template:
            return ct.lookup_template(self.t, proto, caddr, vaddr, vport, self.now)
        return ct.lookup_in(self.t, proto, caddr, cport, vaddr, vport, self.now)

    def drop(self, n: int) -> None:
        self.recs.pop(n)

    def half_open(self, rec: Rec) -> bool:
        return (not rec.template and rec.proto == ct.IPPROTO_TCP and rec.state in ("SYN_RECV", "SYNACK")
                and self.n_control(rec) == 0)  # fmt: skip

    def model_todrop(self, rec: Rec) -> bool:
        """todrop_entry, from the kernel's text: idle 60 s, 1..8 packets, every k-th time."""
        last_use = rec.expires - ct.DEFAULT_TIMEOUTS[rec.state]
        if self.now - last_use < 60 or not 1 <= rec.in_pkts <= 8:
            return False
        k = rec.in_pkts
        self.todrop[k - 1] -= 1
        if self.todrop[k - 1] > 0:
            return False
        self.todrop[k - 1] = k
        return True

    def model_victim(self, rec: Rec) -> bool:
        if rec.template or self.n_control(rec) > 0:
            return False
        if rec.proto == ct.IPPROTO_TCP:
            if rec.state in ("SYN_RECV", "SYNACK"):
                return True
            return rec.state == "ESTABLISHED" and self.model_todrop(rec)
        return self.model_todrop(rec)

    def live_numbers(self) -> set[int]:
        return {int(n) for n in (self.t.entries["live"].nonzero()[0])}

    # -- rules -----------------------------------------------------------------------
    @rule(
        proto=st.sampled_from((ct.IPPROTO_TCP, ct.IPPROTO_UDP)),
        client=st.sampled_from(CLIENTS),
        cport=st.sampled_from(PORTS),
        vip=st.sampled_from(VIPS),
        vport=st.sampled_from(PORTS[:2]),
        dest=st.integers(0, N_DESTS - 1),
        nat=st.booleans(),
        under_template=st.booleans(),
    )
    def new_connection(self, proto, client, cport, vip, vport, dest, nat, under_template):
        control = -1
        if under_template:
            templates = [n for n, r in self.recs.items() if r.template and not r.dead(self.now, self)]
            if templates:
                control = templates[0]
        self.open(proto, client, cport, vip, vport, dest, nat, control)

    @rule(count=st.integers(1, CAPACITY + 4), nat=st.booleans(), seed=st.integers(0, 1 << 16))
    def syn_flood(self, count, nat, seed):
        """Spoofed SYNs from addresses never seen again: half-open entries fill the table."""
        for k in range(count):
            n = self.open(ct.IPPROTO_TCP, FLOOD_NET + (seed + k) % (1 << 16), 1024 + k, VIPS[0], 80,
                          k % N_DESTS, nat, -1)  # fmt: skip
            if n >= 0:
                self.step_tcp(n, ct.TCP_SYN, False)

    def open(self, proto, client, cport, vip, vport, dest, nat, control) -> int:
        """ct.new as the engine calls it, mirrored in the model; the entry or -1."""
        key = (proto, client, cport, vip, vport, False)
        if max(self.real_lookup(key), self.expect_lookup(key)) >= 0:
            return -1  # the engine only creates what it could not find
        flags = (ct.FWD_MASQ if nat else ct.FWD_DROUTE | ct.F_NOOUTPUT)
        could_evict = self.engaged["dropentry"] and any(self.half_open(r) for r in self.recs.values())
        before = self.live_numbers()
        n = ct.new(self.t, proto, client, cport, vip, vport, RIPS[dest], vport, flags=flags, dest=dest,
                   control=control, now=self.now)  # fmt: skip
        self.sync_reaped(before, reused=n)
        if n < 0:
            assert len(self.recs) == CAPACITY and not could_evict
            return -1
        assert n not in self.recs
        state = "UDP" if proto == ct.IPPROTO_UDP else "NONE"
        self.recs[n] = Rec(key, proto, RIPS[dest], vport, dest, False, nat, state,
                           self.now + ct.DEFAULT_TIMEOUTS[state], 0.0, control, not nat)  # fmt: skip
        return n

    @rule(
        proto=st.sampled_from((ct.IPPROTO_TCP, ct.IPPROTO_UDP, ct.IPPROTO_IP)),
        client=st.sampled_from(CLIENTS),
        vip=st.sampled_from(VIPS),
        vport=st.sampled_from((0, 80)),
        dest=st.integers(0, N_DESTS - 1),
        timeout=st.sampled_from((30.0, 300.0)),
    )
    def new_template(self, proto, client, vip, vport, dest, timeout):
        snet = client & 0xFFFFFF00
        key = (proto, snet, 0, vip, vport, True)
        if max(self.real_lookup(key), self.expect_lookup(key)) >= 0:
            return
        before = self.live_numbers()
        n = ct.new(self.t, proto, snet, 0, vip, vport, RIPS[dest], vport, flags=ct.F_TEMPLATE, dest=dest,
                   now=self.now, timeout=timeout)  # fmt: skip
        self.sync_reaped(before, reused=n)
        if n < 0:
            assert len(self.recs) == CAPACITY
            return
        self.recs[n] = Rec(key, proto, RIPS[dest], vport, dest, True, False, "NONE",
                           self.now + timeout, timeout, -1, False, inactive=False)  # fmt: skip

    @precondition(lambda self: self.recs)
    @rule(data=st.data(), flags=st.integers(0, 0x3F), output=st.booleans())
    def tcp_packet(self, data, flags, output):
        tcp = [n for n, r in self.recs.items() if r.proto == ct.IPPROTO_TCP and not r.template]
        if not tcp:
            return
        n = data.draw(st.sampled_from(tcp))
        rec = self.recs[n]
        if output and rec.nat:
            got = self.check_lookup_out(rec.proto, rec.daddr, rec.dport, rec.key[1], rec.key[2])
        else:
            output = False
            got = self.real_lookup(rec.key)
            assert got == self.expect_lookup(rec.key)
        if got < 0:
            return
        self.step_tcp(got, flags, output)

    def step_tcp(self, n, flags, output):
        """One TCP packet of entry ``n``, in the model and the table."""
        rec = self.recs[n]  # a reply key may name another entry (see check_lookup_out)
        direction = "OUTPUT" if output else "INPUT"
        if rec.noout:
            if output:
                rec.noout = False
            else:
                direction = "INPUT_ONLY"
        secure = bool(self.engaged["secure"])
        new_state = model_next_state(direction, flags, rec.state, secure)
        if new_state != rec.state:
            if not rec.inactive and new_state != "ESTABLISHED":
                rec.inactive = True
            elif rec.inactive and new_state == "ESTABLISHED":
                rec.inactive = False
        rec.state = new_state
        timeout = ct.DEFAULT_TIMEOUTS[new_state]
        if secure and new_state in ("SYN_RECV", "SYNACK"):
            timeout = min(timeout, ct.SECURE_HALF_OPEN_TIMEOUT)
        rec.expires = self.now + timeout
        got_state = ct.tcp_transition(self.t, n, ct.DIR_OUTPUT if output else ct.DIR_INPUT, flags, self.now)
        assert ct.STATE_NAMES[got_state] == new_state

    @precondition(lambda self: self.recs)
    @rule(data=st.data())
    def touch(self, data):
        n = data.draw(st.sampled_from(sorted(self.recs)))
        rec = self.recs[n]
        got = self.real_lookup(rec.key)  # the engine always finds an entry before using it
        assert got == self.expect_lookup(rec.key)
        if got < 0:
            return
        ct.touch(self.t, n, self.now)
        rec.expires = self.now + (rec.timeout if rec.template else ct.DEFAULT_TIMEOUTS[rec.state])

    @precondition(lambda self: self.recs)
    @rule(data=st.data())
    def count_in(self, data):
        """A client packet of a connection: the engine bumps in_pkts (drop_entry reads it)."""
        n = data.draw(st.sampled_from(sorted(self.recs)))
        if self.recs[n].template:
            return
        self.t.entries["in_pkts"][n] += 1
        self.recs[n].in_pkts += 1

    @rule(drop_entry=st.sampled_from(range(4)), drop_packet=st.sampled_from(range(4)),
          secure_tcp=st.sampled_from(range(4)), amemthresh=st.sampled_from((0, 1, 4, 17)),
          am_droprate=st.sampled_from((0, 1, 10)))  # fmt: skip
    def set_modes(self, drop_entry, drop_packet, secure_tcp, amemthresh, am_droprate):
        """The operator writes the sysctls (they act at the next tick, as the kernel's)."""
        self.defense = Defense(amemthresh=amemthresh, am_droprate=am_droprate, drop_entry=drop_entry,
                               drop_packet=drop_packet, secure_tcp=secure_tcp)  # fmt: skip

    @rule(start=st.integers(0, 4 * CAPACITY))
    def defense_tick(self, start):
        d = self.defense
        modes = {k: getattr(d, k) for k in ("drop_entry", "drop_packet", "secure_tcp")}
        want_modes, self.engaged = update_defense_level(modes, CAPACITY - len(self.recs), d.amemthresh,
                                                        d.am_droprate)  # fmt: skip
        expect_gone = set()
        if self.engaged["dropentry"]:
            for k in range(max(CAPACITY >> 5, 1)):
                n = (start + k) % CAPACITY
                if n in self.recs and self.model_victim(self.recs[n]):
                    expect_gone.add(n)
        before = self.live_numbers()
        dropped = d.tick(self.t, self.now, start)
        assert {k: getattr(d, k) for k in modes} == want_modes
        assert (self.t.meta[ct.M_DROPENTRY], self.t.meta[ct.M_SECURE]) == (
            self.engaged["dropentry"], self.engaged["secure"])
        if self.engaged["drop_rate"] or modes["drop_packet"] != 3:
            assert self.t.meta[ct.M_DROP_RATE] == self.engaged["drop_rate"]
        assert before - self.live_numbers() == expect_gone and dropped == len(expect_gone)
        for n in expect_gone:
            self.drop(n)
        event(f"defense tick: {len(expect_gone)} dropped, secure {self.engaged['secure']}")
        self.dropped += len(expect_gone)

    @rule(seconds=st.sampled_from((0.5, 5.0, 61.0, 200.0, 1000.0)))
    def advance(self, seconds):
        self.now += seconds

    @rule(budget=st.integers(1, 2 * CAPACITY))
    def sweep(self, budget):
        before = self.live_numbers()
        removed = ct.expire_step(self.t, self.now, budget)
        assert removed == len(before - self.live_numbers())
        self.sync_reaped(before)

    @precondition(lambda self: self.recs)
    @rule(data=st.data())
    def remove(self, data):
        n = data.draw(st.sampled_from(sorted(self.recs)))
        if self.recs[n].template and self.n_control(self.recs[n]) > 0:
            return  # the engine never removes a busy template by hand
        for child in self.recs.values():
            assert child.control != n
        ct.remove(self.t, n)
        self.drop(n)

    @rule(proto=st.sampled_from((ct.IPPROTO_TCP, ct.IPPROTO_UDP)), client=st.sampled_from(CLIENTS),
          cport=st.sampled_from(PORTS), dest=st.integers(0, N_DESTS - 1), vport=st.sampled_from(PORTS[:2]))  # fmt: skip
    def reply_lookup(self, proto, client, cport, dest, vport):
        self.check_lookup_out(proto, RIPS[dest], vport, client, cport)

    def check_lookup_out(self, proto, daddr, dport, caddr, cport) -> int:
        """A reply lookup must find a live NAT entry with this key when there is one.

        One client ip:port talking to two VIPs that map to the same real ip:port gives two
        entries with one reply key (the real server cannot tell them apart either); the
        kernel returns whichever its chain holds first, and so may this table.  Dead
        matches met on the way may be reaped.
        """
        before = self.live_numbers()
        got = ct.lookup_out(self.t, proto, daddr, dport, caddr, cport, self.now)
        self.sync_reaped(before)
        live = {n for n, r in self.recs.items()
                if r.nat and not r.template and r.proto == proto and r.daddr == daddr
                and r.dport == dport and r.key[1] == caddr and r.key[2] == cport
                and r.expires > self.now}  # fmt: skip
        assert got in live if live else got == -1
        return got

    # -- checks ------------------------------------------------------------------------
    def sync_reaped(self, before: set[int], reused: int = -1) -> None:
        """Mirror what a sweep did: records it reaped must have been dead in the model,
        and busy templates it met were postponed by exactly TEMPLATE_POSTPONE."""
        gone = before - self.live_numbers()
        if reused in self.recs:
            gone.add(reused)  # reaped by the eviction scan and handed straight out again
        assert gone <= set(self.recs)
        if gone == {reused} and not self.recs[reused].dead(self.now, self):
            # A full table with drop_entry engaged: one half-open entry made room (only
            # when the sweep found nothing dead to reap).
            assert self.engaged["dropentry"] and self.half_open(self.recs[reused])
            assert not any(r.dead(self.now, self) for r in self.recs.values())
            self.drop(reused)
            self.dropped += 1
            event("drop_entry: a full table evicted a half-open entry")
            return
        # Connections first: one sweep may reap a template right after its last child.
        for n in sorted(gone, key=lambda n: self.recs[n].template):
            rec = self.recs[n]
            assert rec.dead(self.now, self), f"entry {n} was removed while alive: {rec}"
            self.drop(n)
        # A template the sweep met while it was still busy was postponed, even if the
        # child holding it was reaped later in the same sweep.
        for n, rec in self.recs.items():
            if rec.template and rec.expires <= self.now:
                real = float(self.t.entries[n]["expires"])
                if real > self.now:
                    assert real == self.now + ct.TEMPLATE_POSTPONE
                    rec.expires = real

    @invariant()
    def same_entries_and_counters(self):
        if not hasattr(self, "t"):
            return
        assert self.live_numbers() == set(self.recs)
        assert ct.count(self.t) == len(self.recs)
        assert ct.counters(self.t)["drop_entry"] == self.dropped
        active = [0] * N_DESTS
        inactive = [0] * N_DESTS
        persistent = [0] * N_DESTS
        for n, rec in self.recs.items():
            e = self.t.entries[n]
            assert ct.STATE_NAMES[e["state"]] == rec.state or rec.template
            assert e["expires"] == pytest.approx(rec.expires)
            if rec.template:
                persistent[rec.dest] += 1
            elif rec.inactive:
                inactive[rec.dest] += 1
            else:
                active[rec.dest] += 1
            assert e["n_control"] == self.n_control(rec)
        assert [ct.conns(self.t, d) for d in range(N_DESTS)] == list(zip(active, inactive, persistent, strict=True))
        # Rows whose counts changed since the last check were all reported as touched.
        changed = {d for d in range(N_DESTS) if ct.conns(self.t, d) != self.last_counts[d]}
        touched = ct.drain_touched(self.t)
        assert touched is None or changed <= set(touched.tolist())
        self.last_counts = [ct.conns(self.t, d) for d in range(N_DESTS)]


ConnTableModel.TestCase.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)
TestConnTableModel = ConnTableModel.TestCase
