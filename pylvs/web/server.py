"""``pylvs web`` as a process: bind, read what needs root (TLS key), drop to the tool's
own user, then serve with uvicorn.

The tool never runs as root once it serves: started as root it binds its socket, loads the
certificate and key, and switches to ``--user`` (default ``pylvs-web``, Piranha's
``piranha``) and its groups before the first request; a switch that does not stick is an
error, never a silent root server.  As that user it must be able to read the password
file and to write lvs.cf's directory (the file is replaced by rename), which it checks at
start so a wrong permission is an error now, not at the first APPLY.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import socket
from dataclasses import dataclass

from pylvs.web import auth
from pylvs.web.app import Settings, Web, build_app

log = logging.getLogger("pylvs.web")

DEFAULT_PORT = 3636  # piranha-gui's Listen 3636 (reference 5)
DEFAULT_LISTEN = f"127.0.0.1:{DEFAULT_PORT}"
DEFAULT_USER = "pylvs-web"  # the tool's own user (piranha-gui ran as piranha)
KEEPALIVE = 5  # seconds an idle HTTP connection is kept
MAX_CONNECTIONS = 64  # uvicorn's limit_concurrency: beyond it, 503 at once


class WebError(Exception):
    """Why the tool cannot start; the message says what to do."""


@dataclass
class Identity:
    uid: int
    gid: int
    groups: list[int]
    name: str


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise WebError(f"--listen {text!r}: ADDR:PORT, e.g. {DEFAULT_LISTEN}")
    return host.strip("[]"), int(port)


def identity(user: str, group: str | None = None) -> Identity:
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise WebError(f"user {user!r} does not exist: create it (useradd --system --no-create-home "
                       f"--shell /usr/sbin/nologin {user}) or name another with --user") from None  # fmt: skip
    gid = pw.pw_gid
    if group is not None:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise WebError(f"group {group!r} does not exist") from None
    groups = sorted(set(os.getgrouplist(user, pw.pw_gid)) | {gid})
    if pw.pw_uid == 0:
        raise WebError(f"--user {user}: that is root; the tool runs unprivileged")
    return Identity(pw.pw_uid, gid, groups, user)


def drop_privileges(who: Identity) -> None:
    os.setgroups(who.groups)
    os.setgid(who.gid)
    os.setuid(who.uid)
    if os.getuid() == 0 or os.geteuid() == 0:
        raise WebError("could not drop root privileges")
    try:
        os.setuid(0)
    except PermissionError:
        return
    raise WebError("root privileges came back after the switch: refusing to serve")


def check_access(settings: Settings) -> list[str]:
    """What this process (as the user it serves as) cannot do; errors first, then warnings."""
    problems = []
    try:
        auth.read_users(settings.passwd)
    except auth.PasswordError as exc:
        problems.append(f"error: the password file: {exc} (set it with `pylvs passwd`, owned by this user)")
    directory = os.path.dirname(os.path.abspath(settings.lvs_cf))
    if not os.access(directory, os.W_OK | os.X_OK):
        problems.append(f"error: cannot write {directory}, so APPLY could not replace lvs.cf: give this user's "
                        f"group write access (chgrp GROUP {directory} && chmod g+w {directory})")  # fmt: skip
    if os.path.exists(settings.lvs_cf) and not os.access(settings.lvs_cf, os.R_OK):
        problems.append(f"error: cannot read {settings.lvs_cf}")
    conf = os.path.dirname(os.path.abspath(settings.passwd))
    if os.path.isdir(conf) and not os.access(conf, os.W_OK | os.X_OK):
        problems.append(f"warning: cannot write {conf}, so CHANGE PASSWORD will fail (pylvs passwd as root "
                        "still works): give this user write access to it")  # fmt: skip
    if not os.path.exists(settings.director):
        problems.append(f"warning: no director socket at {settings.director} yet (pylvs lvs/pulse --web-group); "
                        "the panels work, CONTROL/MONITORING waits for it")  # fmt: skip
    return problems


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise WebError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    # No listen() here: asyncio's server listens on it once uvicorn serves, as the tool's
    # own user; a client that comes earlier is refused, never answered by root.
    return sock


def warm_up(app, web: Web) -> None:
    """Load everything serving needs while still root: every template compiled, and a few
    requests through the app (login page, a refused login, a static file, a page without a
    session), which import the modules Python loads lazily on first use (codecs, form
    parsing).  Once the user has changed, the process reads no more code: on a box whose
    Python lives where that user cannot read (a pyenv under /root) nothing would load."""
    import asyncio

    env = web.templates.env
    for name in env.list_templates():
        env.get_template(name)
    env.auto_reload = False  # compiled once: no stat of the files on each render
    async def one(method: str, path: str, body: bytes = b"") -> int:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
                 "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
                 "root_path": "", "server": ("127.0.0.1", DEFAULT_PORT), "client": ("127.0.0.1", 1),
                 "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/x-www-form-urlencoded"),
                             (b"content-length", str(len(body)).encode())]}  # fmt: skip
        sent = {"status": 0}
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict:  # the body once, then the client is gone
            return messages.pop() if messages else {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start":
                sent["status"] = message["status"]

        await app(scope, receive, send)
        return sent["status"]

    async def all_of_them() -> None:
        await one("GET", "/login")
        await one("POST", "/login", b"token=x&username=piranha&password=x&next=%2Fmonitor")
        await one("GET", "/static/pylvs.css")
        await one("GET", "/monitor")
        await one("POST", "/global", b"csrf=x")

    asyncio.run(all_of_them())
    "x".encode("idna")  # noqa: B018 - the codec is a lazy import too


def _server_class():
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            # uvicorn raises a stopping signal again once it has shut down, so the
            # process dies of it; a SIGTERM that shut the tool down cleanly exits 0.
            super().handle_exit(sig, frame)
            self._captured_signals.clear()

    return Server


def serve(settings: Settings, listen: str, *, user: str = DEFAULT_USER, group: str | None = None,
          certfile: str | None = None, keyfile: str | None = None) -> int:  # fmt: skip
    import uvicorn

    host, port = parse_listen(listen)
    who = identity(user, group) if os.geteuid() == 0 else None
    settings.tls = bool(certfile)
    web = Web(settings)
    config = uvicorn.Config(build_app(web), ssl_certfile=certfile, ssl_keyfile=keyfile, log_config=None,
                            server_header=False, proxy_headers=False, timeout_keep_alive=KEEPALIVE,
                            limit_concurrency=MAX_CONNECTIONS, lifespan="off")  # fmt: skip
    try:
        config.load()  # the key is read now, while it still can be (root-only files)
    except (OSError, ValueError) as exc:
        raise WebError(f"TLS: {exc}") from None
    sock = bind(host, port)
    warm_up(config.app, web)
    if who is not None:
        drop_privileges(who)
    problems = check_access(settings)
    for p in problems:
        (log.error if p.startswith("error") else log.warning)("%s", p.split(": ", 1)[1])
    if any(p.startswith("error") for p in problems):
        raise WebError("cannot serve: " + "; ".join(p.split(": ", 1)[1] for p in problems if p.startswith("error")))
    log.info("pylvs web on %s://%s:%d as uid %d (%s), editing %s", "https" if certfile else "http", host, port,
             os.getuid(), who.name if who else pwd.getpwuid(os.getuid()).pw_name, settings.lvs_cf)  # fmt: skip
    _server_class()(config).run(sockets=[sock])
    return 0
