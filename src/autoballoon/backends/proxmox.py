"""Proxmox VE's VM configs (``/etc/pve/qemu-server/<vmid>.conf``), read as files: no Perl, no ``qm``.

Proxmox runs every VM as a plain QEMU process with a QMP socket at ``/run/qemu-server/<vmid>.qmp`` and a
pid file beside it; the ``qmp://`` backend talks to those sockets, and this module tells it what only the
config knows: the VM's name, its memory, and how Proxmox's own auto-ballooning was told to treat it.
The mapping (Proxmox's ``qm.conf(5)`` names):

- ``memory: N`` (MiB; newer releases also write ``memory: current=N``) is the VM's maximum;
- ``balloon: N`` (MiB) is the least Proxmox's ballooning leaves the VM: autoballoon's per-VM floor;
  ``balloon: 0`` means no balloon device at all, and the VM shows as excluded;
- ``shares: N`` is the VM's weight when the host is short, as in autoballoon; ``shares: 0`` is Proxmox's
  own switch to leave the VM out of *its* auto-ballooning (``PVE/AutoBalloon.pm``, ``compute_alg1``),
  which is how a VM is handed to autoballoon, so it is not a weight here (autoballoon's default applies);
- ``ostype`` tells Linux (``l24``, ``l26``) from Windows (``w*``) for the guest-stats rules;
- ``smbios1: uuid=…`` is the VM's UUID, ``name`` its name (Proxmox does not make names unique).

Everything after the first ``[section]`` line describes a snapshot, not the VM, and is ignored.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from autoballoon.constraints import MAX_SHARES, MIN_TARGET_BYTES
from autoballoon.model import GuestOS, GuestPolicy
from autoballoon.units import MiB

log = logging.getLogger(__name__)

#: Where Proxmox keeps VM configs and QEMU's runtime files on every node.
CONF_DIR = Path("/etc/pve/qemu-server")
RUN_DIR = Path("/run/qemu-server")
CONF_SUFFIX = ".conf"
#: ``qm.conf(5)``: memory defaults to 512 MiB when the key is absent.
DEFAULT_MEMORY = 512 * MiB
WINDOWS_OSTYPES = ("wxp", "w2k", "w2k3", "w2k8", "wvista", "win7", "win8", "win10", "win11")
LINUX_OSTYPES = ("l24", "l26")


@dataclass(frozen=True, slots=True)
class PveConfig:
    """What autoballoon reads from one VM config."""

    vmid: str
    name: str | None
    memory_bytes: int
    balloon_min_bytes: int | None  # ``balloon: N`` with N > 0
    balloon_off: bool  # ``balloon: 0``: no balloon device
    shares: int | None
    os_type: GuestOS
    uuid: str | None

    @property
    def policy(self) -> GuestPolicy:
        """The per-VM policy this config implies: Proxmox's balloon minimum as the floor, its shares as
        the weight, and no ballooning at all for a VM whose balloon is off."""
        floor = self.balloon_min_bytes
        if floor is not None:
            # Proxmox allows floors autoballoon never goes under anyway (its least target is 128 MiB).
            floor = max(MIN_TARGET_BYTES, min(floor, self.memory_bytes))
        shares = self.shares if self.shares is None or self.shares <= MAX_SHARES else MAX_SHARES
        return GuestPolicy(min_bytes=floor, shares=shares, exclude=self.balloon_off)


def _mib(value: str) -> int | None:
    """``N`` or ``current=N`` (property-string form) in MiB, as bytes; None if it is neither."""
    for part in value.split(","):
        key, sep, number = part.partition("=")
        text = number if sep else key
        if not sep or key.strip() == "current":
            try:
                mib = int(text.strip())
            except ValueError:
                return None
            return mib * MiB if mib >= 0 else None
    return None


def _os_type(ostype: str | None) -> GuestOS:
    if ostype is None:
        return "unknown"
    if ostype in LINUX_OSTYPES:
        return "linux"
    if ostype in WINDOWS_OSTYPES:
        return "windows"
    return "other"


def _uuid(smbios: str | None) -> str | None:
    for part in (smbios or "").split(","):
        key, _, value = part.partition("=")
        if key.strip() == "uuid" and value.strip():
            return value.strip()
    return None


def parse_conf(vmid: str, text: str) -> PveConfig:
    """One ``<vmid>.conf``. A malformed value is logged and left at Proxmox's default, never fatal: one
    hand-edited file must not stop the daemon from managing the other VMs."""
    keys: dict[str, str] = {}
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            break  # snapshots follow
        if not stripped or stripped.startswith("#"):
            continue
        key, sep, value = stripped.partition(":")
        if sep:
            keys[key.strip()] = value.strip()
    memory = DEFAULT_MEMORY
    if "memory" in keys:
        parsed = _mib(keys["memory"])
        if parsed:
            memory = parsed
        else:
            log.warning("VM %s: ignoring memory %r (expected MiB, or current=MiB)", vmid, keys["memory"])
    balloon_min: int | None = None
    balloon_off = False
    if "balloon" in keys:
        parsed = _mib(keys["balloon"])
        if parsed is None:
            log.warning("VM %s: ignoring balloon %r (expected MiB)", vmid, keys["balloon"])
        elif parsed == 0:
            balloon_off = True
        else:
            balloon_min = parsed
    shares: int | None = None
    if "shares" in keys:
        try:
            shares = int(keys["shares"])
        except ValueError:
            log.warning("VM %s: ignoring shares %r (expected a whole number)", vmid, keys["shares"])
        if shares is not None and shares <= 0:
            shares = None  # 0: out of Proxmox's own loop, not a weight
    return PveConfig(
        vmid=vmid,
        name=keys.get("name") or None,
        memory_bytes=memory,
        balloon_min_bytes=balloon_min,
        balloon_off=balloon_off,
        shares=shares,
        os_type=_os_type(keys.get("ostype")),
        uuid=_uuid(keys.get("smbios1")),
    )


def read_configs(conf_dir: Path) -> dict[str, PveConfig]:
    """Every ``<vmid>.conf`` in ``conf_dir`` by VM id; unreadable files are logged and skipped."""
    configs: dict[str, PveConfig] = {}
    for path in sorted(conf_dir.glob(f"*{CONF_SUFFIX}")):
        vmid = path.name.removesuffix(CONF_SUFFIX)
        if not vmid.isdigit():
            continue
        try:
            configs[vmid] = parse_conf(vmid, path.read_text())
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("cannot read Proxmox VM config %s: %s", path, exc)
    return configs


def vm_names(configs: dict[str, PveConfig]) -> dict[str, str]:
    """Each VM id's name for autoballoon: its Proxmox name when that is unique, else its VM id.

    Proxmox allows two VMs with one name, but autoballoon addresses VMs by name (config globs, the
    journal, the API), so a shared name would make one VM's settings apply to another.
    """
    counts: dict[str, int] = {}
    for conf in configs.values():
        if conf.name:
            counts[conf.name] = counts.get(conf.name, 0) + 1
    return {
        vmid: conf.name if conf.name and counts[conf.name] == 1 and not conf.name.isdigit() else vmid
        for vmid, conf in configs.items()
    }
