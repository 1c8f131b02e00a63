"""Which accelerator the rig's guests run on: KVM where this host really has it, TCG otherwise.

A guest under KVM runs near the host's speed, as on the hosts autoballoon is for; TCG emulates every
instruction and is slower by an order of magnitude, but runs anywhere. ``/dev/kvm`` opening is not
enough to choose KVM: a host whose ``/dev/kvm`` is served by ``kvm_pvm`` (pagetable-based
virtualization, for hosts that are themselves guests) boots only kernels built for PVM, and a stock
Debian kernel hangs early in its boot there. So KVM is chosen when ``/dev/kvm`` opens read-write and the
module behind it is a hardware one (``kvm_intel`` or ``kvm_amd``); otherwise TCG, with the reason logged
once. ``AUTOBALLOON_RIG_ACCEL=kvm|tcg`` overrides the choice (``kvm`` is still refused where
``/dev/kvm`` does not open).
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from autoballoon.rig.errors import RigError

log = logging.getLogger(__name__)

Accel = Literal["kvm", "tcg"]
ENV = "AUTOBALLOON_RIG_ACCEL"
KVM_DEVICE = Path("/dev/kvm")
SYS_MODULES = Path("/sys/module")
HARDWARE_MODULES = ("kvm_intel", "kvm_amd")
PVM_MODULE = "kvm_pvm"


@dataclass(frozen=True, slots=True)
class Choice:
    """The accelerator and why: the reason goes into the log line and every report."""

    accel: Accel
    reason: str


def _opens(device: Path) -> str | None:
    """None when ``device`` opens read-write, else why not."""
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return f"{device} does not open ({exc.strerror})"
    os.close(fd)
    return None


def decide(env: str | None, device: Path = KVM_DEVICE, modules: Path = SYS_MODULES) -> Choice:
    """The choice for this host, without logging (pure but for the two file-system looks)."""
    if env not in (None, "", "kvm", "tcg"):
        raise RigError(f"{ENV}={env!r} is not an accelerator the rig knows; use kvm or tcg")
    closed = _opens(device)
    if env == "tcg":
        return Choice("tcg", f"{ENV}=tcg")
    if env == "kvm":
        if closed:
            raise RigError(f"{ENV}=kvm, but {closed}")
        return Choice("kvm", f"{ENV}=kvm")
    if closed:
        return Choice("tcg", closed)
    hardware = [m for m in HARDWARE_MODULES if (modules / m).is_dir()]
    if hardware:
        return Choice("kvm", f"{device} opens and {hardware[0]} serves it")
    if (modules / PVM_MODULE).is_dir():
        return Choice(
            "tcg",
            f"{device} is served by {PVM_MODULE} (pagetable-based virtualization), which boots only PVM "
            "guest kernels, not Debian's",
        )
    return Choice("tcg", f"{device} opens, but neither {' nor '.join(HARDWARE_MODULES)} is loaded")


@functools.cache
def choose() -> Choice:
    """This host's choice, decided and logged once per process."""
    choice = decide(os.environ.get(ENV))
    log.warning("rig guests run under %s: %s", choice.accel.upper(), choice.reason)
    return choice
