"""Gratuitous ARP (pylvs.ha.garp, pylvs send-arp): the frame byte for byte, announce()'s loop."""

from __future__ import annotations

import logging
import threading

import pytest
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Padding

from pylvs.cli import main as cli
from pylvs.ha import garp

MAC = bytes.fromhex("027700000102")
VIP = "10.77.1.100"


def test_frame_matches_scapy_built_independently() -> None:
    expected = (Ether(dst="ff:ff:ff:ff:ff:ff", src="02:77:00:00:01:02", type=0x0806)
                / ARP(hwtype=1, ptype=0x0800, hwlen=6, plen=4, op=2, hwsrc="02:77:00:00:01:02", psrc=VIP,
                      hwdst="02:77:00:00:01:02", pdst=VIP)
                / Padding(load=bytes(18)))
    assert garp.garp_frame(MAC, VIP) == bytes(expected)


def test_frame_matches_the_reference_table() -> None:
    f = garp.garp_frame(MAC, VIP)
    assert len(f) == 60
    vip = bytes([10, 77, 1, 100])
    assert f[0:6] == b"\xff" * 6  # Ethernet destination: broadcast
    assert f[6:12] == MAC  # Ethernet source
    assert f[12:14] == b"\x08\x06"  # EtherType ARP
    assert f[14:16] == b"\x00\x01"  # hardware type Ethernet
    assert f[16:18] == b"\x08\x00"  # protocol type IPv4
    assert f[18:20] == b"\x06\x04"  # hlen / plen
    assert f[20:22] == b"\x00\x02"  # opcode 2: reply
    assert f[22:28] == MAC and f[28:32] == vip  # sender
    assert f[32:38] == MAC and f[38:42] == vip  # target: the same (RFC 2002-style)
    assert f[42:60] == bytes(18)  # padding


def test_frame_destination_and_errors() -> None:
    assert garp.garp_frame(MAC, VIP, dst=MAC)[0:6] == MAC
    with pytest.raises(ValueError):
        garp.garp_frame(b"\x00" * 5, VIP)
    with pytest.raises(ValueError):
        garp.garp_frame(MAC, "10.77.1.300")


@pytest.mark.parametrize("text", ["027700000102", "02:77:00:00:01:02", "02:77:0:0:1:2", "02:77:00:00:01:02".upper()])
def test_parse_mac_accepts_send_arp_forms(text: str) -> None:
    assert garp.parse_mac(text) == MAC


@pytest.mark.parametrize("text", ["", "0277000001", "02:77:00:00:01", "zz7700000102", "02-77-00-00-01-02",
                                  "02:77:00:00:01:102"])
def test_parse_mac_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="bad MAC"):
        garp.parse_mac(text)


class FakeSender:
    """Records what announce() sends; fails on the addresses in `failing`."""

    opened: list[str] = []
    sent: list[tuple[str, str]] = []
    closed: list[str] = []
    failing: set[str] = set()
    missing: set[str] = set()
    after_send: threading.Event | None = None

    def __init__(self, device: str):
        if device in self.missing:
            raise OSError(19, f"gratuitous ARP on {device}: No such device")
        self.device = device
        self.opened.append(device)

    def send(self, ip: str) -> None:
        if ip in self.failing:
            raise OSError(100, "Network is down")
        self.sent.append((ip, self.device))

    def close(self) -> None:
        self.closed.append(self.device)


@pytest.fixture
def fake() -> type[FakeSender]:
    FakeSender.opened, FakeSender.sent, FakeSender.closed = [], [], []
    FakeSender.failing, FakeSender.missing = set(), set()
    return FakeSender


def test_announce_rounds_dedupe_and_labels(fake: type[FakeSender], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pylvs.ha.garp")
    addresses = [("10.77.2.254", "eth1:1"), (VIP, "eth0:1"), (VIP, "eth0:2"), ("10.77.1.101", "eth0")]
    n = garp.announce(addresses, count=3, interval=0, sender_factory=fake)
    assert n == 9
    round_ = [("10.77.2.254", "eth1"), (VIP, "eth0"), ("10.77.1.101", "eth0")]
    assert fake.sent == round_ * 3  # one round of every address, then the next
    assert sorted(fake.opened) == ["eth0", "eth1"]  # one sender per device, labels stripped
    assert sorted(fake.closed) == ["eth0", "eth1"]
    assert caplog.messages[-1] == "gratuitous lvs arps finished"


def test_announce_defaults_are_pulses() -> None:
    assert (garp.DEFAULT_COUNT, garp.DEFAULT_INTERVAL) == (5, 1.0)


def test_announce_stop_event(fake: type[FakeSender]) -> None:
    stop = threading.Event()

    class Stopping(FakeSender):
        def send(self, ip: str) -> None:
            super().send(ip)
            stop.set()  # the role is lost after the first frame

    n = garp.announce([(VIP, "eth0")], count=5, interval=30.0, stop=stop, sender_factory=Stopping)
    assert n == 1 and fake.sent == [(VIP, "eth0")]  # stop.wait() returned at once, no second round

    fake.sent.clear()
    assert garp.announce([(VIP, "eth0")], count=5, interval=0, stop=stop, sender_factory=fake) == 0


def test_announce_failed_send_is_logged_not_raised(fake: type[FakeSender], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pylvs.ha.garp")
    fake.failing = {"10.77.1.101"}
    fake.missing = {"eth9"}
    n = garp.announce([(VIP, "eth0"), ("10.77.1.101", "eth0"), ("10.77.9.1", "eth9:1")], count=2, interval=0,
                      sender_factory=fake)
    assert n == 2 and fake.sent == [(VIP, "eth0")] * 2
    failed = [r for r in caplog.records if "10.77.1.101 on eth0 failed" in r.getMessage()]
    assert len(failed) == 2 and all(r.levelno == logging.WARNING for r in failed)
    missing = [r for r in caplog.records if "cannot use eth9" in r.getMessage()]
    assert len(missing) == 1 and "No such device" in missing[0].getMessage()
    assert caplog.messages[-1] == "gratuitous lvs arps finished"


def test_sender_missing_device_says_which() -> None:
    try:
        sock = garp.socket.socket(garp.socket.AF_PACKET, garp.socket.SOCK_RAW, 0)
    except PermissionError:
        pytest.skip("AF_PACKET needs CAP_NET_RAW (root)")
    with pytest.raises(OSError, match="nosuchdev0"):
        garp.GarpSender("nosuchdev0", sock=sock)
    assert sock.fileno() == -1  # closed on failure


def test_cli_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["send-arp", VIP, "zz", "10.77.1.255", "ffffffffffff"],
                 ["send-arp", "10.77.1.999", "027700000102", "10.77.1.255", "ffffffffffff"],
                 ["send-arp", VIP, "027700000102", "10.77.1.255", "ffffffffffff", "--count", "0"],
                 ["send-arp", VIP, "027700000102", "10.77.1.255"]):
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        assert exc.value.code == 2
    assert "bad MAC address 'zz'" in capsys.readouterr().err


def test_cli_missing_device_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(["send-arp", "-i", "nosuchdev0", VIP, "027700000102", "10.77.1.255", "ffffffffffff"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "nosuchdev0" in err and err.startswith("pylvs send-arp:")
