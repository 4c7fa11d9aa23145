"""Who may use the web tool: the password file, server-side sessions, CSRF tokens and the
login rate limit.

The password file is piranha-passwd's (reference 5: ``/etc/sysconfig/ha/conf/piranha.passwd``,
mode 600, user ``piranha``), with an argon2id hash instead of htpasswd's: one
``USER:HASH`` line per user.  ``pylvs passwd`` writes it; the tool reads it at each login,
so a password changed from the shell counts at once.

A session lives in this process (a dict); the browser holds only its random id, signed
(itsdangerous) so a forged or truncated cookie is refused before any lookup.  Each session
carries its own CSRF token, which every state-changing form sends back.  Nothing here logs
a password, a hash, a session id or a token.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from itsdangerous import BadSignature, TimestampSigner

DEFAULT_PASSWD = "/etc/sysconfig/ha/conf/piranha.passwd"  # piranha-passwd's file (reference 5)
DEFAULT_LOGIN = "piranha"  # the user name the guide logs in with
PASSWD_MODE = 0o600  # as piranha-passwd leaves it
SESSION_IDLE = 3600.0  # seconds without a request before a session ends
SESSION_MAX = 12 * 3600.0  # and at the latest this long after the login
MAX_SESSIONS = 256  # a flood of logins cannot grow the table without bound: the oldest goes
LOGIN_WINDOW = 60.0  # seconds over which failed logins are counted
LOGIN_FAILURES = 5  # failed logins per client address in LOGIN_WINDOW before it waits
LOGIN_FAILURES_ALL = 30  # and from every address together (a spread-out guesser), except
# from an address that logged in lately: a stranger's flood cannot lock the operator out
KNOWN_GOOD = SESSION_MAX  # seconds an address that logged in stays exempt from the global limit
HASHES_AT_ONCE = 2  # argon2id takes 64 MiB a hash: a burst of logins waits here, bounded
HASH_WAIT = 5.0  # seconds a login waits for a hashing slot before "busy, try again"
MIN_PASSWORD = 8  # characters; piranha set no minimum
MAX_PASSWORD = 1024  # argon2 takes any length; a form field is bounded anyway

HASHER = PasswordHasher()  # argon2id with argon2-cffi's RFC 9106 "low memory" defaults
_HASHING = threading.BoundedSemaphore(HASHES_AT_ONCE)


class Busy(Exception):
    """Every hashing slot is taken: the caller says "try again"."""


class PasswordError(ValueError):
    """A password that cannot be set (too short, too long), or an unreadable file."""


def check_new_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise PasswordError(f"a password has at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise PasswordError(f"a password has at most {MAX_PASSWORD} characters")
    if "\n" in password or "\r" in password:
        raise PasswordError("a password is one line")


def read_users(path: str) -> dict[str, str]:
    """USER -> argon2 hash.  PasswordError when the file cannot be read."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise PasswordError(f"{path}: {exc.strerror}") from None
    users = {}
    for line in text.splitlines():
        user, sep, digest = line.strip().partition(":")
        if sep and user and digest.startswith("$argon2"):
            users[user] = digest
    return users


def write_password(path: str, password: str, user: str = DEFAULT_LOGIN, owner: tuple[int, int] | None = None) -> None:
    """Set ``user``'s password in ``path`` (created mode 600; other users kept), atomically:
    the old file or the new one, never half of one.  ``owner`` (uid, gid): the file's owner
    (as root; the web tool's user must be able to read it, and to change it)."""
    from pylvs.ha.confsync import write_atomically

    check_new_password(password)
    try:
        users = read_users(path)
    except PasswordError:
        if os.path.exists(path):
            raise
        users = {}
    users[user] = HASHER.hash(password)
    body = "".join(f"{u}:{h}\n" for u, h in users.items()).encode()
    directory = Path(path).parent
    if not directory.exists():
        directory.mkdir(parents=True)
        if owner is not None:  # CHANGE PASSWORD replaces the file by rename in here, as that user
            os.chown(directory, *owner)
    write_atomically(path, body)
    os.chmod(path, PASSWD_MODE)  # write_atomically keeps an old file's mode: this one is always 600
    if owner is not None:
        os.chown(path, *owner)


def verify(path: str, user: str, password: str) -> bool:
    """Whether ``password`` is ``user``'s.  PasswordError when the file cannot be read,
    Busy when no hashing slot frees within HASH_WAIT.  An unknown user costs the same hash
    as a known one (no timing oracle for names)."""
    users = read_users(path)
    digest = users.get(user)
    if not _HASHING.acquire(timeout=HASH_WAIT):
        raise Busy("too many logins at once")
    try:
        if digest is None:
            HASHER.verify(_DUMMY_HASH, password)
            return False
        return HASHER.verify(digest, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
    finally:
        _HASHING.release()


_DUMMY_HASH = HASHER.hash(secrets.token_urlsafe(16))


@dataclass
class Session:
    user: str
    csrf: str
    created: float
    seen: float
    draft: Any = None  # the panels' pending lvs.cf (pylvs.web.store.Draft), begun on first use
    flash: list = field(default_factory=list)  # messages for the next page
    # One request of a session at a time changes its draft (two tabs, a double submit).
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class Sessions:
    """Server-side sessions; the cookie carries a signed random id."""

    def __init__(self, key: bytes | None = None, clock=time.monotonic) -> None:
        self.signer = TimestampSigner(key or secrets.token_bytes(32), salt="pylvs-web-session")
        self.clock = clock
        self._lock = threading.Lock()
        self._by_id: dict[str, Session] = {}

    def create(self, user: str) -> tuple[str, Session]:
        """A new session; (cookie value, session)."""
        sid = secrets.token_urlsafe(32)
        now = self.clock()
        s = Session(user, secrets.token_urlsafe(32), now, now)
        with self._lock:
            if len(self._by_id) >= MAX_SESSIONS:
                oldest = min(self._by_id, key=lambda k: self._by_id[k].seen)
                del self._by_id[oldest]
            self._by_id[sid] = s
        return self.signer.sign(sid).decode(), s

    def get(self, cookie: str | None) -> Session | None:
        """The live session of a cookie, or None (unsigned, unknown, idle or too old)."""
        if not cookie:
            return None
        try:
            sid = self.signer.unsign(cookie, max_age=int(SESSION_MAX)).decode()
        except BadSignature:
            return None
        now = self.clock()
        with self._lock:
            s = self._by_id.get(sid)
            if s is None:
                return None
            if now - s.seen > SESSION_IDLE or now - s.created > SESSION_MAX:
                del self._by_id[sid]
                return None
            s.seen = now
            return s

    def end(self, cookie: str | None) -> None:
        try:
            sid = self.signer.unsign(cookie or "").decode()
        except BadSignature:
            return
        with self._lock:
            self._by_id.pop(sid, None)

    def end_all(self, user: str, keep: Session | None = None) -> None:
        """After a password change: every other session of ``user`` ends."""
        with self._lock:
            for sid in [k for k, s in self._by_id.items() if s.user == user and s is not keep]:
                del self._by_id[sid]


def same_token(expected: str, token: str | None) -> bool:
    """Constant-time comparison of two tokens (bytes: a non-ASCII token is simply wrong)."""
    return bool(token) and hmac.compare_digest(expected.encode(), token.encode("utf-8", "surrogateescape"))


def csrf_ok(session: Session, token: str | None) -> bool:
    return same_token(session.csrf, token)


class LoginLimiter:
    """Failed logins per client address (and in all) over a sliding window: past the limit,
    a login is refused before the password is even hashed, until the window frees a slot.
    A login takes its slot before it is hashed (``attempt``) and gives it back when it
    succeeds, so a burst of concurrent guesses cannot all be hashed; addresses that logged
    in lately are exempt from the global count."""

    def __init__(self, clock=time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._by_addr: dict[str, deque] = {}
        self._all: deque = deque()
        self._good: dict[str, float] = {}  # address -> when it last logged in

    def _trim(self, q: deque, now: float) -> None:
        while q and now - q[0] > LOGIN_WINDOW:
            q.popleft()

    def _wait(self, addr: str, now: float) -> float:
        waits = []
        q = self._by_addr.get(addr)
        if q is not None:
            self._trim(q, now)
            if len(q) >= LOGIN_FAILURES:
                waits.append(q[0] + LOGIN_WINDOW - now)
        self._trim(self._all, now)
        good = now - self._good.get(addr, -KNOWN_GOOD - 1) <= KNOWN_GOOD
        if not good and len(self._all) >= LOGIN_FAILURES_ALL:
            waits.append(self._all[0] + LOGIN_WINDOW - now)
        return max(waits, default=0.0)

    def retry_after(self, addr: str) -> float:
        """0 when ``addr`` may try now, else the seconds to wait."""
        with self._lock:
            return self._wait(addr, self.clock())

    def attempt(self, addr: str) -> float:
        """Take a slot for a login about to be checked: 0 (taken; counted as a failure
        until ``succeeded``), else the seconds to wait (nothing taken)."""
        now = self.clock()
        with self._lock:
            wait = self._wait(addr, now)
            if wait > 0:
                return wait
            self._by_addr.setdefault(addr, deque()).append(now)
            self._all.append(now)
            if len(self._by_addr) > MAX_SESSIONS * 4:  # forget the quiet ones
                for a in [a for a, q in self._by_addr.items() if not q or now - q[-1] > LOGIN_WINDOW]:
                    del self._by_addr[a]
            return 0.0

    def succeeded(self, addr: str) -> None:
        now = self.clock()
        with self._lock:
            self._by_addr.pop(addr, None)
            with contextlib.suppress(IndexError):
                self._all.pop()  # one slot back; which one does not matter to a count
            if len(self._good) >= MAX_SESSIONS:
                del self._good[min(self._good, key=self._good.__getitem__)]
            self._good[addr] = now
