"""Keep numba's on-disk cache honest across source changes.

numba revalidates a cached kernel against the time stamp of the one file that defines
it.  pylvs's kernels call (and inline) kernels of other modules: the engine's batch
kernel holds compiled copies of the connection table's functions, the C entry point
holds the engine's.  Change only ``conntab.py`` (a ``git pull``, an edit) and the
engine's cached code still runs the old connection table, silently.

So, before the first kernel loads, the kernel sources (``pylvs/dataplane``,
``pylvs/sched``) are hashed and compared with the hash the cache was made with
(``pylvs/__pycache__/numba-kernels.stamp``, or one in ``$NUMBA_CACHE_DIR`` when numba
caches there).  When they differ, every cached kernel of the package is removed (and, in
a source checkout, those of ``tests/`` and ``bench/``, whose kernels call the package's;
or everything under ``$NUMBA_CACHE_DIR``), so each is compiled again once.  Cheap when nothing
changed: one hash over some 30 files per process.  Where the cache cannot be written
(an unprivileged user of a system install), nothing is removed, and numba cannot have
cached anything newer there either.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
KERNEL_SOURCES = ("dataplane", "sched")  # every @njit / @cfunc of the package lives here
STAMP = PACKAGE / "__pycache__" / "numba-kernels.stamp"
CACHE_SUFFIXES = (".nbi", ".nbc")  # numba's index and compiled-code files
_checked = False


def sources_digest(package: Path = PACKAGE) -> str:
    h = hashlib.sha256()
    for sub in KERNEL_SOURCES:
        for path in sorted((package / sub).rglob("*.py")):
            h.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def _cache_dirs(package: Path, cache_dir: Path | None) -> list[Path]:
    if cache_dir is not None:  # NUMBA_CACHE_DIR: numba keeps every cache under it
        return [cache_dir, *(p for p in cache_dir.rglob("*") if p.is_dir())]
    roots = [package]
    checkout = package.parent
    roots += [checkout / d for d in ("tests", "bench") if (checkout / "pyproject.toml").exists()]
    return [p for root in roots if root.is_dir() for p in root.rglob("__pycache__")]


def clear(package: Path = PACKAGE, cache_dir: Path | None = None) -> int:
    """Remove every cached kernel of the package (and of a checkout's tests and bench),
    or every one under ``cache_dir`` when numba is told to cache there."""
    removed = 0
    for folder in _cache_dirs(package, cache_dir):
        for f in folder.iterdir():
            if f.suffix in CACHE_SUFFIXES:
                try:
                    f.unlink()
                    removed += 1
                except FileNotFoundError:
                    pass  # another process cleared it first
    return removed


def ensure_fresh() -> None:
    """Once per process, before any kernel loads: drop caches made from other sources."""
    global _checked
    if not _checked:
        _checked = True
        custom = os.environ.get("NUMBA_CACHE_DIR")
        refresh(PACKAGE, Path(custom) if custom else None)


def refresh(package: Path, cache_dir: Path | None = None) -> bool:
    """Clear the cached kernels (``package``'s, or all under ``cache_dir``) if the kernel
    sources changed since the stamp there; whether it cleared."""
    stamp = package / STAMP.relative_to(PACKAGE) if cache_dir is None else cache_dir / STAMP.name
    if not os.access(package if cache_dir is None else cache_dir.parent, os.W_OK):
        return False
    digest = sources_digest(package)
    try:
        if stamp.read_text() == digest:
            return False
    except OSError:
        pass
    try:
        stamp.parent.mkdir(parents=True, exist_ok=True)
        clear(package, cache_dir)
        tmp = stamp.with_suffix(f".{os.getpid()}")
        tmp.write_text(digest)
        tmp.replace(stamp)
    except OSError:
        return False  # a read-only tree: numba cannot have cached there either
    return True


ensure_fresh()  # on import: pylvs.sched and pylvs.dataplane import this module first
