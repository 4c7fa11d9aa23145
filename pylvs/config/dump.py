"""Config -> canonical lvs.cf text.  ``parse(dump(c)).config == c`` for every valid model.

Layout: global keywords in the keyword table's order, then each `virtual` block, then
each `failover` block.  Block bodies are indented 5 spaces and server bodies 9, as the
piranha GUI and the reference example write them.  A keyword is written when the GUI
always writes it (``Keyword.always_dump``) or when its value differs from the default.
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Address
from typing import Any

from pylvs.config.model import (
    ANY_ADDRESS,
    KEYWORDS_BY_SCOPE,
    BoundAddress,
    Config,
    FailoverService,
    Keyword,
    Kind,
    RealServer,
    Scope,
    VirtualServer,
)
from pylvs.config.parse import BLANKS, QUOTES, STRUCTURAL

BLOCK_INDENT = " " * 5  # piranha GUI / reference 1.6 layout
SERVER_INDENT = " " * 9
_UNWRITABLE = ("\r", "\n", "\0")


class UnrepresentableError(ValueError):
    """A string that lvs.cf quoting cannot carry."""


def quote_problem(text: str) -> str | None:
    """Why `text` cannot be written as one lvs.cf token, or None if it can."""
    if any(c in text for c in _UNWRITABLE):
        return "contains a line break or NUL character"
    if needs_quotes(text) and '"' in text and "'" in text:
        return "needs quoting (it has blanks or starts with a quote) but contains both quote kinds"
    return None


def needs_quotes(text: str) -> bool:
    return (not text or any(c in BLANKS for c in text) or text[0] in QUOTES
            or text in STRUCTURAL)


def quote(text: str) -> str:
    """One lvs.cf token for `text`: bare if possible, else in " or ' quotes."""
    problem = quote_problem(text)
    if problem is not None:
        raise UnrepresentableError(f"{text!r} cannot be written in lvs.cf: {problem}")
    if not needs_quotes(text):
        return text
    return f'"{text}"' if '"' not in text else f"'{text}'"


def _value_text(kw: Keyword, value: Any) -> str:
    if kw.kind is Kind.LIST:
        return " ".join(["[", *(quote(item) for item in value), "]"])
    if isinstance(value, BoundAddress):
        return f"{value.ip} {quote(value.device)}"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, IPv4Address)):
        return str(value)
    if isinstance(value, float):  # Kind.SECONDS: 0.5 stays 0.5, a whole 2.0 is written 2
        return str(int(value)) if value.is_integer() else repr(value)
    return quote(value)


def _should_write(kw: Keyword, value: Any) -> bool:
    if value is None:
        return False
    if kw.scope is Scope.GLOBAL and kw.name == "primary" and value == ANY_ADDRESS:
        return False  # "primary = 0.0.0.0" is a parse error; the default is unset
    return kw.always_dump or value != kw.default


def _lines(obj: Any, scope: Scope, indent: str) -> Iterable[str]:
    for kw in KEYWORDS_BY_SCOPE[scope].values():
        if kw.kind is Kind.BLOCK:
            continue
        value = getattr(obj, kw.field)
        if _should_write(kw, value):
            yield f"{indent}{kw.name} = {_value_text(kw, value)}"


def _server(server: RealServer) -> list[str]:
    return [f"{BLOCK_INDENT}server {quote(server.name)} {{",
            *_lines(server, Scope.SERVER, SERVER_INDENT),
            f"{BLOCK_INDENT}}}"]


def _virtual(virtual: VirtualServer) -> list[str]:
    out = [f"virtual {quote(virtual.name)} {{", *_lines(virtual, Scope.VIRTUAL, BLOCK_INDENT)]
    for server in virtual.servers:
        out.append("")
        out.extend(_server(server))
    out.append("}")
    return out


def _failover(failover: FailoverService) -> list[str]:
    return [f"failover {quote(failover.name)} {{",
            *_lines(failover, Scope.FAILOVER, BLOCK_INDENT), "}"]


def dump(config: Config, header: str | None = None) -> str:
    """The canonical lvs.cf text of `config` (raises UnrepresentableError)."""
    out: list[str] = []
    if header:
        out.extend(f"# {line}".rstrip() for line in header.splitlines())
    out.extend(_lines(config, Scope.GLOBAL, ""))
    for virtual in config.virtuals:
        out.append("")
        out.extend(_virtual(virtual))
    for failover in config.failovers:
        out.append("")
        out.extend(_failover(failover))
    return "\n".join(out) + "\n"
