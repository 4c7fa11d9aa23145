"""tcpdump in a lab namespace, started and stopped by PID: a capture a test can trust.

    cap = Capture(lab, "client1", tmp_path / "vip.pcap", f"tcp and host {lab.vip}")
    cap.start()                      # returns once tcpdump says "listening on"
    try:
        cap.wait_packets(1, 10.0)    # a positive control: it really sees the traffic
        ...
    finally:
        cap.stop()                   # SIGTERM by PID, bounded; SIGKILL after
    for pkt in cap.packets(): ...    # scapy's rdpcap

tcpdump writes every packet as it comes (``-U``), as root (``-Z root``: the file may live
in a directory only root can enter), with the given snap length.  The process is one of
the lab's (``Lab.popen``), so ``Lab.destroy`` also ends it if a test never got to
``stop``.  Needs the ``tcpdump`` package (the Makefile's APT_PACKAGES).
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import signal
import struct
import subprocess
import time
from pathlib import Path
from typing import Any

READY_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
PCAP_HEADER = 24  # the file header; each record then has a 16-byte header and incl_len bytes
_MAGICS = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">", b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\x3c\x4d": ">"}


class CaptureError(RuntimeError):
    pass


class Capture:
    """One tcpdump on ``iface`` of ``host``, writing ``path``, filtered by ``bpf``."""

    def __init__(self, lab: Any, host: str, path: Path, bpf: str, *, iface: str = "eth0",
                 snaplen: int = 256) -> None:  # fmt: skip
        self.lab, self.host, self.path, self.bpf = lab, host, Path(path), bpf
        self.iface, self.snaplen = iface, snaplen
        self.proc: subprocess.Popen | None = None
        self.stderr = ""
        self.captured: int | None = None  # from tcpdump's summary, once stopped
        self.dropped: int | None = None  # "packets dropped by kernel"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self, timeout: float = READY_TIMEOUT) -> Capture:
        """Start tcpdump; return once it is listening (CaptureError otherwise)."""
        tcpdump = shutil.which("tcpdump") or "/usr/bin/tcpdump"
        if not os.path.exists(tcpdump):
            raise CaptureError("tcpdump is not installed (apt-get install tcpdump)")
        self.path.unlink(missing_ok=True)
        argv = [tcpdump, "-i", self.iface, "-n", "-U", "-Z", "root", "-s", str(self.snaplen),
                "-w", str(self.path), self.bpf]  # fmt: skip
        self.proc = self.lab.popen(self.host, argv, what="tcpdump", stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE)  # fmt: skip
        deadline = time.monotonic() + timeout
        buf = b""
        assert self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        while b"listening on" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                self.stop()
                raise CaptureError(f"tcpdump not listening after {timeout:.0f} s: {self._text(buf)}")
            ready, _, _ = select.select([fd], [], [], min(left, 0.2))
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:  # tcpdump exited
                    self.proc.wait(STOP_TIMEOUT)
                    raise CaptureError(f"tcpdump exited {self.proc.returncode}: {self._text(buf)}")
                buf += chunk
        self.stderr = self._text(buf)
        return self

    @staticmethod
    def _text(buf: bytes) -> str:
        return buf.decode(errors="replace").strip()

    def count(self) -> int:
        """Complete packet records in the file so far (tcpdump may be writing the next)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return 0
        if len(data) < PCAP_HEADER or data[:4] not in _MAGICS:
            return 0
        order, n, off = _MAGICS[data[:4]], 0, PCAP_HEADER
        while off + 16 <= len(data):
            (incl,) = struct.unpack_from(order + "I", data, off + 8)
            if off + 16 + incl > len(data):
                break
            off += 16 + incl
            n += 1
        return n

    def wait_packets(self, n: int, timeout: float) -> int:
        """Wait until the file holds at least ``n`` packets; the count (CaptureError if not)."""
        deadline = time.monotonic() + timeout
        while (got := self.count()) < n:
            if self.proc is not None and self.proc.poll() is not None:
                raise CaptureError(f"tcpdump exited {self.proc.returncode} after {got} packet(s)")
            if time.monotonic() > deadline:
                raise CaptureError(f"tcpdump wrote {got} packet(s), not {n}, in {timeout:.0f} s")
            time.sleep(0.05)
        return got

    def stop(self, timeout: float = STOP_TIMEOUT) -> str:
        """SIGTERM tcpdump by its PID (SIGKILL after ``timeout``); its stderr summary.
        Idempotent."""
        proc = self.proc
        if proc is None:
            return self.stderr
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            _, err = proc.communicate()
        self.proc = None
        self.stderr = (self.stderr + "\n" + self._text(err or b"")).strip()
        if m := re.search(r"(\d+) packets? captured", self.stderr):
            self.captured = int(m.group(1))
        if m := re.search(r"(\d+) packets? dropped by kernel", self.stderr):
            self.dropped = int(m.group(1))
        return self.stderr

    def packets(self) -> list[Any]:
        """The capture, as scapy packets (after ``stop``)."""
        import scapy.layers.inet  # noqa: F401 - registers Ethernet, IP and TCP for the reader
        from scapy.utils import rdpcap

        return list(rdpcap(str(self.path)))

    def __enter__(self) -> Capture:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
