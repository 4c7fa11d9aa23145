"""Small probes used by tests and demos: an HTTP GET and a UDP echo over a given socket
(made in a lab namespace with `Lab.socket`), IPv4/UDP packet building for tunnel probes,
an ARP probe (scapy, meant to run inside a namespace with `Lab.call`), and a frame
capture on an AF_PACKET socket.  Standard library except `arp_probe`.
"""

from __future__ import annotations

import select
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
IPPROTO_TCP = 6
IPPROTO_UDP = 17
TCP_SYN, TCP_ACK = 0x02, 0x10
DEFAULT_TTL = 64


@dataclass
class HttpReply:
    status: int
    headers: dict[str, str] = field(default_factory=dict)  # lower-cased names
    body: bytes = b""


def http_get(sock: socket.socket, ip: str, port: int = 80, path: str = "/",
             timeout: float = 3.0) -> HttpReply:
    """One HTTP/1.1 GET with ``Connection: close`` over `sock` (unconnected TCP socket);
    closes the socket."""
    with sock:
        sock.settimeout(timeout)
        sock.connect((ip, port))
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {ip}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, headers = _head(head)
    return HttpReply(status, headers, body)


def _head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers


def http_keepalive_get(sock: socket.socket, host: str, path: str = "/") -> HttpReply:
    """One GET on an open keep-alive connection (the body framed by Content-Length); the
    connection stays open for the next one."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("the server closed the keep-alive connection")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, headers = _head(head)
    while len(body) < int(headers.get("content-length", 0)):
        body += sock.recv(4096)
    return HttpReply(status, headers, body)


def udp_echo(sock: socket.socket, ip: str, port: int, payload: bytes,
             timeout: float = 2.0) -> bytes:
    """Send `payload` to ip:port over `sock` (UDP) and return the first reply from there;
    closes the socket."""
    with sock:
        sock.settimeout(timeout)
        sock.sendto(payload, (ip, port))
        deadline = time.monotonic() + timeout
        while True:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            data, peer = sock.recvfrom(65535)
            if peer == (ip, port):
                return data


# --- packet building (for IPIP probes) --------------------------------------------------

def inet_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4_header(src: str, dst: str, proto: int, payload_len: int, *, ident: int = 0,
                ttl: int = DEFAULT_TTL) -> bytes:
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + payload_len, ident, 0x4000, ttl, proto,
                      0, socket.inet_aton(src), socket.inet_aton(dst))
    return hdr[:10] + struct.pack("!H", inet_checksum(hdr)) + hdr[12:]


def ipv4_udp(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    """A complete IPv4/UDP packet with correct checksums."""
    length = 8 + len(payload)
    pseudo = struct.pack("!4s4sBBH", socket.inet_aton(src), socket.inet_aton(dst), 0,
                         IPPROTO_UDP, length)
    udp = struct.pack("!HHHH", sport, dport, length, 0) + payload
    csum = inet_checksum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", csum) + udp[8:]
    return ipv4_header(src, dst, IPPROTO_UDP, length) + udp


def ipv4_tcp(src: str, dst: str, sport: int, dport: int, *, flags: int = 0x02,
             seq: int = 1, window: int = 65535) -> bytes:
    """A complete IPv4/TCP segment without payload (default: a SYN) with correct checksums."""
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, flags, window, 0, 0)
    pseudo = struct.pack("!4s4sBBH", socket.inet_aton(src), socket.inet_aton(dst), 0,
                         IPPROTO_TCP, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", inet_checksum(pseudo + tcp)) + tcp[18:]
    return ipv4_header(src, dst, IPPROTO_TCP, len(tcp)) + tcp


def send_ipip(sock: socket.socket, outer_dst: str, inner_packet: bytes) -> None:
    """Send `inner_packet` encapsulated in IPv4 (protocol 4) to `outer_dst`, as an LVS-TUN
    director does.  `sock` is ``socket(AF_INET, SOCK_RAW, 4)``: the kernel adds the outer
    header (source = its route source towards outer_dst)."""
    sock.sendto(inner_packet, (outer_dst, 0))


# --- L2 ---------------------------------------------------------------------------------

def mac_str(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


@dataclass
class Frame:
    dst_mac: str
    src_mac: str
    ethertype: int
    payload: bytes  # from the L3 header on


def capture(sock: socket.socket, match: Callable[[Frame], bool], timeout: float) -> Frame | None:
    """First frame on an AF_PACKET socket for which `match` is true, or None at timeout."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([sock], [], [], left)
        if not ready:
            break
        raw = sock.recv(65535)
        if len(raw) < 14:
            continue
        frame = Frame(mac_str(raw[0:6]), mac_str(raw[6:12]),
                      struct.unpack("!H", raw[12:14])[0], raw[14:])
        if match(frame):
            return frame
    return None


def udp_of(frame: Frame) -> tuple[str, str, int, int, bytes] | None:
    """(src, dst, sport, dport, payload) if the frame is IPv4/UDP, else None."""
    p = frame.payload
    if frame.ethertype != ETH_P_IP or len(p) < 28 or p[9] != IPPROTO_UDP:
        return None
    ihl = (p[0] & 0x0F) * 4
    sport, dport, length = struct.unpack("!HHH", p[ihl:ihl + 6])
    return (socket.inet_ntoa(p[12:16]), socket.inet_ntoa(p[16:20]), sport, dport,
            p[ihl + 8:ihl + length])


def tcp_of(frame: Frame) -> tuple[str, str, int, int, int] | None:
    """(src, dst, sport, dport, flags) if the frame is IPv4/TCP, else None."""
    p = frame.payload
    if frame.ethertype != ETH_P_IP or len(p) < 40 or p[9] != IPPROTO_TCP:
        return None
    ihl = (p[0] & 0x0F) * 4
    sport, dport = struct.unpack("!HH", p[ihl:ihl + 4])
    return socket.inet_ntoa(p[12:16]), socket.inet_ntoa(p[16:20]), sport, dport, p[ihl + 13]


def ethernet(dst_mac: str, src_mac: str, payload: bytes, ethertype: int = ETH_P_IP) -> bytes:
    return bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex(src_mac.replace(":", "")) \
        + struct.pack("!H", ethertype) + payload


def arp_probe(iface: str, target: str, timeout: float = 1.0) -> list[str]:
    """Broadcast ARP who-has `target` on `iface` (scapy) and return the MACs that answered.
    Run inside the namespace that owns `iface` (``lab.call(host, arp_probe, ...)``)."""
    from scapy.all import ARP, Ether, conf, get_if_addr, get_if_hwaddr, srp

    conf.verb = 0
    request = Ether(dst="ff:ff:ff:ff:ff:ff", src=get_if_hwaddr(iface)) / ARP(
        op="who-has", pdst=target, psrc=get_if_addr(iface), hwsrc=get_if_hwaddr(iface))
    answered, _ = srp(request, iface=iface, timeout=timeout, multi=True)
    return sorted({reply[ARP].hwsrc for _, reply in answered})


def arp_probe_many(iface: str, targets: list[str], timeout: float = 1.0) -> dict[str, list[str]]:
    """arp_probe for several targets in one scapy session: target -> answering MACs."""
    return {t: arp_probe(iface, t, timeout) for t in targets}
