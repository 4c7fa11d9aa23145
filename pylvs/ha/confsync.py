"""Config sync: the backup router fetches the primary's lvs.cf (pylvs, beyond piranha).

Piranha left copying lvs.cf to the backup to the operator (the GUI's "sync" only scp'd it,
when configured).  With ``config_sync = 1`` the primary serves its lvs.cf on TCP
``config_sync_port`` and the backup fetches it every ``config_sync_interval`` seconds,
both authenticated by the shared secret in the file ``config_sync_secret``:

    request  (backup -> primary)  MAGIC | nonce (32 random bytes) | HMAC(secret, REQUEST_LABEL | nonce)
    answer   (primary -> backup)  MAGIC | status (1 byte) | length (4 bytes, big-endian) | body
                                  | HMAC(secret, ANSWER_LABEL | nonce | status | length | body)
    refusal  (primary -> backup)  MAGIC | status != OK, then close

The request tag lets the primary serve only holders of the secret; the answer tag binds
the body to this request's fresh nonce, so the backup accepts only the primary's answer to
this very request (never a replay of an older file, never a body changed on the way).
Different labels keep a request tag from ever passing as an answer tag.  HMAC-SHA256, tags
compared with hmac.compare_digest.  Every length is bounded (MAX_BODY) and every wait has a
timeout; the server handles one connection at a time.  The file travels in clear: lvs.cf
holds addresses and ports, not secrets (the secret itself is never sent).

The backup applies a fetched file only if the config checker accepts it and its serial_no
is newer than its own (the GUI bumps serial_no on each save), writing it atomically.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import logging
import os
import secrets
import socket
import stat
import struct
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from pylvs.config import diagnostics as dg
from pylvs.config.check import check_text
from pylvs.config.parse import Resolver, parse

LOG = logging.getLogger("pylvs.ha.confsync")

# The wire format (this module's own; version in MAGIC).
MAGIC = b"PYLVSCS1"
NONCE_SIZE = 32  # 256 bits from secrets.token_bytes: never repeats in practice
DIGEST = hashlib.sha256
TAG_SIZE = 32  # SHA-256 output
REQUEST_LABEL = b"pylvs config-sync request v1\0"
ANSWER_LABEL = b"pylvs config-sync answer v1\0"
REQUEST_SIZE = len(MAGIC) + NONCE_SIZE + TAG_SIZE
ANSWER_HEAD = struct.Struct("!8sBI")  # magic, status, body length
STATUS_OK = 0
STATUS_BAD_HMAC = 1  # the request's tag is wrong: the backup holds another secret
STATUS_UNAVAILABLE = 2  # the primary cannot read its lvs.cf
STATUS_TOO_LARGE = 3  # the primary's lvs.cf exceeds MAX_BODY
STATUS_MALFORMED = 4  # the request was not one
STATUS_TEXT = {
    STATUS_BAD_HMAC: "bad HMAC (wrong secret?)", STATUS_UNAVAILABLE: "its lvs.cf cannot be read",
    STATUS_TOO_LARGE: "its lvs.cf is too large", STATUS_MALFORMED: "malformed request",
}  # fmt: skip

MAX_BODY = 1 << 20  # 1 MiB: lvs.cf files are a few KiB; bounds the backup's memory
DEFAULT_TIMEOUT = 5.0  # seconds for a whole exchange (connect, request, answer)
SERVER_IO_TIMEOUT = 5.0  # seconds a client may take to send its request / read the answer
ACCEPT_POLL = 0.5  # seconds between the server thread's looks at its stop flag
LISTEN_BACKLOG = 4
MIN_SECRET = 16  # bytes; shorter secrets are accepted with a warning
NEW_FILE_MODE = 0o644  # lvs.cf's usual mode when there is no old file to copy it from


class ConfigSyncError(Exception):
    """A fetch that failed; the message says why and from where."""


def read_secret(path: str, log: logging.Logger = LOG) -> bytes:
    """The shared secret in `path` (surrounding whitespace stripped, so `echo` can write it)."""
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            data = fh.read(MAX_BODY + 1)
    except FileNotFoundError:
        raise ConfigSyncError(f"config_sync_secret {path}: no such file") from None
    except OSError as exc:
        raise ConfigSyncError(f"config_sync_secret {path}: {exc.strerror or exc}") from None
    secret = data.strip()
    if not secret:
        raise ConfigSyncError(f"config_sync_secret {path}: the file is empty")
    if len(data) > MAX_BODY:
        raise ConfigSyncError(f"config_sync_secret {path}: larger than {MAX_BODY} bytes; not a secret file?")
    if st.st_mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning("config sync: secret file %s is readable by group or others (mode %04o); chmod 600 it",
                    path, stat.S_IMODE(st.st_mode))
    if len(secret) < MIN_SECRET:
        log.warning("config sync: secret in %s is only %d bytes; use at least %d random bytes",
                    path, len(secret), MIN_SECRET)
    return secret


# -- the pure part: messages and tags ----------------------------------------------------------

def _tag(secret: bytes, *parts: bytes) -> bytes:
    return hmac.new(secret, b"".join(parts), DIGEST).digest()


def make_request(secret: bytes, nonce: bytes) -> bytes:
    return MAGIC + nonce + _tag(secret, REQUEST_LABEL, nonce)


def check_request(secret: bytes, request: bytes) -> tuple[int, bytes]:
    """(status, nonce) of a received request: STATUS_OK only with a valid tag."""
    if len(request) != REQUEST_SIZE or not request.startswith(MAGIC):
        return STATUS_MALFORMED, b""
    nonce = request[len(MAGIC):len(MAGIC) + NONCE_SIZE]
    tag = request[len(MAGIC) + NONCE_SIZE:]
    if not hmac.compare_digest(tag, _tag(secret, REQUEST_LABEL, nonce)):
        return STATUS_BAD_HMAC, nonce
    return STATUS_OK, nonce


def answer_tag(secret: bytes, nonce: bytes, status: int, body: bytes) -> bytes:
    head = ANSWER_HEAD.pack(MAGIC, status, len(body))[len(MAGIC):]
    return _tag(secret, ANSWER_LABEL, nonce, head, body)


def make_answer(secret: bytes, nonce: bytes, body: bytes) -> bytes:
    return ANSWER_HEAD.pack(MAGIC, STATUS_OK, len(body)) + body + answer_tag(secret, nonce, STATUS_OK, body)


def make_refusal(status: int) -> bytes:
    return ANSWER_HEAD.pack(MAGIC, status, 0)


# -- socket helpers --------------------------------------------------------------------------

def _recv_exact(sock: socket.socket, size: int, deadline: float, what: str) -> bytes:
    """Exactly `size` bytes before `deadline` (time.monotonic), else ConfigSyncError."""
    chunks: list[bytes] = []
    got = 0
    while got < size:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ConfigSyncError(f"timed out reading {what}")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(min(size - got, 65536))
        except TimeoutError:
            raise ConfigSyncError(f"timed out reading {what}") from None
        if not chunk:
            raise ConfigSyncError(f"connection closed after {got} of {size} bytes of {what}")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _new_tcp_socket() -> socket.socket:
    return socket.socket(socket.AF_INET, socket.SOCK_STREAM)


# -- the primary -----------------------------------------------------------------------------

@dataclass
class ServerStats:
    served: int = 0
    refused_bad_hmac: int = 0
    refused_malformed: int = 0
    refused_unavailable: int = 0
    refused_too_large: int = 0
    io_errors: int = 0  # the client went away or timed out mid-exchange
    # The last file served (what the status pages show as "the backup has serial_no N"):
    last_peer: str | None = None
    last_at: float | None = None  # wall-clock time
    last_serial: int | None = None  # None when the file did not parse


class ConfigServer:
    """Serves lvs.cf to backups holding the secret, one connection at a time, in a thread.

    `path`: the file, or a callable returning its current path (read afresh per request, so
    a reloaded config is what is served).  `make_socket()`: an unbound TCP socket (e.g. one
    made in another network namespace); port 0 binds any free port (see `address`)."""

    def __init__(self, path: str | Callable[[], str], secret: bytes, bind: tuple[str, int] = ("0.0.0.0", 539),
                 make_socket: Callable[[], socket.socket] | None = None, *,
                 io_timeout: float = SERVER_IO_TIMEOUT, log: logging.Logger = LOG):
        if not secret:
            raise ValueError("config sync: empty secret")
        self._path = path if callable(path) else (lambda: path)
        self.secret = secret
        self.bind = bind
        self.make_socket = make_socket or _new_tcp_socket
        self.io_timeout = io_timeout
        self.log = log
        self.stats = ServerStats()
        self.address: tuple[str, int] | None = None
        self._sock: socket.socket | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind and listen here (so a busy port raises in the caller), then serve in a thread."""
        sock = self.make_socket()
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(self.bind)
            sock.listen(LISTEN_BACKLOG)
            sock.settimeout(ACCEPT_POLL)
        except OSError as exc:
            sock.close()
            raise OSError(exc.errno, f"config sync: cannot listen on {self.bind[0]}:{self.bind[1]}: "
                                     f"{exc.strerror or exc}") from exc
        self._sock = sock
        self.address = sock.getsockname()[:2]
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, name="config-sync-server", daemon=True)
        self._thread.start()
        self.log.info("config sync: serving %s on %s:%d", self._path(), *self.address)

    def stop(self) -> None:
        self._stop.set()
        if self._sock is not None:
            try:  # wakes a blocked accept() at once (Linux), rather than at the next poll
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, peer = self._sock.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                if self._stop.is_set():
                    break
                self.log.error("config sync: accept failed: %s", exc)
                self._stop.wait(ACCEPT_POLL)
                continue
            with conn:
                try:
                    self.handle(conn, peer[0])
                except (OSError, ConfigSyncError) as exc:
                    self.stats.io_errors += 1
                    self.log.warning("config sync: exchange with %s failed: %s", peer[0], exc)

    def handle(self, conn: socket.socket, peer: str) -> None:
        """One exchange on an accepted connection."""
        deadline = time.monotonic() + self.io_timeout
        request = _recv_exact(conn, REQUEST_SIZE, deadline, f"the request from {peer}")
        status, nonce = check_request(self.secret, request)
        body = b""
        if status == STATUS_OK:
            body, status = self._read_body()
        conn.settimeout(max(deadline - time.monotonic(), 0.001))
        if status != STATUS_OK:
            self._refuse(conn, peer, status)
            return
        conn.sendall(make_answer(self.secret, nonce, body))
        self.stats.served += 1
        self.stats.last_peer, self.stats.last_at = peer, time.time()
        self.stats.last_serial = _serial_of(body)
        self.log.debug("config sync: served %d bytes to %s", len(body), peer)

    def _read_body(self) -> tuple[bytes, int]:
        path = self._path()
        try:
            with open(path, "rb") as fh:
                body = fh.read(MAX_BODY + 1)
        except OSError as exc:
            self.log.error("config sync: cannot read %s: %s", path, exc.strerror or exc)
            return b"", STATUS_UNAVAILABLE
        if len(body) > MAX_BODY:
            self.log.error("config sync: %s is larger than %d bytes; not served", path, MAX_BODY)
            return b"", STATUS_TOO_LARGE
        return body, STATUS_OK

    def _refuse(self, conn: socket.socket, peer: str, status: int) -> None:
        if status == STATUS_BAD_HMAC:
            self.stats.refused_bad_hmac += 1
            self.log.warning("config sync: refused request from %s: bad HMAC (wrong secret?)", peer)
        elif status == STATUS_MALFORMED:
            self.stats.refused_malformed += 1
            self.log.warning("config sync: refused request from %s: malformed request", peer)
        elif status == STATUS_TOO_LARGE:
            self.stats.refused_too_large += 1
        else:
            self.stats.refused_unavailable += 1
        conn.sendall(make_refusal(status))

    def __enter__(self) -> ConfigServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- the backup ------------------------------------------------------------------------------

def fetch(addr: str, port: int, secret: bytes, timeout: float = DEFAULT_TIMEOUT,
          make_socket: Callable[[], socket.socket] | None = None) -> bytes:
    """The primary's lvs.cf bytes, authenticated as its answer to a fresh request.

    Raises ConfigSyncError saying why (unreachable, timed out, refused by ADDR, bad HMAC
    from ADDR, oversize, malformed)."""
    where = f"{addr}:{port}"
    deadline = time.monotonic() + timeout
    nonce = secrets.token_bytes(NONCE_SIZE)
    sock = (make_socket or _new_tcp_socket)()
    with sock:
        sock.settimeout(timeout)
        try:
            sock.connect((addr, port))
        except TimeoutError:
            raise ConfigSyncError(f"cannot connect to {where}: timed out after {timeout:g} s") from None
        except OSError as exc:
            raise ConfigSyncError(f"cannot connect to {where}: {exc.strerror or exc}") from None
        try:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            sock.sendall(make_request(secret, nonce))
            head = _recv_exact(sock, ANSWER_HEAD.size, deadline, f"the answer from {where}")
            magic, status, length = ANSWER_HEAD.unpack(head)
            if magic != MAGIC:
                raise ConfigSyncError(f"malformed answer from {where}: not a pylvs config-sync server")
            if status != STATUS_OK:
                raise ConfigSyncError(f"refused by {addr}: {STATUS_TEXT.get(status, f'status {status}')}")
            if length > MAX_BODY:
                raise ConfigSyncError(f"answer from {where} too large: {length} bytes (limit {MAX_BODY})")
            body = _recv_exact(sock, length, deadline, f"lvs.cf from {where}")
            tag = _recv_exact(sock, TAG_SIZE, deadline, f"the answer's HMAC from {where}")
        except TimeoutError:
            raise ConfigSyncError(f"timed out talking to {where}") from None
        except ConfigSyncError:
            raise
        except OSError as exc:
            raise ConfigSyncError(f"exchange with {where} failed: {exc.strerror or exc}") from None
    if not hmac.compare_digest(tag, answer_tag(secret, nonce, status, body)):
        raise ConfigSyncError(f"bad HMAC from {addr}: wrong secret?")
    return body


class Status(enum.StrEnum):
    APPLIED = "applied"
    UNCHANGED = "unchanged"
    REFUSED = "refused"


@dataclass(frozen=True)
class Outcome:
    """What became of one fetched file: applied / unchanged / refused (with why)."""

    status: Status
    reason: str = ""
    serial_no: int | None = None  # the fetched file's, when it was read

    @property
    def applied(self) -> bool:
        return self.status is Status.APPLIED


def _current(path: str) -> tuple[bytes | None, int | None]:
    """The current file's bytes and serial_no (None, None when there is none to read)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_BODY + 1)
    except FileNotFoundError:
        return None, None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return data, None
    return data, parse(text, filename=path).config.serial_no


def _serial_of(body: bytes) -> int | None:
    result = parse(body.decode("utf-8", "surrogateescape"))
    return None if dg.has_errors(result.diagnostics) else result.config.serial_no


def write_atomically(path: str, body: bytes) -> None:
    """Replace `path` by `body` whole or not at all, keeping its mode (and owner, as root)."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        old = os.stat(path)
    except FileNotFoundError:
        old = None
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".sync")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(body)
            fh.flush()
            os.fchmod(fh.fileno(), stat.S_IMODE(old.st_mode) if old else NEW_FILE_MODE)
            if old is not None and os.geteuid() == 0 and (old.st_uid, old.st_gid) != (os.geteuid(), os.getegid()):
                os.fchown(fh.fileno(), old.st_uid, old.st_gid)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    # The rename is durable once the directory is synced.
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


MAX_LOGGED_DIAGNOSTICS = 5


def apply_fetched(body: bytes, path: str, source: str, *, resolver: Resolver | None = None,
                  log: logging.Logger = LOG) -> Outcome:
    """Install a fetched lvs.cf at `path` if it checks and its serial_no is newer.

    `source` names where it came from (the primary's address); diagnostics are located as
    SOURCE:lvs.cf:LINE."""
    name = os.path.basename(path)
    shown = f"{source}:{name}"
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = body[:exc.start].count(b"\n") + 1
        reason = f"{shown}:{line}: byte {exc.start} is not valid UTF-8"
        log.error("config sync: refused %s from %s: %s", name, source, reason)
        return Outcome(Status.REFUSED, reason)
    current, ours = _current(path)
    if current == body:
        return Outcome(Status.UNCHANGED, "identical to ours", ours)
    result = check_text(text, filename=shown, resolver=resolver)
    if not result.ok:
        errors = [d for d in result.diagnostics if d.severity is dg.Severity.ERROR]
        log.error("config sync: refused %s from %s: %d error%s", name, source, len(errors),
                  "" if len(errors) == 1 else "s")
        for d in errors[:MAX_LOGGED_DIAGNOSTICS]:
            log.error("config sync: %s", d)
        return Outcome(Status.REFUSED, str(errors[0]) if errors else "the config checker refused it")
    serial = result.config.serial_no
    if ours is not None and serial < ours:
        reason = f"serial_no {serial} is older than ours ({ours})"
        log.warning("config sync: refused %s from %s: %s", name, source, reason)
        return Outcome(Status.REFUSED, reason, serial)
    if ours is not None and serial == ours:
        log.warning("config sync: %s from %s differs from ours but has the same serial_no %d: "
                    "bump serial_no on the primary to have it applied", name, source, serial)
        return Outcome(Status.UNCHANGED, f"same serial_no {serial}, different contents", serial)
    try:
        write_atomically(path, body)
    except OSError as exc:
        reason = f"cannot write {path}: {exc.strerror or exc}"
        log.error("config sync: refused %s from %s: %s; the old file is kept", name, source, reason)
        return Outcome(Status.REFUSED, reason, serial)
    log.info("config sync: applied %s from %s: serial_no %s -> %d", name, source,
             "none" if ours is None else ours, serial)
    return Outcome(Status.APPLIED, f"serial_no {serial}", serial)


class ConfigSyncClient:
    """The backup's side: poll_once() fetches the primary's lvs.cf and applies it.

    Failures are logged when they change (a primary down for an hour is one line, not 360);
    the same failure again is logged at debug level."""

    def __init__(self, path: str, peer: str, port: int, secret: bytes, interval: float, *,
                 timeout: float = DEFAULT_TIMEOUT, make_socket: Callable[[], socket.socket] | None = None,
                 resolver: Resolver | None = None, log: logging.Logger = LOG):
        self.path = path
        self.peer = peer
        self.port = port
        self.secret = secret
        self.interval = interval
        self.timeout = timeout
        self.make_socket = make_socket
        self.resolver = resolver
        self.log = log
        self.last: Outcome | None = None

    def poll_once(self) -> Outcome:
        try:
            body = fetch(self.peer, self.port, self.secret, self.timeout, self.make_socket)
        except ConfigSyncError as exc:
            reason = str(exc)
            repeated = self.last is not None and self.last.reason == reason
            self.log.log(logging.DEBUG if repeated else logging.WARNING,
                         "config sync: fetching from %s failed: %s", self.peer, reason)
            outcome = Outcome(Status.REFUSED, reason)
        else:
            outcome = apply_fetched(body, self.path, self.peer, resolver=self.resolver, log=self.log)
        self.last = outcome
        return outcome

    def run(self, stop: threading.Event, on_applied: Callable[[Outcome], None] | None = None) -> None:
        """poll_once() every `interval` seconds until `stop` is set (for a thread)."""
        while not stop.is_set():
            outcome = self.poll_once()
            if outcome.applied and on_applied is not None:
                on_applied(outcome)
            stop.wait(self.interval)
