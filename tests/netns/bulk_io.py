"""Bulk transfers through a lab's VIP, checked end to end: an upload the real server
hashes (``SHA256_PATH``) and a download of ``BULK_PATH`` hashed here, both against
``bulk_chunks``, the bytes both sides generate."""

from __future__ import annotations

import hashlib

from pylvs.lab import topology as topo
from pylvs.lab.servers import BULK_PATH, SHA256_PATH, bulk_chunks

TIMEOUT = 20.0


def expected(size: int) -> str:
    h = hashlib.sha256()
    for chunk in bulk_chunks(size):
        h.update(chunk)
    return h.hexdigest()


def upload(lab, size: int, host: str = "client1") -> tuple[str, int, str]:
    """POST ``size`` bytes to the VIP: (the server's name, bytes it got, their sha256)."""
    with lab.socket(host) as s:
        s.settimeout(TIMEOUT)
        s.connect((topo.VIP, topo.HTTP_PORT))
        s.sendall(f"POST {SHA256_PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n"
                  "Connection: close\r\n\r\n".encode())
        for chunk in bulk_chunks(size):
            s.sendall(chunk)
        reply = b""
        while part := s.recv(65536):
            reply += part
    name, got, digest = reply.partition(b"\r\n\r\n")[2].decode().split()
    return name, int(got), digest


def download(lab, size: int, host: str = "client1") -> tuple[int, str]:
    """GET ``size`` bytes from the VIP: (bytes received, their sha256)."""
    got = hashlib.sha256()
    n = 0
    with lab.socket(host) as s:
        s.settimeout(TIMEOUT)
        s.connect((topo.VIP, topo.HTTP_PORT))
        s.sendall(f"GET {BULK_PATH}{size} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(65536)
        body = data.partition(b"\r\n\r\n")[2]
        got.update(body)
        n += len(body)
        while chunk := s.recv(1 << 20):
            got.update(chunk)
            n += len(chunk)
    return n, got.hexdigest()
