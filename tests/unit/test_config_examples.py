"""Every examples/lvs.cf.* parses and checks with no error and no warning."""

from __future__ import annotations

from pathlib import Path

import pytest

from pylvs.config.check import check_file
from pylvs.config.parse import StaticResolver

EXAMPLES_DIR = Path(__file__).parents[2] / "examples"
EXAMPLES = sorted(EXAMPLES_DIR.glob("lvs.cf.*"))
FEATURES = ["nat-wlc", "dr-rr", "tunnel", "fwmark-http-https", "ftp-fwmark", "ftp-nat-fwmark", "ftp-nat-helper",
            "udp-dns", "sorry-server", "primary-backup", "lab-nat-demo"]


def test_one_example_per_feature_and_listed_in_readme():
    names = {p.name for p in EXAMPLES}
    assert names == {f"lvs.cf.{f}" for f in FEATURES}
    readme = (EXAMPLES_DIR / "README.md").read_text()
    for name in names:
        assert f"`{name}`" in readme


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_is_clean(path):
    result = check_file(str(path), StaticResolver())  # examples use no names
    assert result.diagnostics == ()
    assert any(v.active for v in result.config.virtuals)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_starts_with_explaining_comments(path):
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# ") and lines[1].startswith("#") and lines[2].startswith("#")


def test_fwmark_examples_show_the_mangle_rules():
    for path in EXAMPLES:
        config = check_file(str(path), StaticResolver()).config
        for v in config.virtuals:
            if v.fwmark:
                text = path.read_text()
                assert "iptables -t mangle" in text and f"--set-mark {v.fwmark}" in text
                assert v.persistent > 0


def test_ftp_example_is_the_rhel_guide_setup():
    config = check_file(str(EXAMPLES_DIR / "lvs.cf.ftp-fwmark"), StaticResolver()).config
    (v,) = config.virtuals
    assert v.fwmark == 21 and v.port == 21 and v.persistent > 0


def test_nat_ftp_example_is_the_guides_nat_recipe():
    """docs/ftp.md: the marks, the passive range, MASQUERADE for active data from port 20,
    and the vsftpd settings the 227 reply needs."""
    path = EXAMPLES_DIR / "lvs.cf.ftp-nat-fwmark"
    config = check_file(str(path), StaticResolver()).config
    (v,) = config.virtuals
    assert config.network == "nat" and v.fwmark == 21 and v.port == 21 and v.persistent > 0
    text = path.read_text()
    for needed in ("--dport 21 -j MARK --set-mark 21", "--dport 10000:20000 -j MARK --set-mark 21",
                   "--sport 20 -j MASQUERADE", "pasv_address=192.0.2.60", "pasv_min_port=10000"):
        assert needed in text, needed


def test_nat_ftp_helper_example_is_a_plain_port_21_nat_service():
    config = check_file(str(EXAMPLES_DIR / "lvs.cf.ftp-nat-helper"), StaticResolver()).config
    (v,) = config.virtuals
    assert config.network == "nat" and v.port == 21 and v.protocol == "tcp" and not v.fwmark


def test_examples_cover_the_three_forwarding_methods_and_features():
    configs = {p.name: check_file(str(p), StaticResolver()).config for p in EXAMPLES}
    assert {c.network for c in configs.values()} == {"nat", "direct", "tunnel"}
    assert any(v.protocol == "udp" for c in configs.values() for v in c.virtuals)
    assert any(v.sorry_server for c in configs.values() for v in c.virtuals)
    pair = configs["lvs.cf.primary-backup"]
    assert pair.backup_active and pair.primary_private and pair.backup_private
