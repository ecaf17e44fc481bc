"""HypervisorHost: one physical KVM host as Pulumi sees it.

An explicit libvirt provider (never the default one, so every resource says which host it lives
on), the storage pool the VMs' disks go to, and every image a VM there may need: the base images
root volumes are cloned from and, for direct kernel boot, the kernels and initrds. Spares get
them all too ("warm spares": a failover then only clones and boots).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import urlsplit

import pulumi
import pulumi_libvirt as libvirt

from components import naming
from components.topology import Host, Image

TYPE_TOKEN = "mac:index:HypervisorHost"
POOL_TYPE = "dir"
BASE_IMAGE_FORMAT = "qcow2"
BOOT_FILE_FORMAT = "raw"  # a kernel or an initrd: bytes the domain's <os> points at


def pool_name(host: Host) -> str:
    """The libvirt name of the host's pool (also the name VMs' volumes refer to)."""
    return f"mac-{host.name}"


def digest(reference: str) -> str:
    """A short digest of a source (path or URL): what names its volumes, collision-free."""
    return hashlib.sha256(reference.encode()).hexdigest()[:8]


def pool_volume_name(kind: str, reference: str) -> str:
    """A volume name that changes with the source, so a new file never collides with the old.

    Pulumi then creates the new volume before deleting the old one, which stays the backing file
    (or the kernel) of existing VMs until they are replaced.
    """
    filename = PurePosixPath(urlsplit(reference).path).name or "image"
    return f"mac-{kind}-{digest(reference)}-{filename}"


def base_image_name(image: Image) -> str:
    return pool_volume_name("base", image.source)


@dataclass(frozen=True)
class HypervisorHostArgs:
    host: Host
    images: tuple[Image, ...]  # every distinct image of the topology (Topology.images)
    # Resolves only when the cluster may be deployed (the placement check passed); every resource
    # on the host waits for its provider, so a refusal places nothing anywhere.
    cleared: pulumi.Output[object] | None = None
    # One image per role: resource names carry the file's digest. One image for all keeps the
    # names it always had (`h1-base-image`), so existing stacks see no change.
    per_role: bool = False


class HypervisorHost(pulumi.ComponentResource):
    """Provider, pool, base images, kernels and initrds of one live host."""

    provider: libvirt.Provider
    pool: libvirt.Pool
    base_images: dict[str, libvirt.Volume]  # by source
    boot_files: dict[str, libvirt.Volume]  # kernels and initrds, by path

    def __init__(
        self, name: str, args: HypervisorHostArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(TYPE_TOKEN, name, None, opts)
        self.host = args.host
        host = args.host.name
        uri: pulumi.Input[str] = args.host.uri
        if args.cleared is not None:
            uri = args.cleared.apply(lambda _: args.host.uri)
        self.provider = libvirt.Provider(
            naming.host_provider(host), uri=uri, opts=pulumi.ResourceOptions(parent=self)
        )
        on_host = pulumi.ResourceOptions(parent=self, provider=self.provider)
        self.pool = libvirt.Pool(
            naming.host_pool(host),
            name=pool_name(args.host),
            type=POOL_TYPE,
            target=libvirt.PoolTargetArgs(path=args.host.pool_path),
            opts=on_host,
        )
        self.base_images = {}
        self.boot_files = {}
        for i, image in enumerate(args.images):
            # Switching between one image for all and one per role: the one image and the first
            # role's take over each other's names (aliases), so the same file stays in place
            # instead of colliding with itself (same volume name) in a create-before-delete.
            switch = not args.per_role or i == 0
            if image.source not in self.base_images:
                self.base_images[image.source] = self._volume(
                    naming.host_base_image, host, self._key(args, image.source),
                    base_image_name(image), image.source, BASE_IMAGE_FORMAT, on_host, switch)
            for kind, path, resource_name in (
                ("kernel", image.kernel, naming.host_kernel),
                ("initrd", image.initrd, naming.host_initrd),
            ):
                if path is not None and path not in self.boot_files:
                    self.boot_files[path] = self._volume(
                        resource_name, host, self._key(args, path), pool_volume_name(kind, path),
                        path, BOOT_FILE_FORMAT, on_host, switch)
        self.register_outputs({
            "pool": self.pool.name,
            "base_image_ids": {source: v.id for source, v in self.base_images.items()},
        })

    @staticmethod
    def _key(args: HypervisorHostArgs, reference: str) -> str:
        return digest(reference) if args.per_role else ""

    def _volume(self, resource_name: Callable[[str, str], str], host: str, key: str, name: str,
                source: str, fmt: str, opts: pulumi.ResourceOptions, switch: bool) -> libvirt.Volume:
        if switch:
            other_form = resource_name(host, "" if key else digest(source))
            opts = pulumi.ResourceOptions.merge(
                opts, pulumi.ResourceOptions(aliases=[pulumi.Alias(name=other_form)]))
        # A relative path goes to the provider as written: the provider plugins run in the project
        # directory, and the state stays the same whichever checkout runs `pulumi up`.
        return libvirt.Volume(resource_name(host, key), name=name, pool=self.pool.name,
                              source=source, format=fmt, opts=opts)

    def base_image(self, image: Image) -> libvirt.Volume:
        """The volume `image`'s root volumes are cloned from on this host."""
        return self.base_images[image.source]

    def boot_file(self, path: str) -> libvirt.Volume:
        """The kernel or initrd volume of `path` on this host."""
        return self.boot_files[path]
