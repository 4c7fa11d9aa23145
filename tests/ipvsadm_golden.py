"""The captured ipvsadm 1.31 (``tests/data/kernel-ipvs/ipvsadm.jsonl``, kernel 6.1)
as pylvsadm must reproduce it, and a replay of it through pylvsadm.

Shared by ``tests/unit/test_pylvsadm.py`` (an in-process director) and
``tests/netns/test_ipvsadm_golden_lab.py`` (``pylvs lvs --bare`` in a namespace).  The rules
where pylvs differs on purpose (docs/ipvsadm.md):

* what pylvs does not forward (IPv6, SCTP, ``--pe sip``, ``-o``, GUE/GRE tunnels) is
  refused with its own message and exit 255 (``REFUSED``); the listings and saves that
  follow are then compared with the capture minus those services and servers;
* ``--nosort`` lists services in the kernel's hash order, which depends on a kernel
  pointer: compared as the same blocks, each with its servers in the kernel's order;
* every case that fails (but ``-R``, which applies the lines before the bad one, as
  ipvsadm) leaves the table exactly as it was (``-S -n`` before and after).
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

from pylvs.ipvsadm import table
from pylvs.ipvsadm.cli import main

GOLDEN_DIR = Path(__file__).resolve().parent / "data" / "kernel-ipvs"  # the captures, copied (README there)
GOLDEN = GOLDEN_DIR / "ipvsadm.jsonl"
CAPACITY = 4096  # the captured kernel's IP_VS_CONN_TAB_SIZE: "(size=4096)"
CASES = 223

REFUSED = {
    "A-ipv6": table.REFUSE_IPV6, "A-ipv6-fwm": table.REFUSE_IPV6, "a-ipv6": table.REFUSE_IPV6,
    "A-pe-sip": table.REFUSE_PE.format("sip"), "A-sctp": table.REFUSE_SCTP, "a-sctp": table.REFUSE_SCTP,
    "A-udp-ops": table.REFUSE_OPS,
    "a-fo-tun-gue": table.REFUSE_TUN.format("gue"), "a-fo-tun-gue-csum": table.REFUSE_TUN.format("gue"),
    "a-fo-tun-gue-remcsum": table.REFUSE_TUN.format("gue"), "a-fo-tun-gre": table.REFUSE_TUN.format("gre"),
}  # fmt: skip
ABSENT_SERVICE = {"L-n-one-ipv6"}  # a listing of a refused service: "No such service", exit 1
# Listing lines of what was refused: whole services, and servers of 10.1.0.12:80.
REFUSED_SERVICE_LINE = re.compile(r"^(TCP  \[2001:db8::1\]|FWM  3 IPv6|UDP  10\.1\.0\.42:|SCTP |UDP  10\.1\.0\.34:)")
REFUSED_DEST = re.compile(r"^  -> 192\.168\.10\.[5-8]:")
REFUSED_SAVE_LINE = re.compile(r"(\[2001:db8::1\]|-f 3 -6|--sctp-service|-u 10\.1\.0\.42:|-u 10\.1\.0\.34:|"
                               r"--tun-type (gue|gre))")  # fmt: skip
NOSORT = ("L-n-nosort",)


def without_refused(text: str) -> str:
    """The capture's output as pylvs, which refused those services and servers, prints it."""
    out, in_refused, in_fo = [], False, False
    for line in text.splitlines(keepends=True):
        if line.startswith("-"):  # -S output
            if not REFUSED_SAVE_LINE.search(line):
                out.append(line)
            continue
        if not line.startswith("  ->"):
            in_refused = bool(REFUSED_SERVICE_LINE.match(line))
            in_fo = line.startswith(("TCP  10.1.0.12:", "TCP  10.1.0.12 "))
        elif in_refused or (in_fo and REFUSED_DEST.match(line)):
            continue
        if not in_refused:
            out.append(line)
    return "".join(out)


def blocks(text: str) -> dict[str, list[str]]:
    """A listing as {service line: [its server lines, in order]} (header lines as keys too)."""
    out: dict[str, list[str]] = {}
    key = ""
    for line in text.splitlines():
        if line.startswith("  ->") and key:
            out[key].append(line)
        else:
            key = line
            out.setdefault(key, [])
    return out


def restore_input(r: dict) -> str:
    """A -R case's stdin as pylvs gets it: the capture's save minus what pylvs refused
    (pylvs never had those services, so its own save never holds them)."""
    return without_refused(r.get("stdin") or "")


def expected(r: dict) -> tuple[str, str, int]:
    if r["argv"][1:2] == ["-R"] and len(r["stdin"].splitlines()) == len(r["stderr"].splitlines()):
        # One message per line: the messages of the lines pylvs never gets go with them.
        kept = [err for line, err in zip(r["stdin"].splitlines(True), r["stderr"].splitlines(True), strict=True)
                if not REFUSED_SAVE_LINE.search(line)]  # fmt: skip
        return r["stdout"], "".join(kept), r["rc"]
    if r["id"] in REFUSED:
        return "", REFUSED[r["id"]] + "\n", table.RC_KERNEL
    if r["id"] in ABSENT_SERVICE:
        return "", "No such service\n", 1
    return without_refused(r["stdout"]), r["stderr"], r["rc"]




def records() -> list[dict]:
    """The ipvsadm invocations of the capture, in order."""
    out = [json.loads(line) for line in GOLDEN.read_text().splitlines() if line.strip()]
    return [r for r in out if r.get("argv") and r["argv"][0] == "ipvsadm"]


def call(director, argv: list[str], stdin: str = "") -> dict:
    out, err = io.StringIO(), io.StringIO()
    rc = main(argv, stdin=io.StringIO(stdin), stdout=out, stderr=err, director=director)
    return {"rc": rc, "stdout": out.getvalue(), "stderr": err.getvalue()}


def replay(director) -> list[dict]:
    """Every case through pylvsadm: our stdout, stderr and exit code, and for a case that
    fails, ``-S -n`` before and after it.  A ``stdin`` of ``@ID`` is OUR stdout of step ID
    (a real save/restore round trip)."""
    results, ours = [], {}
    for r in records():
        stdin = restore_input(r)
        if stdin.startswith("@"):
            stdin = ours[stdin[1:]]
        before = call(director, ["-S", "-n"])["stdout"]
        got = call(director, r["argv"][1:], stdin)
        ours[r["id"]] = got["stdout"]
        got["id"] = r["id"]
        if got["rc"] != 0:
            got["save_before"], got["save_after"] = before, call(director, ["-S", "-n"])["stdout"]
        results.append(got)
    return results


def differences(results: list[dict]) -> list[str]:
    """What differs from the capture, by the rules above (empty: all equal)."""
    got = {r["id"]: r for r in results}
    bad = []
    recs = records()
    if len(got) != len(recs) or len(recs) != CASES:
        bad.append(f"{len(got)} results for {len(recs)} cases (the capture has {CASES})")
    for r in recs:
        g = got.get(r["id"])
        if g is None:
            continue
        stdout, stderr, rc = expected(r)
        if r["id"] in NOSORT:
            same = blocks(g["stdout"]) == blocks(stdout) and (g["stderr"], g["rc"]) == (stderr, rc)
        else:
            same = (g["stdout"], g["stderr"], g["rc"]) == (stdout, stderr, rc)
        if not same:
            bad.append(f"[{r['id']}] {r['cmd']}\n--- want rc {rc}\n{stdout}{stderr}--- got rc {g['rc']}\n"
                       f"{g['stdout']}{g['stderr']}")  # fmt: skip
        if g["rc"] != 0 and r["argv"][1:2] != ["-R"] and g["save_before"] != g["save_after"]:
            bad.append(f"[{r['id']}] {r['cmd']}: failed (rc {g['rc']}) but changed the table")
    return bad
