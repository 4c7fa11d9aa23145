"""Replay the captured ipvsadm cases through pylvsadm (``tests/ipvsadm_golden.replay``).

    python ipvsadm_replay.py CONTROL_SOCKET OUT.json

Run by ``test_ipvsadm_golden_lab.py`` inside a namespace that has only ``lo``: a name
lookup fails at once and no packet leaves.  One process for all the cases.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: ipvsadm_golden

from ipvsadm_golden import replay  # noqa: E402

from pylvs.ipvsadm.cli import Director  # noqa: E402

if __name__ == "__main__":
    control, out = sys.argv[1:3]
    with open(out, "w") as f:
        json.dump(replay(Director(control)), f)
