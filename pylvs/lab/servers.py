"""The real servers' test services, standard library only.

Run inside a real server's namespace by the lab::

    ip netns exec NS python -m pylvs.lab.servers --name rs1

* HTTP on port 80: every GET answers ``200`` with body ``rs1\\n`` and header
  ``X-Real-Server: rs1``, so a client sees which real server answered.  HTTP/1.1 with
  Content-Length, so keep-alive load generators work too.
* ``GET /bytes/N``: N bytes of ``bulk_chunks(N)`` (transfer-integrity tests).
* ``POST /sha256``: answers ``rs1 LENGTH SHA256`` of the body it received (uploads).
* UDP echo on port 9000: the reply is ``b"rs1 " + datagram``, sent from the address
  the datagram was addressed to (VIP or RIP).

Both bind 0.0.0.0, so they answer on the RIP and on the VIP (DR/TUN).  When both sockets
listen the process prints ``ready`` on stdout and then points stdout at /dev/null (the
lab reads that line as the readiness check; the lab's owner may exit afterwards).
SIGTERM ends it (default action: nothing to clean).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import socket
import struct
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HTTP_PORT = 80
UDP_ECHO_PORT = 9000
HEADER = "X-Real-Server"
READY = "ready"
UDP_MAX = 65535


BULK_PATH = "/bytes/"  # GET /bytes/N: N bytes of bulk_chunks(N), for transfer-integrity tests
SHA256_PATH = "/sha256"  # POST /sha256: the length and digest of the body, for uploads
BULK_MAX = 1 << 30
BULK_CHUNK = 1 << 20


def bulk_chunks(n: int):
    """The deterministic byte stream GET /bytes/N sends (pseudo-random, so a lost,
    repeated or reordered segment changes the digest); clients hash the same stream."""
    rng = random.Random(n)
    while n > 0:
        k = min(n, BULK_CHUNK)
        yield rng.randbytes(k)
        n -= k


def make_http_server(name: str, port: int, bind: str = "0.0.0.0") -> ThreadingHTTPServer:
    body = f"{name}\n".encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "pylvs-lab"

        def _head(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.send_header(HEADER, name)
            self.end_headers()

        def do_GET(self) -> None:
            if self.path.startswith(BULK_PATH):
                self._bulk(self.path[len(BULK_PATH):])
                return
            self._head()
            self.wfile.write(body)

        def _bulk(self, size: str) -> None:
            n = int(size) if size.isdigit() and int(size) <= BULK_MAX else -1
            if n < 0:
                self.send_error(400, f"GET {BULK_PATH}N with N <= {BULK_MAX}")
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(n))
            self.send_header(HEADER, name)
            self.end_headers()
            for chunk in bulk_chunks(n):
                self.wfile.write(chunk)

        def do_HEAD(self) -> None:
            self._head()

        def do_POST(self) -> None:
            """POST /sha256 with a body: answers ``NAME LENGTH SHA256`` of what arrived
            (upload integrity: the bytes a client sent through the director)."""
            n = int(self.headers.get("Content-Length", "-1"))
            if self.path != SHA256_PATH or not 0 <= n <= BULK_MAX:
                self.send_error(400, f"POST {SHA256_PATH} with a Content-Length <= {BULK_MAX}")
                return
            digest, got = hashlib.sha256(), 0
            while got < n:
                chunk = self.rfile.read(min(BULK_CHUNK, n - got))
                if not chunk:
                    break
                digest.update(chunk)
                got += len(chunk)
            answer = f"{name} {got} {digest.hexdigest()}\n".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(answer)))
            self.send_header(HEADER, name)
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: object) -> None:
            pass  # one line per request would flood the log under load

    ThreadingHTTPServer.allow_reuse_address = True
    server = ThreadingHTTPServer((bind, port), Handler)
    server.daemon_threads = True
    return server


IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # ancillary data: the datagram's local address
PKTINFO = struct.Struct("=i4s4s")  # struct in_pktinfo: ifindex, spec_dst, addr
CMSG_SPACE = socket.CMSG_SPACE(PKTINFO.size)


def udp_echo_loop(sock: socket.socket, name: str) -> None:
    """Echo with the name in front, replying *from the address the datagram was sent to*:
    a socket bound to 0.0.0.0 would otherwise answer from the RIP (the route's source),
    and a DR/TUN client that asked the VIP would not recognise the answer."""
    prefix = f"{name} ".encode()
    sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
    while True:
        data, ancdata, _flags, peer = sock.recvmsg(UDP_MAX, CMSG_SPACE)
        cmsgs = []
        for level, kind, value in ancdata:
            if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(value) >= PKTINFO.size:
                _ifindex, _spec, local = PKTINFO.unpack_from(value)
                cmsgs = [(socket.IPPROTO_IP, IP_PKTINFO, PKTINFO.pack(0, local, bytes(4)))]
        try:
            sock.sendmsg([prefix, data], cmsgs, 0, peer)
        except OSError:
            pass  # e.g. unreachable peer: an echo server keeps going


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pylvs.lab.servers")
    parser.add_argument("--name", required=True, help="real server name sent back")
    parser.add_argument("--http-port", type=int, default=HTTP_PORT)
    parser.add_argument("--udp-port", type=int, default=UDP_ECHO_PORT)
    parser.add_argument("--bind", default="0.0.0.0")
    args = parser.parse_args(argv)

    http = make_http_server(args.name, args.http_port, args.bind)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    udp.bind((args.bind, args.udp_port))

    threading.Thread(target=udp_echo_loop, args=(udp, args.name), daemon=True).start()
    threading.Thread(target=http.serve_forever, daemon=True).start()

    print(READY, flush=True)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # the reader may go away: no SIGPIPE later
    threading.Event().wait()  # until a signal ends the process
    return 0


if __name__ == "__main__":
    sys.exit(main())
