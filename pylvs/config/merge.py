"""Save lvs.cf the way Piranha's ``lvsMergeConfig`` did: an edit changes only the lines it must.

Piranha's configuration tool wrote the file through ``lvsMergeConfig``, which kept the
operator's comments, blank lines and spacing (``../shared/spec/lvs-reference.md`` section 5);
regenerating the file with ``dump`` would lose them and make every save a whole-file diff.
``merge`` writes a desired Config over the current text instead: blocks are matched by name,
a keyword line is touched only when its value changes, new lines and blocks take the file's
indentation.  ``line_diff`` is what the web tool shows before it applies a change.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pylvs.config.diagnostics import Severity
from pylvs.config.dump import (
    BLOCK_INDENT,
    SERVER_INDENT,
    UnrepresentableError,
    _failover,
    _server,
    _should_write,
    _value_text,
    _virtual,
    quote,
)
from pylvs.config.model import KEYWORDS_BY_SCOPE, Config, Kind, Scope
from pylvs.config.parse import _LINE_BREAK, BLANKS, BLOCK_SCOPES, Resolver, parse, split_lines, tokenize

_KEEP = object()  # _Edit.replace has no entry: the line stays as it is


@dataclass
class _Span:
    """Where one scope sits in the text (0-based line indexes)."""

    word: str  # virtual, server, failover; "" for the global scope
    opener: int
    closer: int
    keys: dict[str, list[int]] = field(default_factory=dict)  # model field -> its lines, in order
    blocks: list[_Span] = field(default_factory=list)

    def children(self, word: str) -> list[_Span]:
        return [b for b in self.blocks if b.word == word]


def _scan(contents: Sequence[str]) -> _Span:
    """The block structure of text that parses without errors."""
    top = _Span("", -1, len(contents))
    stack = [top]
    for i, raw in enumerate(contents):
        toks = tokenize(raw)
        if not toks:
            continue
        if toks[0].bare("}"):
            stack.pop().closer = i
        elif toks[0].text in BLOCK_SCOPES:
            span = _Span(toks[0].text, i, i)
            stack[-1].blocks.append(span)
            stack.append(span)
        else:
            scope = BLOCK_SCOPES.get(stack[-1].word, Scope.GLOBAL)
            stack[-1].keys.setdefault(KEYWORDS_BY_SCOPE[scope][toks[0].text].field, []).append(i)
    return top


def _split(text: str) -> list[tuple[str, str]]:
    """The lines of `text` as split_lines cuts them, each with its own line break."""
    lines = []
    pos = 0
    for m in _LINE_BREAK.finditer(text):
        lines.append((text[pos:m.start()], m.group()))
        pos = m.end()
    if pos < len(text):
        lines.append((text[pos:], ""))
    return lines


def _indent(line: str) -> str:
    return line[:len(line) - len(line.lstrip(BLANKS))]


def _stable(seq: Sequence[int]) -> set[int]:
    """A longest increasing subsequence of `seq`: the matched blocks that can stay put
    while the others move to give ``new``'s order."""
    prev: list[int | None] = []
    length: list[int] = []
    for k, x in enumerate(seq):
        best = max((m for m in range(k) if seq[m] < x), key=lambda m: length[m], default=None)
        prev.append(best)
        length.append(1 if best is None else length[best] + 1)
    out: set[int] = set()
    k = max(range(len(seq)), key=lambda m: length[m], default=None)
    while k is not None:
        out.add(seq[k])
        k = prev[k]
    return out


def _check_writable(obj: Any, scope: Scope, what: str) -> None:
    """Fields only pylvsadm sets have no lvs.cf keyword: refuse rather than drop them."""
    written = {kw.field for kw in KEYWORDS_BY_SCOPE[scope].values()} | {"name", "line", "lines"}
    lost = [f.name for f in dataclasses.fields(obj)
            if f.name not in written and getattr(obj, f.name) != f.default]
    if lost:
        raise UnrepresentableError(f"{what}: {', '.join(lost)} cannot be written in lvs.cf")


class _Edit:
    """The old lines plus what replaces them and what is inserted around them."""

    def __init__(self, lines: list[tuple[str, str]], top: _Span, renames: Mapping[tuple[str, ...], str]):
        self.lines = lines
        self.renames = renames
        self.replace: dict[int, str | None] = {}  # None: the line is removed
        # Inserted items: a line of text, or the opener index of a block moved there.
        self.before: defaultdict[int, list[str | int]] = defaultdict(list)
        self.after: defaultdict[int, list[str | int]] = defaultdict(list)
        self.moved: dict[int, int] = {}  # opener -> closer of blocks written elsewhere
        self.top = top

    def content(self, i: int) -> str:
        return self.lines[i][0]

    def layout(self, near: _Span | None) -> tuple[str, str, str]:
        """(block body, server opener, server body) indentation for new lines: as in the
        block `near`, else as in the file's blocks, else dump's."""
        for blocks in ([near] if near else [], self.top.blocks):
            servers = [s for b in blocks for s in b.blocks]
            seen = [next((_indent(self.content(i)) for i in lines), None) for lines in (
                (i for b in blocks for occ in b.keys.values() for i in occ),
                (s.opener for s in servers),
                (i for s in servers for occ in s.keys.values() for i in occ))]
            if seen != [None] * 3:
                break  # else the loop ends on the file's blocks (all None: dump's layout)
        body, server, server_body = seen
        body = next((x for x in (body, server) if x is not None), BLOCK_INDENT)
        server = body if server is None else server
        # piranha's 5-then-9 layout adds 4 for a server body; any other layout repeats its step
        step = "    " if body == BLOCK_INDENT else body
        return body, server, server + step if server_body is None else server_body

    # -- keywords ------------------------------------------------------------------------
    def keys(self, span: _Span, scope: Scope, old: Any, new: Any, near: _Span | None) -> None:
        """Rewrite, remove or add the keyword lines of one matched scope (`near`: the
        virtual or failover block it is in, for the indentation of new lines)."""
        if scope is Scope.GLOBAL:
            first_block = min((b.opener for b in span.blocks), default=span.closer)
            anchor = max((i for occ in span.keys.values() for i in occ if i < first_block), default=None)
            if anchor is None:  # at the top, after the leading comment lines
                anchor = -1
                while anchor + 1 < len(self.lines) and self.content(anchor + 1).lstrip(BLANKS).startswith("#"):
                    anchor += 1
            indent = _indent(self.content(anchor)) if anchor >= 0 else ""
        else:
            anchor = max((i for occ in span.keys.values() for i in occ), default=None)
            if anchor is None:
                anchor, indent = span.opener, self.layout(near)[2 if scope is Scope.SERVER else 0]
            else:
                indent = _indent(self.content(anchor))
        for kw in KEYWORDS_BY_SCOPE[scope].values():
            if kw.kind is Kind.BLOCK or getattr(old, kw.field) == getattr(new, kw.field):
                continue
            value = getattr(new, kw.field)
            line = f"{kw.name} = {_value_text(kw, value)}" if _should_write(kw, value) else None
            *earlier, last = span.keys.get(kw.field, [None])
            for i in earlier:  # the parser keeps the last; earlier ones would take over or mislead
                self.replace[i] = None
            if last is not None:
                self.replace[last] = None if line is None else _indent(self.content(last)) + line
            elif line is not None:
                self.after[anchor].append(indent + line)

    # -- blocks --------------------------------------------------------------------------
    def blocks(self, parent: _Span, word: str, olds: Sequence[Any], news: Sequence[Any],
               path: tuple[str, ...] | None) -> None:
        """Match the `word` blocks of `parent` to ``news`` by (renamed) name, merge the
        matched ones, remove the rest, and place new and moved blocks so that the text's
        order is ``news``'s order.  path: the rename key prefix (None: not renamed)."""
        spans, scope = parent.children(word), BLOCK_SCOPES[word]
        renamed = [path is not None and (*path, o.name) in self.renames for o in olds]
        unused: dict[str, list[int]] = defaultdict(list)  # new name -> old blocks, renamed ones first
        for i in sorted(range(len(olds)), key=lambda i: not renamed[i]):
            unused[self.renames[(*path, olds[i].name)] if renamed[i] else olds[i].name].append(i)
        matches = [unused[n.name].pop(0) if unused[n.name] else None for n in news]
        for left in unused.values():
            for i in left:
                for k in range(spans[i].opener, spans[i].closer + 1):
                    self.replace[k] = None
        stable = _stable([i for i in matches if i is not None])
        anchor: int | None = None  # closer of the last block that stays put
        head: list[str | int] = []  # blocks that come before every block that stays put
        for new, i in zip(news, matches, strict=True):
            if i is not None:
                self.block(spans[i], scope, olds[i], new, parent, path)
            if i is not None and i in stable:
                self.before[spans[i].opener].extend(head)
                head, anchor = [], spans[i].closer
                continue
            if i is None:
                item: list[str | int] = self.fresh(new, scope, parent)
            else:
                self.moved[spans[i].opener] = spans[i].closer
                item = [spans[i].opener]
            if anchor is None:
                head.extend([*item, ""])
            else:
                self.after[anchor].extend(["", *item])
        if head:  # nothing stays put: after the removed blocks, else at the end of the parent
            where, at = (self.after, spans[-1].closer) if spans else (self.before, parent.closer)
            where[at].extend(["", *head[:-1]])

    def block(self, span: _Span, scope: Scope, old: Any, new: Any, parent: _Span,
              path: tuple[str, ...] | None) -> None:
        if new.name != old.name:
            self.replace[span.opener] = f"{_indent(self.content(span.opener))}{span.word} {quote(new.name)} {{"
        self.keys(span, scope, old, new, parent if scope is Scope.SERVER else span)
        if scope is Scope.VIRTUAL:
            assert path is not None
            self.blocks(span, "server", old.servers, new.servers, (*path, old.name))

    def fresh(self, new: Any, scope: Scope, parent: _Span) -> list[str | int]:
        """A block that is not in the text: dump's lines in the file's indentation."""
        body, server, server_body = self.layout(parent if parent.word else None)
        lines = {Scope.VIRTUAL: _virtual, Scope.SERVER: _server, Scope.FAILOVER: _failover}[scope](new)
        out: list[str | int] = []
        for line in lines:
            text = line.lstrip(" ")
            indent = line[:len(line) - len(text)]
            if indent == SERVER_INDENT:
                indent = server_body
            elif indent == BLOCK_INDENT:  # dump puts server openers and closers at the body's level
                indent = server if text == "}" or text.startswith("server ") else body
            out.append(indent + text)
        return out

    # -- output --------------------------------------------------------------------------
    def emit(self, first: int, last: int, out: list[tuple[str, str | None]]) -> None:
        """Lines first..last (-1 and len(lines) stand for the file's ends) with what is
        inserted between them; a moved block is skipped here and written at its anchor."""
        i = first
        while i <= last:
            if i != first:
                self.insert(self.before[i], out)
            if i != first and i in self.moved:
                i = self.moved[i]
            elif 0 <= i < len(self.lines):
                line = self.replace.get(i, _KEEP)
                if line is _KEEP:
                    out.append(self.lines[i])
                elif line is not None:
                    out.append((line, self.lines[i][1]))
            if i != last:
                self.insert(self.after[i], out)
            i += 1

    def insert(self, items: list[str | int], out: list[tuple[str, str | None]]) -> None:
        for item in items:
            if isinstance(item, int):
                self.emit(item, self.moved[item], out)
            else:
                out.append((item, None))

    def text(self, original: str) -> str:
        out: list[tuple[str, str | None]] = []
        self.emit(-1, len(self.lines), out)
        m = _LINE_BREAK.search(original)
        eol = m.group() if m else "\n"
        pieces = [line + (own or eol) for line, own in out]
        if pieces and not original.endswith(("\n", "\r")):
            pieces[-1] = out[-1][0]
        return "".join(pieces)


def merge(text: str, new: Config, *, renames: Mapping[tuple[str, ...], str] | None = None,
          filename: str = "lvs.cf", resolver: Resolver | None = None) -> str:
    """The text of ``new`` written over ``text``, changing only the lines that must change.

    ``text`` must parse without errors (ValueError otherwise).  Blocks are matched by name
    (the k-th block of a name to the k-th of that name in ``new``): ``virtual NAME``,
    ``server NAME`` within its virtual, ``failover NAME``.  ``renames`` maps an old path to
    a new name, ``("V",)`` for a virtual and ``("V", "S")`` for a server of virtual V (old
    names); the opener line is rewritten in place.  A rename naming no old block is ignored.
    Failover blocks are not renamed (a new name is a removal and an addition).

    A keyword whose value is unchanged keeps its line byte for byte.  A changed one is
    rewritten in place (indentation kept), removed when dump would not write it (default
    and not always written), or added after the last keyword line of its scope.  When a
    keyword is written twice and its value changes, the earlier lines are removed too.
    Removed blocks lose their opener to closer lines; new blocks are written as dump
    writes them (in the file's indentation) after the last block of their kind, else
    before the virtual's ``}`` (a server) or at the end of the file.  Blocks stay where
    they are unless ``new`` reorders them: then the fewest blocks move.

    ``parse(merge(text, new)).config == new`` whenever dump can write ``new``; strings it
    cannot quote, and fields only pylvsadm sets, raise UnrepresentableError.  Line breaks
    (LF, CR LF) and the presence of a final one are kept.
    """
    result = parse(text, filename, resolver)
    if not result.ok:
        errors = "; ".join(str(d) for d in result.diagnostics if d.severity is Severity.ERROR)
        raise ValueError(f"{filename} does not parse, so it cannot be merged: {errors}")
    old = result.config
    renames = renames or {}
    if any(len(key) not in (1, 2) for key in renames):
        raise ValueError("renames keys are (virtual,) or (virtual, server)")
    _check_writable(new, Scope.GLOBAL, "global section")
    for v in new.virtuals:
        _check_writable(v, Scope.VIRTUAL, f'virtual "{v.name}"')
        for server in v.servers:
            _check_writable(server, Scope.SERVER, f'server "{server.name}" of virtual "{v.name}"')
    lines = _split(text)
    top = _scan([content for content, _ in lines])
    edit = _Edit(lines, top, renames)
    edit.keys(top, Scope.GLOBAL, old, new, None)
    edit.blocks(top, "virtual", old.virtuals, new.virtuals, ())
    edit.blocks(top, "failover", old.failovers, new.failovers, None)
    return edit.text(text)


def bump_serial(config: Config) -> Config:
    """``config`` with serial_no + 1, as the GUI does on each save."""
    return dataclasses.replace(config, serial_no=config.serial_no + 1)


def line_diff(old: str, new: str, filename: str = "lvs.cf") -> str:
    """A unified diff of two lvs.cf texts ("" when their lines are the same)."""
    diff = difflib.unified_diff(split_lines(old), split_lines(new), filename, filename, "current", "new",
                                lineterm="")
    return "".join(line + "\n" for line in diff)
