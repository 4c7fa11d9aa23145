"""The record of running labs: one JSON file per lab under /run/pylvs-lab/.

Every lab writes its record *before* it creates anything and updates it as it goes, so
`pylvs lab down` can remove a lab left by a `pylvs lab up` (persistent) and also a lab
whose owner died without cleaning up (SIGKILL).  A record names the lab's namespaces and
the (PID, start time) of each process the lab started; teardown ends only those.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pylvs.lab import netns

STATE_DIR = Path(os.environ.get("PYLVS_LAB_STATE_DIR", "/run/pylvs-lab"))
NAME_RE = re.compile(r"^[a-z][a-z0-9]{1,11}$")  # short: namespace names are NAME-host


@dataclass
class ProcessRecord:
    pid: int
    start_time: int | None  # /proc/PID/stat field 22; guards against PID reuse
    host: str
    what: str  # "servers", "decap", or what the caller passed to lab.popen


@dataclass
class LabRecord:
    name: str
    kind: str
    persistent: bool  # True: left running by `pylvs lab up`; False: owned by owner_pid
    owner_pid: int
    owner_start: int | None
    created: float = field(default_factory=time.time)
    netns: list[str] = field(default_factory=list)
    processes: list[ProcessRecord] = field(default_factory=list)
    summary: dict = field(default_factory=dict)  # Lab.to_dict() once built

    @property
    def path(self) -> Path:
        return record_path(self.name)

    def owner_alive(self) -> bool:
        return netns.is_same_process(self.owner_pid, self.owner_start)

    def is_stale(self) -> bool:
        """An ephemeral lab whose owner is gone: nobody will clean it but `down`."""
        return not self.persistent and not self.owner_alive()


def record_path(name: str) -> Path:
    return STATE_DIR / f"{name}.json"


def log_dir(name: str) -> Path:
    return STATE_DIR / f"{name}.logs"


def write(rec: LabRecord) -> None:
    STATE_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    tmp = rec.path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(rec), indent=1))
    os.replace(tmp, rec.path)  # readers never see half a record


def read(name: str) -> LabRecord | None:
    try:
        data = json.loads(record_path(name).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    data["processes"] = [ProcessRecord(**p) for p in data.get("processes", [])]
    return LabRecord(**data)


def read_all() -> list[LabRecord]:
    if not STATE_DIR.is_dir():
        return []
    recs = [read(p.stem) for p in sorted(STATE_DIR.glob("*.json"))]
    return [r for r in recs if r is not None]


def remove(name: str) -> None:
    record_path(name).unlink(missing_ok=True)
    shutil.rmtree(log_dir(name), ignore_errors=True)


def teardown(rec: LabRecord) -> list[str]:
    """End the record's processes (only those still matching PID + start time), delete its
    namespaces and the record.  Returns warnings (e.g. foreign processes still inside)."""
    warnings: list[str] = []
    for proc in reversed(rec.processes):
        netns.end_process(proc.pid, proc.start_time)
    for ns in rec.netns:
        if not netns.netns_exists(ns):
            continue
        others = netns.netns_pids(ns)
        if others:
            warnings.append(f"{ns}: processes not started by the lab still inside "
                            f"(left alone): {' '.join(map(str, others))}")
        netns.del_netns(ns)
    remove(rec.name)
    return warnings
