"""Golden VM images per tier (`make images`) and booting them under qemu for the VM tests."""
