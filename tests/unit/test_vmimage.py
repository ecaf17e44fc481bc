"""The golden image build's pure parts: what goes into each tier, and when it is rebuilt."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml  # PyYAML: the YAML 1.1 loader cloud-init itself uses

from components import roles
from components.stack_file import load_topology, stack_path
from components.topology import Role
from tests.unit.harness import PROJECT_DIR
from vmimage import build
from vmimage.boot import EXPECTED_UNITS


@pytest.mark.parametrize("role", list(Role))
def test_each_tier_image_has_every_package_its_cloud_config_names(role: Role) -> None:
    # cloud-init's package module is removed from the images: a package the role's cloud-config
    # lists but the image lacks would be missing on the VM, silently.
    topology = load_topology(stack_path(PROJECT_DIR, "ci"))
    node = topology.nodes_of(role)[0]
    secrets = roles.Secrets("root-pw", "app-pw")
    doc = yaml.safe_load(roles.user_data(node, topology, secrets))
    in_image = {*build.BASE_PACKAGES, *build.TIER_PACKAGES[role.value]}
    assert set(doc["packages"]) <= in_image


def test_the_tiers_are_the_roles() -> None:
    assert set(build.TIERS) == {r.value for r in Role} == {r.value for r in EXPECTED_UNITS}


def test_a_changed_package_list_changes_only_that_tiers_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    before = {tier: build.tier_hash(tier) for tier in build.TIERS}
    monkeypatch.setitem(build.TIER_PACKAGES, "web", (*build.TIER_PACKAGES["web"], "php-curl"))
    after = {tier: build.tier_hash(tier) for tier in build.TIERS}
    assert after["web"] != before["web"]
    assert after["mysql"] == before["mysql"] and after["lb"] == before["lb"]


def test_a_changed_base_changes_every_tier(monkeypatch: pytest.MonkeyPatch) -> None:
    before = {tier: build.tier_hash(tier) for tier in build.TIERS}
    monkeypatch.setattr(build, "BASE_PACKAGES", (*build.BASE_PACKAGES, "vim-tiny"))
    assert all(build.tier_hash(tier) != before[tier] for tier in build.TIERS)


def test_up_to_date_needs_the_same_stamp_and_every_output(tmp_path: Path) -> None:
    files = build.outputs(tmp_path, "lb")
    stamp = tmp_path / "lb.stamp"
    for f in files:
        f.write_text("x")
    stamp.write_text("abc\n")
    assert build.up_to_date(stamp, "abc", files)
    assert not build.up_to_date(stamp, "abd", files)
    files[1].unlink()
    assert not build.up_to_date(stamp, "abc", files)
