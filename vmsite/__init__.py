"""The vm stack on this machine: local libvirtd hosts, their BMCs and the drill."""
