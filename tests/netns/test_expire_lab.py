"""``--expire-quiescent-template`` end to end: a persistent client whose server is drained
(weight 0) stays on it by default, as in the kernel, and moves to another server with the
option, the kernel's expire_quiescent_template sysctl (reference 7.6 and 12: the most
common complaint about IPVS)."""

from __future__ import annotations

from pylvs.lab import topology as topo
from pylvs.lab.director import LabDirector
from pylvs.lab.lvscf import Service, lvs_cf


def _served(lab) -> str:
    return lab.http_get("client1", topo.VIP, topo.HTTP_PORT).body.decode().strip()


def _after_drain(lab, tmp_path, name: str, extra: tuple[str, ...]) -> tuple[str, str]:
    """(the server a persistent client first reaches, the one it reaches once that one is drained)."""
    d = LabDirector(lab, tmp_path / name, lvs_cf(lab, [Service(scheduler="rr", persistent=300)]), extra=extra)
    try:
        first = _served(lab)
        assert _served(lab) == first  # persistence holds
        reply = d.control({"cmd": "server.state", "virtual": "www", "server": first, "state": "drain"})
        assert reply == {"ok": True, "state": "drain"}
        assert d.control({"cmd": "status"})["status"]["expire"]["expire_quiescent_template"] == bool(extra)
        return first, _served(lab)
    finally:
        d.stop()


def test_a_drained_server_keeps_its_persistent_clients_unless_templates_expire(make_lab, tmp_path):
    lab = make_lab("nat", real_servers=2)
    first, then = _after_drain(lab, tmp_path, "default", ())
    assert then == first  # the kernel's default: the template outlives the drain
    first, then = _after_drain(lab, tmp_path, "expire", ("--expire-quiescent-template",))
    assert then != first and then in ("rs1", "rs2")
