"""HypervisorHost: one physical KVM host as Pulumi sees it.

An explicit libvirt provider (never the default one, so every resource says which host it lives
on), the storage pool the VMs' disks go to and the base image they are cloned from. Spares get
the pool and base image too ("warm spares": a failover then only clones and boots).
"""

from __future__ import annotations

import hashlib
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


def pool_name(host: Host) -> str:
    """The libvirt name of the host's pool (also the name VMs' volumes refer to)."""
    return f"mac-{host.name}"


def base_image_name(image: Image) -> str:
    """A volume name that changes with the source, so a new image never collides with the old.

    Pulumi then creates the new base image before deleting the old one, which stays the backing
    file of existing root volumes until they are replaced.
    """
    digest = hashlib.sha256(image.source.encode()).hexdigest()[:8]
    filename = PurePosixPath(urlsplit(image.source).path).name or "image"
    return f"mac-base-{digest}-{filename}"


@dataclass(frozen=True)
class HypervisorHostArgs:
    host: Host
    image: Image
    # Resolves only when the cluster may be deployed (the placement check passed); every resource
    # on the host waits for its provider, so a refusal places nothing anywhere.
    cleared: pulumi.Output[object] | None = None


class HypervisorHost(pulumi.ComponentResource):
    """Provider, pool and base image of one live host."""

    provider: libvirt.Provider
    pool: libvirt.Pool
    base_image: libvirt.Volume

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
        self.base_image = libvirt.Volume(
            naming.host_base_image(host),
            name=base_image_name(args.image),
            pool=self.pool.name,
            source=args.image.source,
            format=BASE_IMAGE_FORMAT,
            opts=on_host,
        )
        self.register_outputs({
            "pool": self.pool.name,
            "base_image_id": self.base_image.id,
        })
