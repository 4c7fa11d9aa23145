"""Replay the captured ipvsadm cases through pylvsadm (``tests/ipvsadm_golden.replay``),
or the commands of a JSON file ``[[id, "ipvsadm ARGS"], ...]``.

    python ipvsadm_replay.py CONTROL_SOCKET OUT.json [COMMANDS.json]

Run by the netns golden tests inside a namespace that has only ``lo``: a name lookup
fails at once and no packet leaves.  One process for all the cases.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: ipvsadm_golden

import shlex  # noqa: E402

from ipvsadm_golden import call, replay  # noqa: E402

from pylvs.ipvsadm.cli import Director  # noqa: E402

if __name__ == "__main__":
    control, out = sys.argv[1:3]
    director = Director(control)
    if len(sys.argv) > 3:
        with open(sys.argv[3]) as f:
            results = [{"id": i, **call(director, shlex.split(cmd)[1:])} for i, cmd in json.load(f)]
    else:
        results = replay(director)
    with open(out, "w") as f:
        json.dump(results, f)
