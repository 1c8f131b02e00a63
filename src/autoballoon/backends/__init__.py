"""Backends, chosen by the scheme of a URI (``open_backend``)."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from autoballoon.backends.base import Backend
from autoballoon.errors import UnknownSchemeError

#: Schemes handled by libvirt (any driver+transport: ``qemu+ssh``, ``qemu+tcp``, ``test``...).
LIBVIRT_DRIVERS = ("qemu", "test", "kvm")
KNOWN_SCHEMES = (
    "qemu:///system, qemu:///session, qemu+ssh://host/system, test:///default, "
    "sim:///demo, sim:///path/to/scenario.toml, "
    "qmp:///path/to/vm.qmp, qmp:///dir/?glob=*.qmp, qmp:///run/qemu-server/, proxmox://"
)
#: Schemes of QEMU's own monitor sockets (no libvirt): plain QEMU and Proxmox VE.
QMP_SCHEMES = ("qmp", "proxmox")


def default_uri() -> str:
    """``--connect``'s default: AUTOBALLOON_URI, then libvirt's own LIBVIRT_DEFAULT_URI, then qemu:///system."""
    return os.environ.get("AUTOBALLOON_URI") or os.environ.get("LIBVIRT_DEFAULT_URI") or "qemu:///system"


def open_backend(uri: str) -> Backend:
    """Open the backend for ``uri``; an unknown scheme is a clear error listing the known ones."""
    scheme = urlsplit(uri).scheme
    driver = scheme.split("+", 1)[0]
    if scheme == "sim":
        from autoballoon.backends.sim import SimBackend

        return SimBackend.open(uri)
    if scheme in QMP_SCHEMES:
        from autoballoon.backends.qmp import QmpBackend

        return QmpBackend.open(uri)
    if driver in LIBVIRT_DRIVERS:
        from autoballoon.backends.libvirt import LibvirtBackend

        return LibvirtBackend.open(uri)
    raise UnknownSchemeError(f"unknown connection URI {uri!r}: expected one of {KNOWN_SCHEMES}")


__all__ = ["KNOWN_SCHEMES", "Backend", "default_uri", "open_backend"]
