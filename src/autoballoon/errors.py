"""The project's exceptions, split by what the caller should do about them.

:class:`RefusedError` and its children mean "the request was wrong and nothing changed" (CLI exit 2,
HTTP 4xx). :class:`BackendError` means "the request was fine but the hypervisor failed" (exit 1, HTTP
502). Every message names the thing (VM, field, value) so that a log line is enough to act on.
"""

from __future__ import annotations

from typing import Any

#: The longest rendering of a refused value in a message: a refusal must not echo a megabyte back.
SHOWN_CHARS = 80


def shown(value: Any) -> str:
    """``repr(value)`` for a message, cut to :data:`SHOWN_CHARS` with the full length said."""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else f"{text[:SHOWN_CHARS]}... ({len(text)} characters)"


class AutoballoonError(Exception):
    """Base of every error autoballoon raises on purpose."""

    exit_code = 1


class RefusedError(AutoballoonError):
    """A request that was not carried out because it was invalid or unsafe. Nothing changed."""

    exit_code = 2


class InvalidValueError(RefusedError, ValueError):
    """A value from outside (CLI, config, API) that is malformed or out of range."""

    def __init__(self, what: str, value: Any, accepted: str) -> None:
        self.what = what
        self.value = value
        self.accepted = accepted
        super().__init__(f"invalid {what} {shown(value)}: expected {accepted}")


class UnknownVMError(RefusedError, LookupError):
    """The named VM does not exist on this backend."""

    def __init__(self, vm: str, known: list[str] | None = None) -> None:
        self.vm = vm
        hint = ""
        if known is not None:
            shown = ", ".join(sorted(known)[:20]) or "none"
            hint = f" (known VMs: {shown})"
        super().__init__(f"unknown VM {vm!r}{hint}")


class LimitError(RefusedError):
    """A value that is well-formed but outside what the VM allows (above max, below floor...)."""

    def __init__(self, vm: str, what: str, value: str, limit: str) -> None:
        self.vm = vm
        self.what = what
        self.limit = limit
        where = f" for VM {vm!r}" if vm else ""
        super().__init__(f"refused: {what} {value}{where}: {limit}; nothing was changed")


class UnknownSchemeError(RefusedError):
    """A backend URI whose scheme no backend handles."""


class BackendError(AutoballoonError):
    """The hypervisor (libvirt, QEMU, the simulator) failed to do something that was asked correctly."""

    def __init__(self, message: str, *, vm: str | None = None, cause: str | None = None) -> None:
        self.vm = vm
        self.cause = cause
        parts = [message]
        if vm is not None:
            parts.insert(0, f"VM {vm!r}:")
        if cause:
            parts.append(f"({cause})")
        super().__init__(" ".join(parts))


class ConnectionLostError(BackendError):
    """The connection to the hypervisor dropped; the caller may reconnect with back-off."""


class MissingDependencyError(AutoballoonError):
    """An optional extra (libvirt-python, qemu.qmp) that this URI needs is not installed."""
