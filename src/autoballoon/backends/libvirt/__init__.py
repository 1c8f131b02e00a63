"""The libvirt backend (``qemu:///system``, ``qemu+ssh://host/system``, ``test:///default``...).

libvirt-python is an optional extra that compiles against the host's libvirt, so this package imports
it only when :class:`LibvirtBackend` is asked for; without it the caller gets a
:class:`~autoballoon.errors.MissingDependencyError` that says what to install.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from autoballoon.errors import MissingDependencyError

if TYPE_CHECKING:
    from autoballoon.backends.libvirt.backend import LibvirtBackend, LibvirtTunables

INSTALL_HINT = (
    "the libvirt backend needs libvirt-python: on Debian apt-get install python3-libvirt (make install's "
    "virtualenv sees it), or pip install '.[libvirt]' in a checkout (it compiles against libvirt: first "
    "apt-get install libvirt-dev pkg-config)"
)


def __getattr__(name: str) -> Any:
    if name in ("LibvirtBackend", "LibvirtTunables"):
        try:
            import libvirt  # noqa: F401
        except ImportError as exc:
            raise MissingDependencyError(INSTALL_HINT) from exc
        from autoballoon.backends.libvirt import backend

        return getattr(backend, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["INSTALL_HINT", "LibvirtBackend", "LibvirtTunables"]
