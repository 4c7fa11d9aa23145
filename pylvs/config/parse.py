"""lvs.cf text -> Config, collecting located diagnostics (reference 1.1).

The grammar is piranha's (``lvsconfig.c``): one statement per line, ``#`` comment lines,
no trailing comments, tokens split on blanks, quoted tokens, ``=`` as its own token, a
fixed number of value tokens per keyword, ``NAME {`` block openers and ``}`` closers.

Unlike piranha, which stops at the first error, the parser keeps going: a bad line is
reported and skipped, a malformed block opener still opens its block, so one run shows
every mistake.  ``parse`` takes text and does no I/O apart from the injected resolver
(host names and /etc/services port names); ``parse_file`` reads the file.
"""

from __future__ import annotations

import difflib
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import AddressValueError, IPv4Address
from typing import Any, Protocol

from pylvs.config import diagnostics as dg
from pylvs.config.diagnostics import Diagnostic, Severity
from pylvs.config.model import (
    ANY_ADDRESS,
    HOST_MASK,
    KEYWORDS,
    KEYWORDS_BY_SCOPE,
    VIRTUAL_PORT_DEFAULT,
    BoundAddress,
    Config,
    FailoverService,
    Keyword,
    Kind,
    RealServer,
    Scope,
    VirtualServer,
)

BLANKS = " \t"  # C isblank(): only these separate tokens
QUOTES = "\"'"
# Tokens that are grammar when written bare; quoted, they are ordinary strings.
STRUCTURAL = frozenset({"=", "{", "}", "[", "]"})
# strtol works on a C long; piranha then stores into an int (reference 1.1 rule 7).
C_LONG_MIN, C_LONG_MAX = -(2**63), 2**63 - 1
_C_INT = re.compile(r"([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)\Z")
_NUMERIC_HOST = re.compile(r"[0-9.]+\Z")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")

BLOCK_SCOPES = {"virtual": Scope.VIRTUAL, "failover": Scope.FAILOVER, "server": Scope.SERVER}


class Resolver(Protocol):
    """Name look-ups the grammar allows: host names and tcp service names."""

    def host(self, name: str) -> IPv4Address | None: ...

    def port(self, name: str) -> int | None: ...


class SystemResolver:
    """The machine's resolver and /etc/services, as piranha used them."""

    def host(self, name: str) -> IPv4Address | None:
        try:
            infos = socket.getaddrinfo(name, None, socket.AF_INET, socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            return None
        return IPv4Address(infos[0][4][0]) if infos else None

    def port(self, name: str) -> int | None:
        try:
            return socket.getservbyname(name, "tcp")  # piranha getPort(): tcp
        except (OSError, UnicodeError):
            return None


class StaticResolver:
    """A resolver from fixed tables: no DNS, no /etc/services (tests, offline tools)."""

    def __init__(self, hosts: Mapping[str, str] | None = None,
                 ports: Mapping[str, int] | None = None):
        self.hosts = {k: IPv4Address(v) for k, v in (hosts or {}).items()}
        self.ports = dict(ports or {})

    def host(self, name: str) -> IPv4Address | None:
        return self.hosts.get(name)

    def port(self, name: str) -> int | None:
        return self.ports.get(name)


@dataclass(frozen=True)
class Token:
    text: str
    quoted: bool = False

    def bare(self, word: str) -> bool:
        """True when this is the grammar word `word` written without quotes."""
        return not self.quoted and self.text == word


@dataclass(frozen=True)
class ParseResult:
    """A best-effort Config (also when there are errors) and every diagnostic."""

    config: Config
    diagnostics: tuple[Diagnostic, ...]

    @property
    def ok(self) -> bool:
        return not dg.has_errors(self.diagnostics)


class LineError(Exception):
    """A problem with one line: becomes an error diagnostic for that line."""


def split_lines(text: str) -> list[str]:
    """Split on CR LF, CR or LF: DOS files count each line once."""
    lines = _LINE_BREAK.split(text)
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def tokenize(line: str) -> list[Token]:
    """Split one line into tokens; [] for blank and comment lines.

    A token starting with a quote runs to the next identical quote (blanks allowed
    inside) and must be followed by a blank or the end of the line.  A quote anywhere
    else in a token is an ordinary character.
    """
    tokens: list[Token] = []
    i, n = 0, len(line)
    while i < n and line[i] in BLANKS:
        i += 1
    if i < n and line[i] == "#":
        return []
    while i < n:
        if line[i] in BLANKS:
            i += 1
            continue
        if line[i] in QUOTES:
            quote = line[i]
            end = line.find(quote, i + 1)
            if end < 0:
                raise LineError(f"{dg.QUOTATION_MISMATCH}: no closing {quote} on this line")
            if end + 1 < n and line[end + 1] not in BLANKS:
                raise LineError(
                    f"{dg.QUOTATION_MISMATCH}: closing {quote} must be followed by a blank"
                )
            tokens.append(Token(line[i + 1:end], quoted=True))
            i = end + 1
        else:
            j = i
            while j < n and line[j] not in BLANKS:
                j += 1
            tokens.append(Token(line[i:j]))
            i = j
    return tokens


def parse_c_int(text: str) -> tuple[int, str | None]:
    """C strtol(text, &end, 0) that must consume everything: (value, octal note)."""
    m = _C_INT.match(text)
    if not m:
        raise LineError(f'{dg.INT_EXPECTED}, not "{text}"')
    sign, digits = m.groups()
    if len(digits) > 1 and digits[0] == "0" and digits[1] not in "xX":
        value = int(digits[1:], 8)  # C octal "017"; Python's base 0 refuses it
    else:
        value = int(digits, 0)
    if sign == "-":
        value = -value
    if not C_LONG_MIN <= value <= C_LONG_MAX:
        raise LineError(f'{dg.INT_EXPECTED}: "{text}" is out of range')
    note = None
    if len(digits) > 1 and digits[0] == "0" and digits[1] not in "xX" and int(digits, 10) != abs(value):
        note = (f'"{text}" has a leading 0 and is read as octal, = {value} (C strtol, as '
                f"piranha does); write {value} if that is meant, or drop the leading 0")
    return value, note


def _strict_ipv4(text: str) -> IPv4Address | None:
    try:
        return IPv4Address(text)
    except (AddressValueError, ValueError):
        return None


class _Values:
    """Reads keyword values from tokens; collects notes (warnings) on the way."""

    def __init__(self, resolver: Resolver):
        self.resolver = resolver
        self.notes: list[str] = []

    def integer(self, tok: Token) -> int:
        value, note = parse_c_int(tok.text)
        if note:
            self.notes.append(note)
        return value

    def seconds(self, tok: Token) -> int | float:
        """A whole number as ``integer`` reads it, or a plain decimal such as 0.5."""
        if re.fullmatch(r"[0-9]*\.[0-9]+|[0-9]+\.", tok.text):
            return float(tok.text)
        return self.integer(tok)

    def boolean(self, tok: Token) -> bool:
        value = self.integer(tok)  # piranha getBoolean() reads a number first
        if value not in (0, 1):
            raise LineError(f'{dg.BOOL_EXPECTED} (0 or 1), not "{tok.text}"')
        return bool(value)

    def port(self, tok: Token) -> int:
        try:
            return self.integer(tok)
        except LineError:
            pass
        port = self.resolver.port(tok.text) if tok.text else None
        if port is None:
            raise LineError(f'{dg.BAD_ARGUMENT}: "{tok.text}" is neither a port number '
                            "nor a tcp service name in /etc/services")
        return port

    def host(self, tok: Token) -> IPv4Address:
        ip = _strict_ipv4(tok.text)
        if ip is not None:
            return ip
        if not tok.text or _NUMERIC_HOST.match(tok.text):
            raise LineError(f'{dg.BAD_HOSTNAME} "{tok.text}" (a dotted quad is four '
                            "decimal numbers 0-255 without leading zeros)")
        ip = self.resolver.host(tok.text)
        if ip is None:
            raise LineError(f'{dg.BAD_HOSTNAME} "{tok.text}" (does not resolve to an IPv4 address)')
        return ip

    def addr(self, tok: Token) -> IPv4Address:
        ip = _strict_ipv4(tok.text)
        if ip is None:
            raise LineError(f'{dg.BAD_HOSTNAME} "{tok.text}" (a dotted quad is required here)')
        return ip

    def mask(self, tok: Token) -> IPv4Address:
        ip = _strict_ipv4(tok.text)
        if ip is None:
            raise LineError(f'{dg.BAD_NETMASK}: "{tok.text}" is not a dotted quad')
        return ip

    def read(self, kw: Keyword, values: list[Token]) -> Any:
        """The value of `kw` from the tokens after `=`."""
        if kw.kind is Kind.LIST:
            return self._list(values)
        count = 2 if kw.kind is Kind.HOST_DEV else 1
        if len(values) < count:
            raise LineError(f"{dg.MISSING_ARGUMENTS}: {kw.name} takes {count} "
                            f"value{'s' if count > 1 else ''}")
        if len(values) > count:
            extra = " ".join(t.text for t in values[count:])
            hint = " (there are no trailing comments in lvs.cf)" if values[count].text.startswith("#") else ""
            raise LineError(f'{dg.UNEXPECTED_ARGUMENTS} "{extra}"{hint}')
        tok = values[0]
        if kw.kind is Kind.INT:
            return self.integer(tok)
        if kw.kind is Kind.SECONDS:
            return self.seconds(tok)
        if kw.kind is Kind.BOOL:
            return self.boolean(tok)
        if kw.kind is Kind.PORT:
            return self.port(tok)
        if kw.kind is Kind.HOST:
            return self.host(tok)
        if kw.kind is Kind.ADDR:
            return self.addr(tok)
        if kw.kind is Kind.MASK:
            return self.mask(tok)
        if kw.kind is Kind.STRING:
            return tok.text
        if kw.kind is Kind.ENUM:
            if tok.text not in kw.choices:
                raise LineError(f'{dg.BAD_ARGUMENT} "{tok.text}" for {kw.name} '
                                f"(one of: {' '.join(kw.choices)})")
            return tok.text
        if kw.kind is Kind.HOST_DEV:
            return BoundAddress(self.host(tok), values[1].text)
        raise AssertionError(f"unhandled kind {kw.kind}")  # table invariant

    @staticmethod
    def _list(values: list[Token]) -> tuple[str, ...]:
        if not values or not values[0].bare("["):
            raise LineError(f'{dg.LIST_EXPECTED}: write "[ item item ... ]"')
        for i, tok in enumerate(values[1:], start=1):
            if tok.bare("]"):
                if i + 1 < len(values):
                    extra = " ".join(t.text for t in values[i + 1:])
                    raise LineError(f'{dg.UNEXPECTED_ARGUMENTS} "{extra}" after "]"')
                return tuple(t.text for t in values[1:i])
        raise LineError(f'{dg.LIST_EXPECTED}: no closing "]"')


@dataclass
class _Block:
    """A block being read."""

    scope: Scope
    name: str
    line: int
    orphan: bool = False  # opened for error recovery only; its contents are dropped
    values: dict[str, Any] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)
    servers: list[RealServer] = field(default_factory=list)
    # servers without a port of their own, with the port piranha would have given them
    portless: list[tuple[RealServer, int]] = field(default_factory=list)


class _Parser:
    def __init__(self, text: str, filename: str, resolver: Resolver):
        self.text = text
        self.filename = filename
        self.values = _Values(resolver)
        self.diags: list[Diagnostic] = []
        self.top = _Block(Scope.GLOBAL, "", 0)
        self.stack: list[_Block] = []
        self.virtuals: list[VirtualServer] = []
        self.failovers: list[FailoverService] = []
        self.first_block: dict[Scope, tuple[str, int]] = {}
        self.reported_mix = False
        self.swallow_brace = False  # after "virtual NAME" without "{": accept a lone "{"

    # -- diagnostics ---------------------------------------------------------------
    def report(self, line: int, severity: Severity, message: str) -> None:
        self.diags.append(Diagnostic(self.filename, line, severity, message))

    def error(self, line: int, message: str) -> None:
        self.report(line, Severity.ERROR, message)

    # -- main loop -----------------------------------------------------------------
    def run(self) -> ParseResult:
        lines = split_lines(self.text)
        significant = 0
        for lineno, raw in enumerate(lines, start=1):
            try:
                toks = tokenize(raw)
            except LineError as exc:
                significant += 1
                self.error(lineno, str(exc))
                continue
            if not toks:
                continue
            significant += 1
            self.statement(lineno, toks)
        if significant == 0:
            self.error(0, f"{dg.EMPTY_CONFIGURATION}: no statements in the file")
        if self.stack:
            opened = ", ".join(f"{b.scope.value} \"{b.name}\" (line {b.line})"
                               for b in reversed(self.stack))
            self.error(max(len(lines), 1), f"{dg.UNEXPECTED_EOF}: missing \"}}\" for {opened}")
            while self.stack:
                self.close_block()
        config = self.build_config()
        return ParseResult(config, tuple(self.diags))

    def scope(self) -> Scope:
        return self.stack[-1].scope if self.stack else Scope.GLOBAL

    def block(self) -> _Block:
        return self.stack[-1] if self.stack else self.top

    def statement(self, lineno: int, toks: list[Token]) -> None:
        head = toks[0]
        if self.swallow_brace:
            self.swallow_brace = False
            if len(toks) == 1 and head.bare("{"):
                return
        if head.bare("}"):
            if not self.stack:
                self.error(lineno, f'{dg.UNKNOWN_COMMAND} "}}": no block is open here')
                return
            if len(toks) > 1:
                extra = " ".join(t.text for t in toks[1:])
                self.error(lineno, f'{dg.UNEXPECTED_ARGUMENTS} "{extra}" after "}}"')
            self.close_block()
            return
        if head.text in BLOCK_SCOPES:
            self.opener(lineno, toks)
            return
        self.assignment(lineno, toks)

    # -- blocks ----------------------------------------------------------------------
    def opener(self, lineno: int, toks: list[Token]) -> None:
        word = toks[0].text
        kind = BLOCK_SCOPES[word]
        here = self.scope()
        valid_here = (kind is Scope.SERVER and here is Scope.VIRTUAL) or (
            kind is not Scope.SERVER and here is Scope.GLOBAL)
        orphan = False
        if not valid_here:
            if kind is Scope.SERVER and here is Scope.SERVER:
                parent = self.stack[-1]
                self.error(lineno, f'{dg.UNKNOWN_COMMAND} "server" inside server "{parent.name}" '
                                   f"(line {parent.line}): is its \"}}\" missing?")
                self.close_block()
            elif kind is not Scope.SERVER and self.stack:
                outer = self.stack[0]
                self.error(lineno, f'{dg.UNKNOWN_COMMAND} "{word}" inside {outer.scope.value} '
                                   f'"{outer.name}" (line {outer.line}): is a "}}" missing?')
                while self.stack:
                    self.close_block()
            else:
                where = "a failover block" if here is Scope.FAILOVER else "the global section"
                self.error(lineno, f'{dg.UNKNOWN_COMMAND} "server" in {where}: server blocks '
                                   "belong inside a virtual block")
                orphan = True
        if kind is Scope.SERVER:  # after recovery the enclosing block may have changed
            parent = self.stack[-1] if self.stack else None
            orphan = orphan or parent is None or parent.scope is not Scope.VIRTUAL or parent.orphan
        name = toks[1].text if len(toks) > 1 and not toks[1].bare("{") else ""
        self.opener_shape(lineno, word, name, toks)
        if kind is not Scope.SERVER:
            self.check_mix(kind, name, lineno)
        self.stack.append(_Block(kind, name, lineno, orphan=orphan))

    def opener_shape(self, lineno: int, word: str, name: str, toks: list[Token]) -> None:
        """Exactly `WORD NAME {` (piranha: MISSINGARGS / EXTRAARGS otherwise)."""
        n = len(toks)
        if n == 3 and toks[2].bare("{"):
            return
        if n == 2 and name:
            self.error(lineno, f'{dg.MISSING_ARGUMENTS}: "{{" expected after "{word} {name}" '
                               "on the same line")
            self.swallow_brace = True
        elif n <= 2:
            self.error(lineno, f'{dg.MISSING_ARGUMENTS}: write "{word} NAME {{"')
        elif n == 3:
            self.error(lineno, f'{dg.MISSING_ARGUMENTS}: "{{" expected after "{word} {name}", '
                               f'not "{toks[2].text}"')
        elif toks[2].bare("{"):
            extra = " ".join(t.text for t in toks[3:])
            self.error(lineno, f'{dg.UNEXPECTED_ARGUMENTS} "{extra}" after "{{"')
        else:
            extra = " ".join(t.text for t in (toks[2:-1] if toks[-1].bare("{") else toks[2:]))
            self.error(lineno, f'{dg.UNEXPECTED_ARGUMENTS} "{extra}": write "{word} NAME {{" '
                               "(quote a name that has blanks)")

    def check_mix(self, kind: Scope, name: str, lineno: int) -> None:
        other = Scope.FAILOVER if kind is Scope.VIRTUAL else Scope.VIRTUAL
        if other in self.first_block and not self.reported_mix:
            oname, oline = self.first_block[other]
            self.error(lineno, f'{dg.ONLY_ONE_SERVICE} ({kind.value} "{name}" here, '
                               f'{other.value} "{oname}" at line {oline}); service = lvs|fos '
                               "selects one kind")
            self.reported_mix = True
        self.first_block.setdefault(kind, (name, lineno))

    def close_block(self) -> None:
        blk = self.stack.pop()
        if blk.orphan:
            return
        if blk.scope is Scope.SERVER:
            server = RealServer(name=blk.name, line=blk.line, lines=dict(blk.lines), **blk.values)
            parent = self.stack[-1]
            parent.servers.append(server)
            if server.port is None:
                parent.portless.append((server, parent.values.get("port", VIRTUAL_PORT_DEFAULT)))
        elif blk.scope is Scope.VIRTUAL:
            virtual = VirtualServer(name=blk.name, line=blk.line, lines=dict(blk.lines),
                                    servers=tuple(blk.servers), **blk.values)
            self.warn_port_order(blk, virtual)
            self.virtuals.append(virtual)
        elif blk.scope is Scope.FAILOVER:
            self.failovers.append(FailoverService(name=blk.name, line=blk.line,
                                                  lines=dict(blk.lines), **blk.values))

    def warn_port_order(self, blk: _Block, virtual: VirtualServer) -> None:
        """Quirk 1.1 rule 10: piranha's servers keep the port current at their block."""
        stale = [(s, p) for s, p in blk.portless if p != virtual.port]
        if not stale:
            return
        names = ", ".join(f'"{s.name}" (line {s.line}) would have used {p}' for s, p in stale)
        self.report(blk.lines.get("port", blk.line), Severity.WARNING,
                    f"port = {virtual.port} comes after server blocks without a port of their "
                    f"own: pylvs gives them port {virtual.port}, but piranha gave each the port "
                    f"set when its block started: {names}; put port before the server blocks "
                    "or give each server its port")

    # -- assignments -----------------------------------------------------------------
    def assignment(self, lineno: int, toks: list[Token]) -> None:
        scope = self.scope()
        table = KEYWORDS_BY_SCOPE[scope]
        head = toks[0].text
        kw = table.get(head)
        if kw is None or kw.kind is Kind.BLOCK:
            key = head.partition("=")[0]
            if "=" in head and key in table and table[key].kind is not Kind.BLOCK:
                self.error(lineno, f'{dg.EQUAL_EXPECTED} "{key}": write "{key} = ..." '
                                   'with blanks around "="')
            else:
                self.error(lineno, f'{dg.UNKNOWN_COMMAND} "{head}"{self.hint(key, scope)}')
            return
        if len(toks) < 2 or not toks[1].bare("="):
            self.error(lineno, f'{dg.EQUAL_EXPECTED} "{head}"')
            return
        self.values.notes.clear()
        try:
            value = self.values.read(kw, toks[2:])
            value = self.special(kw, scope, value)
        except LineError as exc:
            self.error(lineno, str(exc))
            return
        for note in self.values.notes:
            self.report(lineno, Severity.WARNING, note)
        blk = self.block()
        if kw.field in blk.lines:
            self.report(lineno, Severity.WARNING,
                        f"{kw.name} is given twice in this {scope.value} section (first at line "
                        f"{blk.lines[kw.field]}); the last value is used")
        blk.values[kw.field] = value
        blk.lines[kw.field] = lineno

    @staticmethod
    def special(kw: Keyword, scope: Scope, value: Any) -> Any:
        """Per-keyword rules of piranha's parser on top of the value kind."""
        private_or_primary = ("primary", "primary_private", "backup_private")
        if scope is Scope.GLOBAL and kw.name in private_or_primary and value == ANY_ADDRESS:
            # piranha: LVS_ERROR_BADHOSTNAME for 0.0.0.0
            raise LineError(f"{dg.BAD_HOSTNAME}: {kw.name} cannot be 0.0.0.0")
        if kw.name == "pmask" and value == HOST_MASK:
            return ANY_ADDRESS  # piranha turns /32 into "unset" (reference 1.3)
        if kw.name in ("sorry_server", "master") and value == ANY_ADDRESS:
            return None  # 0.0.0.0 is piranha's "none"
        return value

    @staticmethod
    def hint(word: str, scope: Scope) -> str:
        homes = [k.scope.value for k in KEYWORDS if k.name == word and k.scope is not scope]
        if homes:
            return f" in {'the ' if scope is Scope.GLOBAL else 'a '}{scope.value} " \
                   f"{'section' if scope is Scope.GLOBAL else 'block'} " \
                   f"({word} belongs in: {', '.join(homes)})"
        names = [k.name for k in KEYWORDS_BY_SCOPE[scope].values()]
        close = difflib.get_close_matches(word, names, n=1)
        return f" (did you mean {close[0]}?)" if close else ""

    def build_config(self) -> Config:
        return Config(virtuals=tuple(self.virtuals), failovers=tuple(self.failovers),
                      lines=dict(self.top.lines), **self.top.values)


def parse(text: str, filename: str = "lvs.cf", resolver: Resolver | None = None) -> ParseResult:
    """Parse lvs.cf text.  Never raises for bad input: look at the diagnostics."""
    return _Parser(text, filename, resolver or SystemResolver()).run()


def read_text(path: str) -> tuple[str | None, Diagnostic | None]:
    """Read a config file: (text, None) or (None, the I/O diagnostic)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        return None, Diagnostic(path, 0, Severity.ERROR, f"{dg.IO_ERROR}: {reason}")
    if not data:
        return None, Diagnostic(path, 0, Severity.ERROR, f"{dg.EMPTY_CONFIGURATION}: the file is empty")
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return None, Diagnostic(path, line, Severity.ERROR,
                                f"{dg.IO_ERROR}: byte {exc.start} is not valid UTF-8")


def parse_file(path: str, resolver: Resolver | None = None) -> ParseResult:
    """Read and parse a file; an unreadable or empty file gives an empty Config."""
    text, problem = read_text(path)
    if problem is not None:
        return ParseResult(Config(), (problem,))
    assert text is not None
    return parse(text, filename=path, resolver=resolver)
