"""What a ``qmp://`` or ``proxmox://`` URI asks for (pure: parsed and checked without touching a socket).

- ``qmp:///path/to/vm.qmp``: one VM, one socket. A socket that is gone is a lost connection, as a
  libvirtd that is down: the daemon retries with back-off until it comes back.
- ``qmp:///dir/?glob=*.qmp``: every socket in ``dir`` whose name matches; sockets come and go with their
  VMs.
- ``qmp:///run/qemu-server/`` (a directory without ``glob``) or ``proxmox://``: a Proxmox VE node. The
  sockets are ``<vmid>.qmp``, and names, memory and Proxmox's balloon settings come from
  ``<vmid>.conf`` in ``/etc/pve/qemu-server`` (``?conf=DIR`` elsewhere). ``proxmox:///DIR`` names
  another run directory.

``?hold=on`` keeps one QMP connection per VM open between calls, so that QEMU's events (balloon
changes, shutdowns) arrive as they happen. It is off by default because a QMP socket serves one client
at a time: a held connection makes every other client of that socket wait (Proxmox's ``qm`` and
``pvestatd``, an operator's script, another ``autoballoon`` command). Give autoballoon a QMP socket of
its own (a second ``-qmp``) to turn it on.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from autoballoon.backends import proxmox
from autoballoon.errors import InvalidValueError

QMP_SCHEME = "qmp"
PROXMOX_SCHEME = "proxmox"
SCHEMES = (QMP_SCHEME, PROXMOX_SCHEME)
URI_FORMS = (
    "qmp:///path/to/vm.qmp, qmp:///dir/?glob=*.qmp, qmp:///run/qemu-server/ (Proxmox configs), "
    "or proxmox:// (with ?conf=DIR, ?hold=on|off where wanted)"
)
QUERY_KEYS = ("glob", "conf", "hold")
PROXMOX_GLOB = "*.qmp"
_ON = ("on", "yes", "true", "1")
_OFF = ("off", "no", "false", "0")


class Mode(StrEnum):
    """Which VMs a URI covers."""

    SOCKET = "socket"  # one socket, one VM
    GLOB = "glob"  # every matching socket in a directory
    PROXMOX = "proxmox"  # every <vmid>.conf, with its <vmid>.qmp when the VM runs


@dataclass(frozen=True, slots=True)
class Location:
    """A parsed URI: the socket or directory, how to find VMs there, and whether to hold connections."""

    mode: Mode
    path: Path
    glob: str = PROXMOX_GLOB
    conf_dir: Path | None = None
    hold: bool = False


def _flag(key: str, value: str) -> bool:
    lowered = value.lower()
    if lowered in _ON:
        return True
    if lowered in _OFF:
        return False
    raise InvalidValueError(f"URI parameter {key}", value, "on or off")


def parse_uri(uri: str, *, is_dir: bool | None = None) -> Location:
    """Split a ``qmp://`` or ``proxmox://`` URI. ``is_dir`` says whether a ``qmp://`` path that does not end
    in ``/`` is a directory (the caller looks; None: only a trailing ``/`` makes one)."""
    parts = urlsplit(uri)
    if parts.scheme not in SCHEMES:
        raise InvalidValueError("QMP URI", uri, URI_FORMS)
    if parts.netloc not in ("", "localhost"):
        raise InvalidValueError(
            "QMP URI host", parts.netloc, "none: QMP sockets are local (qmp:///path, three slashes)"
        )
    try:
        pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise InvalidValueError("QMP URI query", parts.query, "key=value pairs joined by &") from None
    query: dict[str, str] = {}
    for key, value in pairs:
        if key not in QUERY_KEYS:
            raise InvalidValueError("QMP URI parameter", key, "one of " + ", ".join(QUERY_KEYS))
        query[key] = value
    hold = _flag("hold", query["hold"]) if "hold" in query else False
    raw_path = unquote(parts.path)
    for what, text in (("path", raw_path), ("parameter conf", query.get("conf", ""))):
        if "\x00" in text:  # no file name holds one: the OS refuses it with an error of its own
            shown = text.replace("\x00", "%00")
            raise InvalidValueError(f"QMP URI {what}", shown, "a path without NUL (%00)")
    conf = Path(query["conf"]) if query.get("conf") else None
    if conf is not None and not conf.is_absolute():
        raise InvalidValueError("QMP URI parameter conf", query["conf"], "an absolute directory path")
    if parts.scheme == PROXMOX_SCHEME:
        if "glob" in query:
            raise InvalidValueError("proxmox URI parameter", "glob", "conf or hold: sockets are <vmid>.qmp")
        run = Path(raw_path) if raw_path not in ("", "/") else proxmox.RUN_DIR
        return Location(Mode.PROXMOX, run, PROXMOX_GLOB, conf or proxmox.CONF_DIR, hold)
    if not raw_path or raw_path == "/":
        raise InvalidValueError("QMP URI path", raw_path or "(none)", URI_FORMS)
    path = Path(raw_path)
    directory = raw_path.endswith("/") or bool(is_dir)
    if "glob" in query:
        pattern = query["glob"]
        if not pattern or "/" in pattern:
            raise InvalidValueError("QMP URI parameter glob", pattern, "a file name pattern such as *.qmp")
        if not directory:
            raise InvalidValueError("QMP URI path", raw_path, "a directory (ending in /) with ?glob=")
        return Location(Mode.GLOB, path, pattern, conf, hold)
    if directory:
        return Location(Mode.PROXMOX, path, PROXMOX_GLOB, conf or proxmox.CONF_DIR, hold)
    if conf is not None:
        raise InvalidValueError("QMP URI parameter conf", str(conf), "only with a directory of sockets")
    return Location(Mode.SOCKET, path, hold=hold)
