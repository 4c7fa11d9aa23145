"""docs/lvs.cf.md keyword tables agree with the keyword table in pylvs.config.model."""

from __future__ import annotations

import re
from pathlib import Path

from pylvs.config.diagnostics import PARSER_MESSAGES
from pylvs.config.model import KEYWORDS, SCHEDULERS, Scope

DOC = Path(__file__).parents[2] / "docs" / "lvs.cf.md"
SECTION_SCOPE = {"Global keywords": Scope.GLOBAL, "`virtual NAME {` block": Scope.VIRTUAL,
                 "`server NAME {` block (inside `virtual`)": Scope.SERVER,
                 "`failover NAME {` block": Scope.FAILOVER}
ROW = re.compile(r"^\| `([a-z_]+)` \| (.*?) \| `([^`]*)` \| (.+) \|$")


def doc_rows() -> set[tuple[str, str, str]]:
    rows, scope = set(), None
    for line in DOC.read_text().splitlines():
        if line.startswith("### "):
            scope = SECTION_SCOPE.get(line[4:].strip())
        elif scope is not None and (m := ROW.match(line)):
            rows.add((scope.value, m.group(1), m.group(3)))
    return rows


def test_docs_tables_match_keyword_table():
    expected = {(k.scope.value, k.name, k.default_text) for k in KEYWORDS}
    assert doc_rows() == expected


def test_docs_list_every_parser_message_and_exit_code():
    text = DOC.read_text()
    for message in PARSER_MESSAGES:
        assert f"`{message}`" in text
    for code in ("| 0 |", "| 4 |", "| 5 |"):
        assert code in text
    assert "## Differences from piranha" in text


def test_docs_name_every_scheduler():
    text = DOC.read_text()
    for name in SCHEDULERS:
        assert f"`{name}`" in text
