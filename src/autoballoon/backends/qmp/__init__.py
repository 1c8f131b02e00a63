"""The QMP backend (``qmp:///path/to/socket``, ``qmp:///dir/?glob=*.qmp``, ``proxmox://``): QEMU without
libvirt, through its QMP sockets.

qemu.qmp is an optional extra, like libvirt-python: this package imports it only when
:class:`QmpBackend` is asked for; without it the caller gets a
:class:`~autoballoon.errors.MissingDependencyError` that says what to install.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from autoballoon.errors import MissingDependencyError

if TYPE_CHECKING:
    from autoballoon.backends.qmp.backend import QmpBackend

INSTALL_HINT = "the qmp:// and proxmox:// backends need qemu.qmp: pip install '.[qmp]' in a checkout"


def __getattr__(name: str) -> Any:
    if name == "QmpBackend":
        try:
            import qemu.qmp  # noqa: F401
        except ImportError as exc:
            raise MissingDependencyError(INSTALL_HINT) from exc
        from autoballoon.backends.qmp import backend

        return backend.QmpBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["INSTALL_HINT", "QmpBackend"]
