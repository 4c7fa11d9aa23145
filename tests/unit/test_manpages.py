"""pylvs.manpages: pylvs(8) names every sub-command and option of the parser, lvs.cf(5)
every keyword of the keyword table, and both pages render without a groff warning."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import types

import pytest

from pylvs import manpages
from pylvs.cli import main as cli_main
from pylvs.config import check_text
from pylvs.config.diagnostics import PARSER_MESSAGES
from pylvs.config.model import KEYWORDS, Kind

GROFF = shutil.which("groff")
MANDOC = shutil.which("mandoc")
REQUESTS = {"TH", "SH", "SS", "PP", "TP", "IP", "RS", "RE", "nf", "fi", "SY", "YS", "nh", "ad", "B", '\\"'}


@pytest.fixture(scope="module")
def pages() -> dict[str, str]:
    return manpages.pages(date="2024-01-01")


def render(source: str) -> str:
    """The page as text, whitespace folded: groff's rendering where groff is installed,
    otherwise the roff source with its requests and escapes taken out."""
    if GROFF:
        out = subprocess.run([GROFF, "-man", "-Tutf8", "-P-cbou", "-rLL=200n"], input=source,
                             capture_output=True, text=True, check=True).stdout
        out = out.replace("\u2212", "-").replace("\u2010", "-")
    else:
        kept = [ln for ln in source.splitlines() if not ln.startswith(".") or ln.startswith((".SH", ".SS"))]
        out = re.sub(r"\\f[BIR]|\\&", "", "\n".join(kept)).replace("\\-", "-").replace("\\ ", " ")
        out = re.sub(r"^\.S[HS] ", "", out, flags=re.M).replace("\\e", "\\")
    return " ".join(out.split())


def test_main_writes_every_page(tmp_path):
    assert manpages.main([str(tmp_path)]) == 0
    assert {p.name for p in tmp_path.iterdir()} >= {"pylvs.8", "lvs.cf.5"}


@pytest.mark.parametrize("name", ["pylvs.8", "lvs.cf.5"])
def test_page_renders_without_warnings(pages, name):
    if not GROFF and not MANDOC:
        pytest.skip("neither groff (Debian groff-base) nor mandoc is installed: the pages are not rendered")
    if GROFF:  # -ww: every warning; -z: no output, only the diagnostics
        run = subprocess.run([GROFF, "-man", "-Tutf8", "-ww", "-z"], input=pages[name], capture_output=True, text=True)
        assert run.returncode == 0 and run.stderr == "", run.stderr
    if MANDOC:
        run = subprocess.run([MANDOC, "-T", "lint", "-W", "warning"], input=pages[name], capture_output=True,
                             text=True)
        assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize("name", ["pylvs.8", "lvs.cf.5"])
def test_every_request_line_is_a_request(pages, name):
    """Text lines starting with '.' or "'" would be eaten as requests: they are guarded."""
    for ln in pages[name].splitlines():
        if ln.startswith((".", "'")):
            assert ln[1:].split(" ", 1)[0] in REQUESTS, ln


def _tree() -> manpages.Command:
    return manpages.command_tree(cli_main.build_parser())


def test_pylvs_page_names_every_command_and_option(pages):
    text = render(pages["pylvs.8"])
    commands = list(_tree().walk())
    assert len(commands) > 5
    for cmd in commands:
        assert cmd.name in text, cmd.name
        for action in cmd.parser._actions:
            if action.help == argparse.SUPPRESS or isinstance(action, argparse._SubParsersAction):
                continue
            for option in action.option_strings:
                assert option in text, f"{cmd.name} {option}"
            if action.help and not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                expanded = manpages._formatter(cmd.parser)._expand_help(action)
                assert " ".join(expanded.replace("`", "").split()) in text, f"{cmd.name}: {expanded}"
    for section in ("SYNOPSIS", "COMMANDS", "SIGNALS", "FILES", "EXIT STATUS", "SEE ALSO"):
        assert section in text
    for signal in ("SIGHUP", "SIGTERM", "SIGUSR1", "SIGUSR2"):
        assert signal in text


def test_every_leaf_command_has_a_synopsis(pages):
    synopses = [ln for ln in pages["pylvs.8"].splitlines() if ln.startswith(".SY ")]
    leaves = [leaf.name for leaf in _tree().leaves()]
    # once in SYNOPSIS, once in its own section under COMMANDS
    for name in leaves:
        assert synopses.count(f'.SY "{manpages.esc(name)}"') == 2, name


def test_a_new_subcommand_is_picked_up(monkeypatch):
    """Sub-commands registered later (pylvsadm, the web tool) need no change here."""

    def register(subparsers):
        p = subparsers.add_parser("frobnicate", help="frobnicate the director", description="Frobnicates.")
        p.add_argument("--zap-level", type=int, default=3, metavar="N", help="how hard (default %(default)s)")
        sub = p.add_subparsers(dest="what", metavar="WHAT", required=True)
        sub.add_parser("now", help="at once").add_argument("target", metavar="RIP")

    fake = types.SimpleNamespace(register=register)
    monkeypatch.setattr(cli_main, "SUBCOMMANDS", (*cli_main.SUBCOMMANDS, fake))
    text = render(manpages.pages(date="2024-01-01")["pylvs.8"])
    for expected in ("pylvs frobnicate", "pylvs frobnicate now", "Frobnicate the director.", "--zap-level N",
                     "how hard (default 3)", "RIP"):
        assert expected in text, expected


def test_lvs_cf_page_names_every_keyword_in_its_section(pages):
    text = render(pages["lvs.cf.5"])
    bounds = [text.index(title) for _, title, _ in manpages.SCOPE_SECTIONS] + [text.index("EXAMPLE")]
    for i, (scope, _title, _) in enumerate(manpages.SCOPE_SECTIONS):
        section = text[bounds[i]:bounds[i + 1]]
        for k in KEYWORDS:
            if k.scope.value != scope:
                continue
            if k.kind is Kind.BLOCK:
                assert f"{k.name} NAME {{ ... }}" in section, k.name
            else:
                assert f"{k.name} = " in section, f"{scope}.{k.name}"
                assert f"Default: {k.default_text}." in section, f"{scope}.{k.name}"
            if k.kind is Kind.ENUM:
                assert " | ".join(k.choices) in section
    for message in PARSER_MESSAGES:
        assert message in text
    for section in ("DESCRIPTION", "FILES", "SIGNALS", "EXIT STATUS", "SEE ALSO", "SIGHUP"):
        assert section in text


def test_every_value_kind_has_a_text():
    texts = manpages._value_texts()
    assert set(texts) == set(Kind)


def test_lvs_cf_example_is_a_valid_file():
    result = check_text(manpages.EXAMPLE)
    assert result.exit_code == 0, [str(d) for d in result.diagnostics]


def test_module_runs_as_a_script(tmp_path):
    run = subprocess.run([sys.executable, "-m", "pylvs.manpages", str(tmp_path)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "pylvs.8").read_text().startswith(".\\\" Generated by pylvs.manpages")
