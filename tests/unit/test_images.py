"""Per-role golden images and direct kernel boot: the model, its errors, and the program under mocks."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from components import rules
from components.host import base_image_name, digest, pool_volume_name
from components.stack_file import load_topology, stack_path
from components.topology import (
    DEFAULT_KERNEL_CMDLINE,
    Image,
    Role,
    Topology,
    TopologyError,
    parse_topology,
    to_config,
)
from components.vm import cmdline_maps
from tests.unit.harness import PROJECT_DIR, Evaluation, evaluate, stack_config

VOLUME = "libvirt:index/volume:Volume"
DOMAIN = "libvirt:index/domain:Domain"
PROVIDER = "pulumi:providers:libvirt"


def tier(name: str, cmdline: str | None = None) -> dict[str, str]:
    """A golden image as `make images` builds it, named relative to the project directory."""
    spec = {"source": f".images/{name}.qcow2", "kernel": f".images/{name}.vmlinuz",
            "initrd": f".images/{name}.initrd"}
    if cmdline is not None:
        spec["cmdline"] = cmdline
    return spec


PER_ROLE = {"mysql": tier("mysql"), "web": tier("web", "root=LABEL=root ro quiet"),
            "lb": {"source": "https://example.org/images/lb.qcow2"}}


def dev_with(image: Any) -> dict[str, Any]:
    config = copy.deepcopy(stack_config("dev"))
    config["image"] = image
    return config


def problems(image: Any) -> list[str]:
    with pytest.raises(TopologyError) as err:
        parse_topology(dev_with(image))
    return [str(p) for p in err.value.problems]


# --- the model ------------------------------------------------------------------------------


def test_one_image_for_all_roles_is_unchanged() -> None:
    topology = parse_topology(dev_with({"source": "/srv/images/debian.qcow2"}))
    assert not topology.image_per_role
    assert {topology.image_of(r) for r in Role} == {Image("/srv/images/debian.qcow2")}
    assert topology.image_of(Role.WEB).kernel_cmdline is None


def test_one_image_may_boot_a_kernel_with_the_default_cmdline() -> None:
    topology = parse_topology(dev_with(tier("all")))
    image = topology.image_of(Role.LB)
    assert (image.kernel, image.initrd) == (".images/all.vmlinuz", ".images/all.initrd")
    assert image.kernel_cmdline == DEFAULT_KERNEL_CMDLINE
    assert DEFAULT_KERNEL_CMDLINE == "root=LABEL=root ro console=ttyS0,115200 net.ifnames=0"


def test_golden_images_boot_with_the_default_cmdline() -> None:
    from vmimage.boot import KERNEL_CMDLINE

    assert KERNEL_CMDLINE == DEFAULT_KERNEL_CMDLINE


def test_per_role_images() -> None:
    topology = parse_topology(dev_with(PER_ROLE))
    assert topology.image_per_role
    assert topology.image_of(Role.MYSQL) == Image(".images/mysql.qcow2", ".images/mysql.vmlinuz",
                                                  ".images/mysql.initrd")
    assert topology.image_of(Role.WEB).kernel_cmdline == "root=LABEL=root ro quiet"
    assert topology.image_of(Role.LB) == Image("https://example.org/images/lb.qcow2")
    assert len(topology.images) == 3


def test_roles_sharing_an_image_share_it() -> None:
    topology = parse_topology(dev_with({"mysql": tier("a"), "web": tier("a"), "lb": tier("b")}))
    assert [i.source for i in topology.images] == [".images/a.qcow2", ".images/b.qcow2"]


@pytest.mark.parametrize("image", [{"source": "/srv/x.qcow2"}, tier("all"), PER_ROLE,
                                   {"source": "x.qcow2", "kernel": "/boot/vmlinuz", "initrd": "/boot/initrd",
                                    "cmdline": "console=ttyS0 root=/dev/vda"}])
def test_image_round_trips(image: Any) -> None:
    topology = parse_topology(dev_with(image))
    assert to_config(topology)["image"] == image
    assert parse_topology(to_config(topology)) == topology


@pytest.mark.parametrize(("image", "expected"), [
    ({"mysql": tier("mysql"), "web": tier("web")},
     "mac:image.lb: is missing: lb nodes need an image; add lb: {source: ...} to mac:image, or use "
     "one image for all roles"),
    ({"source": "/x.qcow2", "kernel": "/boot/vmlinuz"},
     "mac:image.initrd: is missing; kernel and initrd go together (direct kernel boot): set both or "
     "neither"),
    ({"mysql": {"source": "/x.qcow2", "initrd": "/boot/initrd"}, "web": tier("w"), "lb": tier("l")},
     "mac:image.mysql.kernel: is missing; kernel and initrd go together (direct kernel boot): set "
     "both or neither"),
    ({"source": "/x.qcow2", "cmdline": "quiet"},
     "mac:image.cmdline = 'quiet': applies to direct kernel boot only; set kernel and initrd too, "
     "or drop it"),
    ({**PER_ROLE, "db": tier("db")},
     "mac:image.db = {'source': '.images/db.qcow2', 'kernel': '.images/db.vmli...: unknown key "
     "(allowed: mysql, web, lb)"),
    ({**PER_ROLE, "mysq": tier("db")},
     "mac:image.mysq = {'source': '.images/db.qcow2', 'kernel': '.images/db.vmli...: unknown key; did "
     "you mean mysql? (allowed: mysql, web, lb)"),
    ({"source": "/x.qcow2", "kernal": "/boot/vmlinuz"},
     "mac:image.kernal = '/boot/vmlinuz': unknown key; did you mean kernel? (allowed: source, "
     "kernel, initrd, cmdline)"),
    ({**PER_ROLE, "web": {**tier("web"), "kernel": "images/../web.vmlinuz"}},
     "mac:image.web.kernel = 'images/../web.vmlinuz': is not a normalised path; write web.vmlinuz"),
    ({"source": ".images/", "kernel": "/boot/", "initrd": "/boot/x y"}, None),
    ({"source": "/x.qcow2", "kernel": "/boot/vmlinuz", "initrd": "/boot/initrd",
      "cmdline": "root=/dev/vda\nquiet"}, None),
])
def test_image_errors_are_one_line_each_naming_the_key(image: Any, expected: str | None) -> None:
    found = problems(image)
    for line in found:
        assert "\n" not in line and line.startswith("mac:image"), found
    if expected is not None:
        assert found == [expected]


def test_bad_paths_name_their_keys() -> None:
    found = problems({"source": ".images/", "kernel": "/boot/", "initrd": "/boot/x y"})
    assert [p.split(" ")[0] for p in found] == ["mac:image.source", "mac:image.kernel",
                                                "mac:image.initrd"]
    assert "is not a normalised path; write .images" in found[0]
    assert "a path of a-z A-Z 0-9" in found[2]
    cmdline = problems({"source": "/x.qcow2", "kernel": "/k", "initrd": "/i", "cmdline": "a  b"})
    assert cmdline[0].startswith("mac:image.cmdline = 'a  b': must be printable ASCII words")


@pytest.mark.parametrize(("value", "ok"), [
    (".images/mysql.qcow2", True), ("/srv/images/debian.qcow2", True), ("../shared/x.qcow2", True),
    ("https://example.org/x.qcow2", True), ("./x.qcow2", False), ("/srv//x.qcow2", False),
    ("x/", False), ("..", False), ("a b.qcow2", False), ("ftp://example.org/x.qcow2", False),
])
def test_image_source_rule(value: str, ok: bool) -> None:
    assert (rules.image_source(value) is None) is ok


def test_kernel_cmdline_rule() -> None:
    assert rules.kernel_cmdline(DEFAULT_KERNEL_CMDLINE) is None
    for bad in ("", " quiet", "quiet ", "a  b", "a\tb", "x" * (rules.MAX_KERNEL_CMDLINE + 1), "é"):
        assert rules.kernel_cmdline(bad) is not None, bad


def test_cmdline_maps_keep_every_word_in_order() -> None:
    """MAC's provider sorts the keys inside one map and joins words with spaces (domain.go
    `cmdline`): one map per word keeps the order, `_` carries a bare word."""
    maps = cmdline_maps("root=LABEL=root ro console=ttyS0,115200 _=x =y net.ifnames=0")
    assert maps == [{"root": "LABEL=root"}, {"_": "ro"}, {"console": "ttyS0,115200"}, {"_": "_=x"},
                    {"_": "=y"}, {"net.ifnames": "0"}]

    def joined(ms: list[dict[str, str]]) -> str:  # what domain.go's cmdline() does
        return " ".join(v if k == "_" else f"{k}={v}" for m in ms for k, v in sorted(m.items()))

    assert joined(maps) == "root=LABEL=root ro console=ttyS0,115200 _=x =y net.ifnames=0"


def test_volume_names_are_collision_free() -> None:
    names = {pool_volume_name(kind, f".images/{t}.{ext}")
             for kind, ext in (("base", "qcow2"), ("kernel", "vmlinuz"), ("initrd", "initrd"))
             for t in ("mysql", "web", "lb")}
    assert len(names) == 9
    assert base_image_name(Image(".images/web.qcow2")) == f"mac-base-{digest('.images/web.qcow2')}-web.qcow2"


# --- the program under mocks ----------------------------------------------------------------


@pytest.fixture(scope="module")
def per_role() -> Evaluation:
    return evaluate("dev", dev_with(PER_ROLE))


def volumes_on(e: Evaluation, host: str) -> dict[str, dict[str, Any]]:
    provider = e.one(PROVIDER, host).urn
    return {r.name: r.inputs for r in e.of_type(VOLUME)
            if r.provider_urn == provider and not r.name.endswith(("-root",))}


def test_every_live_host_gets_every_image_and_boot_file(per_role: Evaluation) -> None:
    topology: Topology = per_role.program["config"].topology
    files = {".images/mysql.qcow2", ".images/mysql.vmlinuz", ".images/mysql.initrd",
             ".images/web.qcow2", ".images/web.vmlinuz", ".images/web.initrd",
             "https://example.org/images/lb.qcow2"}
    for host in topology.live_hosts:  # spares included: warm spares
        volumes = volumes_on(per_role, host)
        assert {v["source"] for v in volumes.values()} == files, host
        formats = {v["source"]: v["format"] for v in volumes.values()}
        assert formats[".images/web.vmlinuz"] == formats[".images/web.initrd"] == "raw"
        assert formats[".images/web.qcow2"] == "qcow2"
        for name, inputs in volumes.items():  # names by digest: free of collisions
            assert name.endswith(digest(inputs["source"])), name
            assert inputs["name"] == pool_volume_name(
                {"base-image": "base", "kernel": "kernel", "initrd": "initrd"}[
                    name[len(host) + 1:].rsplit("-", 1)[0]], inputs["source"])


def test_relative_paths_reach_the_provider_as_written(per_role: Evaluation) -> None:
    """The provider plugins run in the project directory (Pulumi starts them there), so a
    relative path resolves against it; passed as written, the state is the same whichever
    checkout runs `pulumi up` (an absolute path would replace every base image)."""
    sources = {r.inputs["source"] for r in per_role.of_type(VOLUME) if "source" in r.inputs}
    assert ".images/mysql.qcow2" in sources
    assert not any(s.startswith(str(PROJECT_DIR)) for s in sources)


def test_root_volumes_clone_their_roles_image(per_role: Evaluation) -> None:
    topology: Topology = per_role.program["config"].topology
    for node in topology.nodes.values():
        source = topology.image_of(node.role).source
        root = per_role.one(VOLUME, f"{node.name}-root")
        expected = f"{node.host}-base-image-{digest(source)}-id"
        assert root.inputs["baseVolumeId"] == expected, node.name


def test_domains_boot_their_roles_kernel(per_role: Evaluation) -> None:
    topology: Topology = per_role.program["config"].topology
    for node in topology.nodes.values():
        domain = per_role.one(DOMAIN, f"{node.name}-domain").inputs
        image = topology.image_of(node.role)
        if image.kernel is None:
            assert "kernel" not in domain and "initrd" not in domain and "cmdlines" not in domain
            continue
        assert image.initrd is not None
        assert domain["kernel"] == f"{node.host}-kernel-{digest(image.kernel)}-id"
        assert domain["initrd"] == f"{node.host}-initrd-{digest(image.initrd)}-id"
        words = [v if k == "_" else f"{k}={v}" for m in domain["cmdlines"] for k, v in m.items()]
        assert " ".join(words) == image.kernel_cmdline
    web = per_role.one(DOMAIN, "web1-domain").inputs
    assert web["cmdlines"] == [{"root": "LABEL=root"}, {"_": "ro"}, {"_": "quiet"}]


def test_one_image_keeps_its_resource_names() -> None:
    """Existing stacks: the one image for all keeps `HOST-base-image`; its kernel and initrd
    volumes are `HOST-kernel` and `HOST-initrd` (aliased to the per-role names, so switching
    forms keeps the files in place: tests/engine/test_kernel_boot.py)."""
    e = evaluate("dev", dev_with(tier("all")))
    names = {r.name for r in e.of_type(VOLUME) if not r.name.endswith("-root")}
    hosts = load_topology(stack_path(PROJECT_DIR, "dev")).live_hosts
    assert names == {f"{h}-{kind}" for h in hosts for kind in ("base-image", "kernel", "initrd")}
    domain = e.one(DOMAIN, "db1-domain").inputs
    assert domain["kernel"].endswith("-kernel-id")
    assert " ".join(v if k == "_" else f"{k}={v}" for m in domain["cmdlines"]
                    for k, v in m.items()) == DEFAULT_KERNEL_CMDLINE


def test_watchdog_prunes_a_dead_hosts_images_and_boot_files(per_role: Evaluation) -> None:
    """watchdog.state removes a dead host's provider and everything bound to it: here from the
    state the program itself registers, so the per-host image volumes cannot slip through."""
    from watchdog.state import prune_hosts

    topology: Topology = per_role.program["config"].topology
    deployment = {"resources": [
        {"urn": r.urn, "type": r.type, "custom": r.custom, "parent": r.parent,
         "provider": r.provider, "deletedWith": r.deleted_with, "dependencies": r.dependencies}
        for r in per_role.resources]}
    dead = topology.hosts["kvm1"]
    result = prune_hosts(deployment, [dead])
    removed = {urn.rsplit("::", 1)[-1] for urn in result.removed}
    images = {r.name for r in per_role.of_type(VOLUME)
              if r.provider_urn == per_role.one(PROVIDER, "kvm1").urn and not r.name.endswith("-root")}
    assert len(images) == 7 and images <= removed  # 3 base images, 2 kernels, 2 initrds
    kept = {r["urn"].rsplit("::", 1)[-1] for r in result.deployment["resources"]}
    for other in topology.live_hosts:
        if other != "kvm1":
            assert {n.replace("kvm1-", f"{other}-") for n in images} <= kept, other
    on_dead = [n.name for n in topology.nodes_on("kvm1")]
    assert on_dead and all(f"{n}-domain" in removed for n in on_dead)
