"""numba's cache is dropped when any kernel source changes (pylvs/kernel_cache.py): numba
itself checks only the defining file, and the engine's cached code holds the
connection table's."""

from __future__ import annotations

from pylvs import kernel_cache as kc


def _tree(tmp_path):
    pkg = tmp_path / "checkout" / "pkg"
    for sub in kc.KERNEL_SOURCES:
        (pkg / sub / "__pycache__").mkdir(parents=True)
        (pkg / sub / "k.py").write_text(f"# {sub} kernels\n")
    (tmp_path / "checkout" / "pyproject.toml").write_text("")
    (tmp_path / "checkout" / "tests" / "__pycache__").mkdir(parents=True)
    return pkg


def _cached(pkg) -> list[str]:
    files = [*pkg.rglob("*.nb[ic]"), *(pkg.parent / "tests").rglob("*.nb[ic]")]
    return sorted(f.name for f in files)


def _cache(pkg) -> None:
    (pkg / "dataplane" / "__pycache__" / "engine._process_kernel-1.py311.nbi").write_text("")
    (pkg / "dataplane" / "__pycache__" / "engine._process_kernel-1.py311.1.nbc").write_text("")
    (pkg.parent / "tests" / "__pycache__" / "floods.flood-44.py311.nbi").write_text("")
    (pkg / "dataplane" / "__pycache__" / "engine.cpython-311.pyc").write_text("")  # not numba's


def test_a_change_to_any_kernel_source_drops_every_cached_kernel(tmp_path):
    pkg = _tree(tmp_path)
    assert kc.refresh(pkg)  # no stamp yet: cleared and stamped
    _cache(pkg)
    assert not kc.refresh(pkg) and len(_cached(pkg)) == 3  # unchanged sources: kept
    (pkg / "sched" / "k.py").write_text("# sched kernels, changed\n")  # not the engine's own file
    assert kc.refresh(pkg)
    assert _cached(pkg) == [] and (pkg / "dataplane" / "__pycache__" / "engine.cpython-311.pyc").exists()
    assert not kc.refresh(pkg)


def test_the_package_stamp_matches_its_sources():
    """After this process imported the kernels, the real stamp names the real sources."""
    import pylvs.dataplane.engine  # noqa: F401

    assert kc.STAMP.read_text() == kc.sources_digest()


def test_a_numba_cache_dir_has_its_own_stamp(tmp_path):
    pkg = _tree(tmp_path)
    cache = tmp_path / "boundscheck-cache"
    assert kc.refresh(pkg, cache)
    (cache / "deep" / "x").mkdir(parents=True)
    (cache / "deep" / "x" / "engine.ENGINE-91.py311.nbi").write_text("")
    assert not kc.refresh(pkg, cache)
    (pkg / "dataplane" / "k.py").write_text("# changed\n")
    assert kc.refresh(pkg, cache) and not list(cache.rglob("*.nbi"))
