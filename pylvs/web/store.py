"""lvs.cf as the web tool edits it: a draft per session, checked at every step, applied
atomically on a serial_no it has seen.

* Each panel's ACCEPT turns the session's draft (lvs.cf text) into a candidate: the form's
  values on the draft's Config, written over the draft's text by ``pylvs.config.merge``
  (only the lines that change), then parsed and checked as ``pylvs check`` does.  An edit
  whose fields draw an error, or that brings a new error anywhere, is refused and the
  draft stays as it was.  Piranha's GUI wrote the file at each ACCEPT; this one writes it
  only on APPLY, after showing the diff.
* APPLY writes the draft over the file only if the file is still the one the draft began
  from (same text, so same ``serial_no``): a second operator's apply on a stale serial is
  refused, never silently overwritten.  ``serial_no`` is bumped (as the GUI did), the file
  is replaced whole (temporary file, fsync, rename, directory fsync) and nothing is written
  while the checker reports any error.
"""

from __future__ import annotations

import dataclasses
import os
import re
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pylvs.config.check import check_text
from pylvs.config.diagnostics import Diagnostic, Severity
from pylvs.config.dump import UnrepresentableError, dump
from pylvs.config.merge import line_diff, merge
from pylvs.config.model import KEYWORDS_BY_SCOPE, Config, Scope
from pylvs.config.parse import parse
from pylvs.ha.confsync import write_atomically

FRESH_HEADER = "lvs.cf written by pylvs web (the Piranha configuration tool's panels)"
MAX_FILE = 1 << 20  # lvs.cf larger than this is not something the panels made
_LINE_REF = re.compile(r"\bline \d+\b")  # "(line 12)" in a message moves when lines are added


class StoreError(Exception):
    """The file cannot be edited or written; the message says why and where."""


@dataclass
class Draft:
    """A session's pending lvs.cf: the text it began from and the text with the edits."""

    base_text: str
    base_serial: int
    text: str
    version: int = 0  # bumped at each accepted edit: the APPLY page names the version it showed
    edits: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return self.text != self.base_text


@dataclass
class Proposal:
    """An edit tried on a draft: the candidate text, its diagnostics, which of them sit on
    the edited fields, and which errors the edit brought."""

    text: str
    config: Config
    diagnostics: tuple[Diagnostic, ...]
    field_errors: dict[str, str]
    new_errors: list[Diagnostic]

    @property
    def ok(self) -> bool:
        return not self.field_errors and not self.new_errors


@dataclass
class Applied:
    serial_no: int
    path: str
    diff: str


def errors_of(diagnostics) -> list[Diagnostic]:
    return [d for d in diagnostics if d.severity is Severity.ERROR]


def _message_key(d: Diagnostic) -> str:
    return _LINE_REF.sub("line N", d.message)


class Store:
    def __init__(self, path: str, resolver: Any = None) -> None:
        self.path = path
        self.resolver = resolver
        # The last look at the file and the rename happen under this lock, so two APPLYs
        # in this process never both pass the stale check (the checks run outside it).
        self._write_lock = threading.Lock()

    # -- reading ---------------------------------------------------------------------------
    def disk(self) -> str:
        """The file's text ("" when there is none yet: a fresh box)."""
        try:
            with open(self.path, "rb") as f:
                data = f.read(MAX_FILE + 1)
        except FileNotFoundError:
            return ""
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot read it: {exc.strerror}") from None
        if len(data) > MAX_FILE:
            raise StoreError(f"{self.path}: larger than {MAX_FILE} bytes")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise StoreError(f"{self.path}: not UTF-8 (byte {data[exc.start]:#04x} at offset {exc.start}); the panels "
                             "write UTF-8: convert it first (e.g. iconv -f latin1 -t utf-8)") from None

    def serial_of(self, text: str) -> int:
        return parse(text, self.path, self.resolver).config.serial_no if text.strip() else 0

    def begin(self) -> Draft:
        """A draft of the file as it is now.  StoreError when the file does not parse (the
        panels cannot place their edits in a file they cannot read): fix it by hand first."""
        text = self.disk()
        if not text.strip():
            return Draft(text, 0, dump(Config(), header=FRESH_HEADER))
        parsed = parse(text, self.path, self.resolver)
        errors = errors_of(parsed.diagnostics)
        if errors:
            raise StoreError("the file does not parse, so the panels cannot edit it; fix it by hand "
                             "(pylvs check names every line): " + "; ".join(map(str, errors[:5])))  # fmt: skip
        return Draft(text, parsed.config.serial_no, text)

    def config_of(self, draft: Draft) -> Config:
        return parse(draft.text, self.path, self.resolver).config

    def on_disk(self) -> Config:
        """The file's Config as it is now (as far as it parses)."""
        return parse(self.disk(), self.path, self.resolver).config

    def check(self, text: str) -> tuple[Diagnostic, ...]:
        return check_text(text, self.path, self.resolver).diagnostics

    # -- editing ---------------------------------------------------------------------------
    def propose(self, draft: Draft, new: Config, *, renames: Mapping[tuple[str, ...], str] | None = None,
                scope: tuple[str, ...] | None = None, fields: Mapping[str, str] | None = None) -> Proposal:
        """``new`` written over the draft.  ``scope`` names the edited block (() global,
        (V,) a virtual, (V, S) a server, by their new names) and ``fields`` maps its lvs.cf
        keywords to form field names, so findings on those lines sit beside the fields."""
        try:
            text = merge(draft.text, new, renames=renames, filename=self.path, resolver=self.resolver)
        except UnrepresentableError as exc:
            raise StoreError(str(exc)) from None
        result = check_text(text, self.path, self.resolver)
        by_line = _field_lines(result.config, scope, fields or {}) if scope is not None else {}
        field_errors: dict[str, str] = {}
        for d in errors_of(result.diagnostics):
            name = by_line.get(d.line)
            if name is not None:
                field_errors.setdefault(name, d.message)
        before = Counter(_message_key(d) for d in errors_of(self.check(draft.text)))
        new_errors = []
        for d in errors_of(result.diagnostics):
            k = _message_key(d)
            if before[k]:
                before[k] -= 1
            elif d.line not in by_line:
                new_errors.append(d)
        return Proposal(text, result.config, result.diagnostics, field_errors, new_errors)

    @staticmethod
    def accept(draft: Draft, proposal: Proposal, what: str) -> None:
        if proposal.text != draft.text:
            draft.text = proposal.text
            draft.version += 1
            draft.edits.append(what)

    # -- applying --------------------------------------------------------------------------
    def stale(self, draft: Draft) -> str | None:
        """Why the draft can no longer be applied (the file changed under it), or None."""
        text = self.disk()
        if text == draft.base_text:
            return None
        try:
            serial = self.serial_of(text)
        except Exception:  # noqa: BLE001 - a file that does not parse is simply "changed"
            serial = None
        if serial is not None and serial != draft.base_serial:
            return (f"lvs.cf is now at serial_no {serial}, but your changes began from serial_no "
                    f"{draft.base_serial}: someone applied another change meanwhile.  Nothing was written; "
                    "discard your draft to start again from the file as it is now")  # fmt: skip
        return (f"lvs.cf changed on disk since your changes began (serial_no {draft.base_serial}, edited by hand?). "
                "Nothing was written; discard your draft to start again from the file as it is now")

    def final_text(self, draft: Draft) -> str:
        """The draft with serial_no bumped past the file's."""
        config = self.config_of(draft)
        return merge(draft.text, dataclasses.replace(config, serial_no=draft.base_serial + 1),
                     filename=self.path, resolver=self.resolver)  # fmt: skip

    def apply(self, draft: Draft) -> Applied:
        """Write the draft (serial_no bumped) over the file: StoreError when the file changed
        under the draft or the checker finds an error, and then nothing is written."""
        why = self.stale(draft)
        if why:
            raise StoreError(why)
        text = self.final_text(draft)
        errors = errors_of(self.check(text))
        if errors:
            raise StoreError("not written, the checker finds errors: " + "; ".join(map(str, errors)))
        with self._write_lock:
            why = self.stale(draft)  # again: another APPLY may have written while we checked
            if why:
                raise StoreError(why)
            try:
                # through a symlink to the file it names, as an editor saves (the link stays)
                write_atomically(os.path.realpath(self.path), text.encode("utf-8"))
            except OSError as exc:
                raise StoreError(f"{self.path}: not written: {exc.strerror or exc} (the file is as it was)") from None
        return Applied(draft.base_serial + 1, self.path, line_diff(draft.base_text, text, os.path.basename(self.path)))


def _field_lines(config: Config, scope: tuple[str, ...], fields: Mapping[str, str]) -> dict[int, str]:
    """Line number -> form field name, for the keywords of the edited block."""
    obj: Any = config
    kind = Scope.GLOBAL
    if len(scope) >= 1:
        obj = next((v for v in config.virtuals if v.name == scope[0]), None)
        kind = Scope.VIRTUAL
    if len(scope) == 2 and obj is not None:
        obj = next((s for s in obj.servers if s.name == scope[1]), None)
        kind = Scope.SERVER
    if obj is None:
        return {}
    attr_to_kw = {kw.field: kw.name for kw in KEYWORDS_BY_SCOPE[kind].values()}
    out = {}
    for attr, name in fields.items():
        line = obj.lines.get(attr_to_kw.get(attr, attr))
        if line:
            out[line] = name
    if getattr(obj, "line", 0) and "name" in fields.values():
        out.setdefault(obj.line, "name")  # a finding on the block's opener: beside its name
    return out


def summary(diagnostics) -> dict[str, int]:
    """Counts by severity, for the pending-changes banner."""
    c = Counter(d.severity for d in diagnostics)
    return {"errors": c[Severity.ERROR], "warnings": c[Severity.WARNING], "adjusted": c[Severity.ADJUSTED]}

