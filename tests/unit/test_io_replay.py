"""The replay adapter (pylvs.dataplane.io.replay): the golden packet table through
``replay``, pcap round trips (Ethernet and raw IP captures in, raw IP out) and the
``python -m pylvs.dataplane.io.replay`` command line."""

from __future__ import annotations

import pytest
from golden import (
    CASES,
    CLIENT,
    DIRECTOR,
    DR_CF,
    HANDSHAKE,
    NAT_CF,
    NOW,
    TUN_CF,
    Case,
    Director,
    Step,
    _check_step,
    ip2int,
)
from scapy.layers.inet import IP
from scapy.layers.l2 import ARP, CookedLinux, Ether
from scapy.utils import rdpcap, wrpcap

from pylvs.dataplane import engine as en
from pylvs.dataplane.io import replay as rp


def _handle(d: Director) -> rp.Handle:
    return rp.engine_handle(d.tables, d.ct, d.counters, tunnel_src=ip2int(DIRECTOR), clock=lambda: NOW)


def _check(d: Director, step: Step, o: rp.Outcome, k: int, states: bool) -> None:
    if o.verdict == "drop":
        assert o.output is None and o.packet is None
        out = bytes(step.packet)  # the golden table says "unchanged" for drops
    else:
        assert o.output is not None and bytes(o.packet) == o.output
        out = o.output
    checked = step if states else Step(step.packet, step.expected, step.verdict, step.counter)
    _check_step(d, checked, (en.VERDICT_NAMES.index(o.verdict), o.reason, o.dest_row, out), k)


@pytest.mark.parametrize("case", CASES, ids=[c.desc for c in CASES])
def test_golden_table_through_replay(case: Case):
    """One replay per step, so the entry's TCP state is checked after each."""
    d = Director(case.cf, case.capacity)
    handle = _handle(d)
    for k, step in enumerate(case.steps):
        [o] = rp.replay([step.packet], handle, marks=[step.mark])
        assert o.index == 0
        _check(d, step, o, k, states=True)


@pytest.mark.parametrize("case", CASES, ids=[c.desc for c in CASES])
def test_golden_table_through_replay_one_batch(case: Case):
    d = Director(case.cf, case.capacity)
    steps = case.steps
    outcomes = rp.replay([bytes(s.packet) for s in steps], _handle(d), marks=[s.mark for s in steps],
                         batch=len(steps))
    assert [o.index for o in outcomes] == list(range(len(steps)))
    for k, (step, o) in enumerate(zip(steps, outcomes, strict=True)):
        _check(d, step, o, k, states=False)


def _expected(step: Step) -> bytes:
    return bytes(step.packet) if step.expected is None else bytes(step.expected)


def test_pcap_round_trip_ethernet_in_raw_ip_out(tmp_path):
    """Ethernet frames in a pcap (with an ARP frame among them) -> replay -> write_pcap ->
    read back: the forwarded packets, byte for byte, in order."""
    steps = HANDSHAKE
    frames = [Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / s.packet for s in steps]
    frames.insert(1, Ether(src="02:00:00:00:00:01", dst="ff:ff:ff:ff:ff:ff") / ARP(pdst="192.0.2.10", psrc=CLIENT))
    src = tmp_path / "in.pcap"
    wrpcap(str(src), frames)
    d = Director(NAT_CF)
    outcomes = rp.replay(src, _handle(d))
    assert len(outcomes) == len(steps) + 1
    assert (outcomes[1].verdict, outcomes[1].reason) == ("drop", "parse_not_ipv4")
    del outcomes[1]
    assert [o.reason for o in outcomes] == [s.counter for s in steps]
    dst = tmp_path / "out.pcap"
    assert rp.write_pcap(outcomes, dst) == len(steps)
    back = rdpcap(str(dst))
    assert [bytes(p) for p in back] == [_expected(s) for s in steps]
    # A raw-IP capture (what write_pcap writes) replays too: the NAT outputs are client
    # -> RIP and RIP -> client packets, which a fresh director passes (no VIP in them).
    again = rp.replay(dst, _handle(Director(NAT_CF)))
    assert len(again) == len(steps) and {o.verdict for o in again} == {"pass"}


def test_cooked_capture_and_tunnel_output(tmp_path):
    """Linux cooked capture (tcpdump -i any) in; IPIP packets out, written and read back."""
    case = next(c for c in CASES if c.cf == TUN_CF)
    src = tmp_path / "any.pcap"
    wrpcap(str(src), [CookedLinux() / s.packet for s in case.steps])
    outcomes = rp.replay(src, _handle(Director(TUN_CF)), batch=2)
    assert [o.verdict for o in outcomes] == ["tunnel", "tunnel"]
    dst = tmp_path / "tun.pcap"
    rp.write_pcap(outcomes, dst)
    assert [bytes(p) for p in rdpcap(str(dst))] == [_expected(s) for s in case.steps]


def test_ethernet_padding_is_not_part_of_the_packet():
    syn = HANDSHAKE[0].packet
    frame = Ether(bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / syn) + b"\0" * 6)  # 60 bytes
    assert rp.ip_bytes(frame) == bytes(syn)
    assert rp.ip_bytes(bytes(syn) + b"\0" * 6) == bytes(syn) + b"\0" * 6  # raw bytes are taken as given


def test_pass_packets_written_only_when_asked(tmp_path):
    d = Director(DR_CF)
    outcomes = rp.replay([IP(src="203.0.113.7", dst="192.0.2.77") / b"x"], _handle(d))
    assert outcomes[0].verdict == "pass"
    assert rp.write_pcap(outcomes, tmp_path / "a.pcap") == 0
    assert rp.write_pcap(outcomes, tmp_path / "b.pcap", include_pass=True) == 1


def test_bad_arguments():
    d = Director(NAT_CF)
    with pytest.raises(ValueError, match="batch"):
        rp.replay([], _handle(d), batch=0)
    with pytest.raises(ValueError, match="marks"):
        rp.replay([HANDSHAKE[0].packet], _handle(d), marks=[0, 0])
    assert rp.replay([], _handle(d)) == []


def test_command_line(tmp_path, capsys):
    cf = tmp_path / "lvs.cf"
    cf.write_text(NAT_CF)
    pcap = tmp_path / "in.pcap"
    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    arp = Ether(src="02:00:00:00:00:01", dst="ff:ff:ff:ff:ff:ff") / ARP(pdst="192.0.2.10", psrc=CLIENT)
    wrpcap(str(pcap), [eth / s.packet for s in HANDSHAKE[:2]] + [arp])
    out = tmp_path / "out.pcap"
    assert rp.main(["-c", str(cf), str(pcap), "-o", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "#1 nat_in 203.0.113.7:40000 -> 10.0.0.2:8080 verdict nat"
    assert lines[1] == "#2 nat_out 192.0.2.10:80 -> 203.0.113.7:40000 verdict nat"
    assert lines[2].startswith("#3 parse_not_ipv4 ") and lines[2].endswith("verdict drop")
    assert lines[3] == "# 3 packets: nat_in 1, nat_out 1, parse_not_ipv4 1"
    assert lines[4] == f"# wrote 2 forwarded packets to {out}"
    assert [bytes(p) for p in rdpcap(str(out))] == [_expected(s) for s in HANDSHAKE[:2]]


def test_command_line_tunnel_line_and_errors(tmp_path, capsys):
    cf = tmp_path / "lvs.cf"
    cf.write_text(TUN_CF)
    pcap = tmp_path / "in.pcap"
    wrpcap(str(pcap), [next(c for c in CASES if c.cf == TUN_CF).steps[0].packet])
    assert rp.main(["-c", str(cf), "--tunnel-src", DIRECTOR, str(pcap)]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first == f"#1 tunnel {DIRECTOR} -> 10.0.0.2 (ipip 203.0.113.7:40000 -> 192.0.2.10:80) verdict tunnel"
    bad = tmp_path / "bad.cf"
    bad.write_text("network = sideways\n")
    assert rp.main(["-c", str(bad), str(pcap)]) == 2
    assert rp.main(["-c", str(cf), str(tmp_path / "missing.pcap")]) == 2
    assert rp.main(["-c", str(tmp_path / "missing.cf"), str(pcap)]) == 2
