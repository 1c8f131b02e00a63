"""autoballoon: an automatic, safe virtio-balloon manager for KVM/QEMU hosts."""

__version__ = "0.1.0"
