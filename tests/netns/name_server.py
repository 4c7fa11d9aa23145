"""A real server that answers every TCP connection with its name and a newline, then keeps
the connection open until the client closes it (the capture's ``vm/rs_server.py``: a
client can hold connections to shift ActiveConn).  Exits by itself after LIFETIME s.

    python name_server.py NAME PORT LIFETIME
"""

from __future__ import annotations

import socket
import sys
import threading
import time

ACCEPT_POLL = 1.0  # seconds between looks at the deadline


def handle(conn: socket.socket, name: bytes, lifetime: float) -> None:
    try:
        conn.sendall(name)
        conn.settimeout(lifetime)
        while conn.recv(4096):
            pass
    except OSError:
        pass
    finally:
        conn.close()


def main() -> None:
    name, port, lifetime = sys.argv[1].encode() + b"\n", int(sys.argv[2]), float(sys.argv[3])
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(512)
    s.settimeout(ACCEPT_POLL)
    print("ready", flush=True)
    deadline = time.monotonic() + lifetime
    while time.monotonic() < deadline:
        try:
            conn, _ = s.accept()
        except TimeoutError:
            continue
        threading.Thread(target=handle, args=(conn, name, lifetime), daemon=True).start()


if __name__ == "__main__":
    main()
