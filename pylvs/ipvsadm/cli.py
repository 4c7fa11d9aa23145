"""``pylvsadm`` (also ``pylvs ipvsadm``): the ipvsadm command, driving the running director.

Same grammar, output, messages and exit codes as ipvsadm 1.31 (``grammar``, ``listing``),
acting on the ``pylvs lvs`` of this network namespace through its control socket
(``pylvs.control``; the director's side is ``pylvs.ipvsadm.server``).  Which director:
``$PYLVS_CONTROL`` (a socket path), else the control socket in ``$PYLVS_RUNTIME_DIR``,
else the default runtime directory of this namespace (``pylvs.service.paths``).

Exit codes are ipvsadm's: 0, 1 (a listed service that does not exist, or no director
here), 2 (a command line ipvsadm refuses), 255 (what the kernel, here the director,
refuses).
"""

from __future__ import annotations

import os
import sys
from typing import Any, TextIO

from pylvs.control import request
from pylvs.ipvsadm import command as c
from pylvs.ipvsadm import listing
from pylvs.ipvsadm.command import NO_SERVICE, RC_KERNEL, spec_key
from pylvs.ipvsadm.grammar import HELP_TEXT, VERSION_TEXT, ParseError, parse, restore_argvs

RC_NO_SERVICE = 1  # ipvsadm.c list_service: exit(1) when the service is not there
# ipvsadm.c main: what it says when it cannot talk to IPVS, with the reason of its own.
NO_DIRECTOR = ("Can't initialize ipvs: no pylvs director answers at {path} ({reason})\n"
               "Is `pylvs lvs` running in this network namespace?\n")  # fmt: skip
RC_NO_DIRECTOR = 1


class Director:
    """The running director's control socket, one request per call."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path or control_path()

    def __call__(self, cmd: str, **kw: Any) -> dict[str, Any]:
        return request(self.path, {"cmd": cmd, **kw})


def control_path() -> str:
    if os.environ.get("PYLVS_CONTROL"):
        return os.environ["PYLVS_CONTROL"]
    from pylvs.service.paths import RuntimePaths

    return str(RuntimePaths.resolve(os.environ.get("PYLVS_RUNTIME_DIR") or None).control("lvs"))


def main(argv: list[str] | None = None, *, stdin: TextIO | None = None, stdout: TextIO | None = None,
         stderr: TextIO | None = None, director: Any = None) -> int:  # fmt: skip
    argv = sys.argv[1:] if argv is None else argv
    stdin, stdout, stderr = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
    try:
        cmd = parse(argv)
    except ParseError as exc:
        stdout.write(exc.stdout)
        stderr.write(exc.stderr)
        return exc.rc
    if cmd.command == c.HELP:
        stdout.write(HELP_TEXT)
        return 0
    if cmd.command == c.VERSION:
        stdout.write(VERSION_TEXT)
        return 0
    director = director or Director()
    try:
        return run(cmd, director, stdin, stdout, stderr)
    except OSError as exc:  # nobody listens there
        path = getattr(director, "path", "?")
        stderr.write(NO_DIRECTOR.format(path=path, reason=exc.strerror or exc))
        return RC_NO_DIRECTOR


def _errors(reply: dict[str, Any], stderr: TextIO) -> int:
    """Print what the director refused, ipvsadm's way; the exit code."""
    if not reply.get("ok"):
        stderr.write(f"{reply.get('error', reply)}\n")
        return int(reply.get("rc", RC_KERNEL))
    rc = 0
    for _, message, code in reply.get("errors", []):
        stderr.write(f"{message}\n")
        rc = code
    return rc


def run(cmd: c.Command, director: Any, stdin: TextIO, stdout: TextIO, stderr: TextIO) -> int:
    if cmd.command in c.TABLE_COMMANDS or cmd.command == c.TIMEOUT:
        return _errors(director("ipvs.apply", commands=[cmd.to_json()]), stderr)
    if cmd.command == c.RESTORE:
        return restore(director, stdin, stdout, stderr)
    if cmd.command == c.ZERO:
        svc = cmd.service.__dict__ if cmd.service is not None else None
        return _errors(director("ipvs.zero", service=svc), stderr)
    if cmd.command in (c.START_DAEMON, c.STOP_DAEMON):
        reply = director("ipvs.daemon", daemon=cmd.daemon.__dict__, start=cmd.command == c.START_DAEMON)
        return _errors(reply, stderr)
    if cmd.command == c.SAVE:
        got = director("ipvs.get")
        stdout.write(listing.format_save(got["snapshot"], cmd.list.numeric))
        return 0
    return list_(cmd, director, stdout, stderr)


def restore(director: Any, stdin: TextIO, stdout: TextIO, stderr: TextIO) -> int:
    """-R, line by line as ipvsadm runs it (grammar.restore_argvs): the table commands
    between two lines that do not parse go to the director in one request (one swap), each
    refused one printed in its place; a line whose error ends ipvsadm ends the restore
    there, the lines before it applied; another bad line is printed and skipped; -h/-v
    print and end it.  The exit code is the last line's, as ipvsadm's."""
    batch: list[c.Command] = []
    rc = 0

    def flush() -> int:
        if not batch:
            return rc
        reply = director("ipvs.apply", commands=[x.to_json() for x in batch])
        last = len(batch) - 1
        batch.clear()
        if not reply.get("ok"):
            return _errors(reply, stderr)
        for _, message, _ in reply["errors"]:
            stderr.write(f"{message}\n")
        failed = {index: code for index, _, code in reply["errors"]}
        return failed.get(last, 0)

    for tokens in restore_argvs(stdin.read()):
        try:
            cmd = parse(tokens, restoring=True)
        except ParseError as exc:
            flush()
            stdout.write(exc.stdout)
            stderr.write(exc.stderr)
            rc = exc.rc
            if exc.exits:
                return rc
            continue
        if cmd.command in c.TABLE_COMMANDS or cmd.command == c.TIMEOUT:
            batch.append(cmd)
            rc = 0
            continue
        flush()
        if cmd.command in (c.HELP, c.VERSION):
            stdout.write(HELP_TEXT if cmd.command == c.HELP else VERSION_TEXT)
            return 0
        rc = run(cmd, director, stdin, stdout, stderr)
    return flush() if batch else rc


def _find(snap: dict[str, Any], spec: c.ServiceSpec) -> dict[str, Any] | None:
    key = spec_key(spec)
    for svc in snap["services"]:
        if key[0] == "fwmark":
            if svc["fwmark"] == key[1]:
                return svc
        elif not svc["fwmark"] and (svc["proto"].lower(), svc["vip"], svc["port"]) == key:
            return svc
    return None


def list_(cmd: c.Command, director: Any, stdout: TextIO, stderr: TextIO) -> int:
    fmt = cmd.list
    if fmt.connection:
        conns = director("ipvs.conns")["conns"]
        stdout.write(listing.format_json(conns=conns) if fmt.json else listing.format_connections(conns, fmt))
        return 0
    got = director("ipvs.get")
    if fmt.timeout:
        t = got["timeouts"]
        stdout.write(listing.format_json(timeouts=t) if fmt.json else listing.format_timeout(t))
        return 0
    if fmt.daemon:
        d = got["daemons"]
        stdout.write(listing.format_json(daemons=d) if fmt.json else listing.format_daemon(d))
        return 0
    snap = got["snapshot"]
    one = None
    if cmd.service is not None:
        one = _find(snap, cmd.service)
        if one is None:
            stderr.write(f"{NO_SERVICE}\n")
            return RC_NO_SERVICE
    if fmt.json:
        stdout.write(listing.format_json(snapshot=snap, service=one))
    else:
        stdout.write(listing.format_services(snap, fmt, one))
    return 0


def console() -> None:
    """The ``pylvsadm`` console script."""
    sys.exit(main())
