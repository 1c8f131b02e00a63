"""Domain XML in and out: read what the model needs, edit ``<memballoon>``, (de)serialise the policy.

Pure functions over XML text, tested on samples without a daemon. Editing goes through ElementTree and
re-serialises the whole document, keeping the document's own namespace prefixes (``qemu:``,
``libosinfo:``...) so that a redefined domain differs from the original only where we meant it to.
"""

from __future__ import annotations

import io
import logging
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field, replace

from autoballoon.constraints import STATS_PERIOD, field_ranges
from autoballoon.errors import InvalidValueError, LimitError, RefusedError
from autoballoon.model import (
    BALLOON_MODELS,
    BalloonChange,
    BalloonConfig,
    GuestOS,
    GuestPolicy,
    VirtioMem,
    check_policy,
)
from autoballoon.units import KiB, parse_size

log = logging.getLogger(__name__)

#: The project's metadata namespace: the per-VM policy lives at <metadata><autoballoon:policy .../>.
POLICY_NS = "https://autoballoon.dev/xmlns/policy/1"
POLICY_PREFIX = "autoballoon"
POLICY_TAG = "policy"
LIBOSINFO_NS = "http://libosinfo.org/xmlns/libvirt/domain/1.0"
#: libosinfo OS ids of Linux distributions (the id is a URL naming the vendor).
LINUX_OS_ID_MARKERS = (
    "linux",
    "debian.org",
    "ubuntu.com",
    "fedoraproject.org",
    "redhat.com",
    "centos.org",
    "opensuse.org",
    "suse.com",
    "almalinux.org",
    "rockylinux.org",
    "archlinux.org",
    "alpinelinux.org",
    "gentoo.org",
    "nixos.org",
)
WINDOWS_OS_ID_MARKER = "microsoft.com/win"
_YES = ("yes", "on", "true", "1")
#: The policy's metadata attributes: (attribute, GuestPolicy field, its range, may be unset).
_POLICY_ATTRS = tuple(
    (name.removesuffix("_bytes"), name, rng, opt) for name, rng, opt in field_ranges(GuestPolicy)
)


@dataclass(frozen=True, slots=True)
class DomainConfig:
    """What the model needs from one domain XML (live XML for a running domain, else the config)."""

    name: str
    uuid: str | None
    max_bytes: int
    target_bytes: int
    vcpus: int
    max_vcpus: int
    balloon: BalloonConfig = field(default_factory=BalloonConfig)
    os_type: GuestOS = "unknown"
    policy: GuestPolicy = field(default_factory=GuestPolicy)
    #: Why ballooning cannot give this guest's memory back to the host, or None (see balloon_incapable).
    incapable: str | None = None
    virtio_mem: VirtioMem | None = None
    virtio_mem_alias: str | None = None  # the device's alias, which updateDeviceFlags matches on


def _parse(xml: str) -> ET.Element:
    try:
        return ET.fromstring(xml)
    except ET.ParseError as exc:
        raise InvalidValueError("domain XML", xml[:80], f"well-formed XML ({exc})") from exc


def _size(el: ET.Element | None) -> int | None:
    """A libvirt scaled integer (``<memory unit='KiB'>``) in bytes; libvirt's default unit is KiB."""
    text = (el.text or "").strip() if el is not None else ""
    if el is None or not text:
        return None
    unit = el.get("unit", "KiB")
    return parse_size(f"{text}{unit}", default_unit=KiB, what=f"<{el.tag}> size")


def _flag(value: str | None) -> bool:
    return value is not None and value.lower() in _YES


def parse_balloon(root: ET.Element) -> BalloonConfig:
    """The ``<memballoon>`` device; a domain without one has no balloon (``model='none'``)."""
    el = root.find("./devices/memballoon")
    if el is None:
        return BalloonConfig(model="none")
    stats = el.find("stats")
    period = None
    if stats is not None and stats.get("period") is not None:
        try:
            period = int(stats.get("period", "0"))
        except ValueError:
            period = None
        if period is not None and not STATS_PERIOD.accepts(period):
            period = None
    return BalloonConfig(
        model=el.get("model", "virtio"),
        autodeflate=_flag(el.get("autodeflate")),
        free_page_reporting=_flag(el.get("freePageReporting")),
        stats_period=period,
    )


#: Host devices passed through with VFIO (PCI functions, mediated devices, SR-IOV network functions).
_VFIO_DEVICES = (
    "./devices/hostdev[@type='pci']",
    "./devices/hostdev[@type='mdev']",
    "./devices/interface[@type='hostdev']",
)


def balloon_incapable(root: ET.Element) -> str | None:
    """Why this guest's balloon cannot return memory to the host, or None.

    - A VFIO device can DMA into any guest page, so QEMU pins all guest memory and disables discarding
      it (``ram_block_discard_disable()`` in QEMU's VFIO code): the balloon inflates, the host gains
      nothing, and the guest is short for no one's benefit.
    - ``<memoryBacking><locked/>`` mlocks the guest's memory: the host cannot take it back either.
    - With ``<hugepages/>`` a huge page is freed only once the balloon holds every 4 KiB of it (QEMU's
      virtio-balloon tracks partly ballooned huge pages), and then it goes back to the reserved huge
      page pool, which only huge-page guests can use.
    """
    if any(root.find(path) is not None for path in _VFIO_DEVICES):
        return "balloon ineffective: a VFIO host device pins all guest memory"
    if root.find("./memoryBacking/locked") is not None:
        return "balloon ineffective: guest memory is locked (<memoryBacking><locked/>)"
    if root.find("./memoryBacking/hugepages") is not None:
        return "balloon ineffective: guest memory is backed by huge pages (<memoryBacking><hugepages/>)"
    return None


def guess_os(root: ET.Element) -> GuestOS:
    """The guest OS family from libosinfo metadata, Hyper-V enlightenments or a direct Linux boot."""
    os_el = root.find(f"./metadata/{{{LIBOSINFO_NS}}}libosinfo/{{{LIBOSINFO_NS}}}os")
    if os_el is not None:
        os_id = os_el.get("id", "").lower()
        if WINDOWS_OS_ID_MARKER in os_id:
            return "windows"
        if any(marker in os_id for marker in LINUX_OS_ID_MARKERS):
            return "linux"
        return "other"
    if root.find("./features/hyperv") is not None:
        return "windows"
    if root.find("./os/kernel") is not None:
        return "linux"
    return "unknown"


def _vcpus(root: ET.Element) -> tuple[int, int]:
    el = root.find("vcpu")
    text = (el.text or "").strip() if el is not None else ""
    if el is None or not text:
        return 1, 1
    maximum = int(text)
    return int(el.get("current", maximum)), maximum


def policy_from_element(el: ET.Element) -> GuestPolicy:
    """A policy from its metadata element; a malformed or out-of-range attribute is ignored (and logged),
    never fatal.

    Metadata can be hand-edited; one bad attribute must not make the VM's snapshot fail. The field falls
    back to the daemon's default, which is the documented meaning of an unset field. Each value is held
    to its :class:`GuestPolicy` field's own range, the one the config file and the API use.
    """
    values: dict[str, object] = {}
    for attr, name, rng, _ in _POLICY_ATTRS:
        text = el.get(attr)
        if text is None:
            continue
        try:
            value: int | float = int(text) if rng.whole else float(text)
        except ValueError:
            log.warning("ignoring autoballoon policy %s=%r: not a number", attr, text)
            continue
        if not rng.accepts(value):
            log.warning("ignoring autoballoon policy %s=%r: expected %s", attr, text, rng.describe())
            continue
        values[name] = value
    exclude = (el.get("exclude") or "no").lower() in _YES
    # mypy cannot follow field names through a dict: each value was parsed as its field's type above.
    policy = GuestPolicy(**values, exclude=exclude)  # type: ignore[arg-type]  # int if its Range is whole
    try:
        check_policy(policy)
    except LimitError as e:  # min above max: the max wins, as when layers merge (see guards)
        log.warning("ignoring autoballoon policy min=%r: %s", el.get("min"), e)
        policy = replace(policy, min_bytes=None)
    return policy


def policy_from_metadata(root: ET.Element) -> GuestPolicy:
    el = root.find(f"./metadata/{{{POLICY_NS}}}{POLICY_TAG}")
    return policy_from_element(el) if el is not None else GuestPolicy()


def policy_from_xml(xml: str) -> GuestPolicy:
    """A policy from the text ``virDomainGetMetadata`` returns (the element, with or without its prefix)."""
    return policy_from_element(_parse(xml))


def policy_is_empty(policy: GuestPolicy) -> bool:
    return policy == GuestPolicy()


def policy_to_xml(policy: GuestPolicy) -> str:
    """The metadata element for ``virDomainSetMetadata``: sizes in bytes, unset fields omitted."""
    attrs: dict[str, str] = {}
    if policy.min_bytes is not None:
        attrs["min"] = str(policy.min_bytes)
    if policy.max_bytes is not None:
        attrs["max"] = str(policy.max_bytes)
    if policy.shares is not None:
        attrs["shares"] = str(policy.shares)
    if policy.buffer is not None:
        attrs["buffer"] = repr(float(policy.buffer))
    attrs["exclude"] = "yes" if policy.exclude else "no"
    return ET.tostring(ET.Element(POLICY_TAG, attrs), encoding="unicode")


VIRTIO_MEM_DEVICE = "./devices/memory[@model='virtio-mem']"


def parse_virtio_mem(root: ET.Element, max_bytes: int) -> tuple[VirtioMem | None, str | None]:
    """The domain's (first) virtio-mem device and its alias.

    libvirt's ``<memory>`` counts every memory device's ``<size>``, so the boot memory under the device
    is ``<memory>`` less those sizes. ``<current>`` (plugged) is only in the live XML; the inactive XML
    has the ``<requested>`` size the guest boots with, which is what it will have plugged then.
    """
    devices = root.findall(VIRTIO_MEM_DEVICE)
    if not devices:
        return None, None
    el = devices[0]
    region, block = _size(el.find("target/size")), _size(el.find("target/block"))
    if region is None or not block:
        return None, None
    requested = _size(el.find("target/requested")) or 0
    current = _size(el.find("target/current"))
    sizes = sum(_size(d.find("target/size")) or 0 for d in root.findall("./devices/memory"))
    alias = el.find("alias")
    vmem = VirtioMem(
        block_bytes=block,
        plugged_bytes=current if current is not None else requested,
        requested_bytes=requested,
        region_bytes=region,
        boot_bytes=max(0, max_bytes - sizes),
    )
    return vmem, alias.get("name") if alias is not None else None


def virtio_mem_update(xml: str, requested_bytes: int) -> str:
    """The device XML ``updateDeviceFlags`` needs to resize the domain's virtio-mem device: the device as
    the live XML has it, with only ``<requested>`` changed (libvirt refuses a change to anything else)."""
    root = _parse(xml)
    devices = root.findall(VIRTIO_MEM_DEVICE)
    if not devices:
        raise RefusedError(f"refused: domain {root.findtext('name', '')!r} has no virtio-mem device")
    el = devices[0]
    requested = el.find("target/requested")
    if requested is None:
        target = el.find("target")
        if target is None:
            target = ET.SubElement(el, "target")
        requested = ET.SubElement(target, "requested")
    requested.attrib.clear()
    requested.set("unit", "KiB")
    requested.text = str(requested_bytes // KiB)
    return ET.tostring(el, encoding="unicode")


def parse_domain(xml: str) -> DomainConfig:
    """Everything the model reads from one domain XML."""
    root = _parse(xml)
    max_bytes = _size(root.find("memory")) or 0
    target = _size(root.find("currentMemory"))
    vcpus, max_vcpus = _vcpus(root)
    vmem, vmem_alias = parse_virtio_mem(root, max_bytes)
    return DomainConfig(
        name=root.findtext("name", ""),
        uuid=root.findtext("uuid"),
        max_bytes=max_bytes,
        target_bytes=target if target is not None else max_bytes,
        vcpus=vcpus,
        max_vcpus=max_vcpus,
        balloon=parse_balloon(root),
        os_type=guess_os(root),
        policy=policy_from_metadata(root),
        incapable=balloon_incapable(root),
        virtio_mem=vmem,
        virtio_mem_alias=vmem_alias,
    )


def _namespaces(xml: str) -> list[tuple[str, str]]:
    return [ns for _event, ns in ET.iterparse(io.StringIO(xml), events=("start-ns",))]


def _serialise(root: ET.Element, namespaces: list[tuple[str, str]]) -> str:
    """ElementTree output that keeps the document's own prefixes instead of inventing ``ns0``."""
    for prefix, uri in namespaces:
        if prefix:
            try:
                ET.register_namespace(prefix, uri)
            except ValueError:
                log.debug("cannot keep reserved namespace prefix %r for %s", prefix, uri)
    return ET.tostring(root, encoding="unicode")


def _validate_change(vm: str, current: BalloonConfig, change: BalloonChange) -> str:
    model = change.model if change.model is not None else current.model
    if model not in BALLOON_MODELS:
        raise InvalidValueError(f"balloon model for VM {vm!r}", model, f"one of {', '.join(BALLOON_MODELS)}")
    if model == "none":
        wanted = [
            name
            for name, value in (
                ("autodeflate", change.autodeflate),
                ("free page reporting", change.free_page_reporting),
            )
            if value
        ]
        if wanted or change.stats_period:
            extra = ", ".join([*wanted, *(["a stats period"] if change.stats_period else [])])
            raise RefusedError(
                f"refused: VM {vm!r} has balloon model 'none', so it cannot have {extra}; "
                "choose --model virtio as well; nothing was changed"
            )
    return model


def apply_balloon_change(xml: str, change: BalloonChange, vm: str = "") -> str:
    """The domain XML with ``<memballoon>`` edited as asked; everything else left as it was.

    ``model='none'`` keeps only the model attribute: libvirt rejects a 'none' balloon that still carries
    stats, an address, a driver or the autodeflate/freePageReporting switches.
    """
    namespaces = _namespaces(xml)
    root = _parse(xml)
    vm = vm or root.findtext("name", "")
    current = parse_balloon(root)
    model = _validate_change(vm, current, change)
    devices = root.find("devices")
    if devices is None:
        devices = ET.SubElement(root, "devices")
    el = devices.find("memballoon")
    if el is None:
        el = ET.SubElement(devices, "memballoon")
    if model == "none":
        el.attrib.clear()
        for child in list(el):
            el.remove(child)
        el.set("model", "none")
        return _serialise(root, namespaces)
    el.set("model", model)
    for attr, value in (
        ("autodeflate", change.autodeflate),
        ("freePageReporting", change.free_page_reporting),
    ):
        if value is True:
            el.set(attr, "on")
        elif value is False and attr in el.attrib:
            del el.attrib[attr]
    if change.stats_period is not None:
        stats = el.find("stats")
        if change.stats_period == 0:
            if stats is not None:
                el.remove(stats)
        else:
            if stats is None:
                stats = ET.Element("stats")
                el.insert(0, stats)
            stats.set("period", str(change.stats_period))
    return _serialise(root, namespaces)


def describe_balloon_change(before: BalloonConfig, after: BalloonConfig) -> list[str]:
    """Human-readable list of what differs, for the ChangeResult message."""
    out = []
    if before.model != after.model:
        out.append(f"model {before.model} -> {after.model}")
    if before.autodeflate != after.autodeflate:
        out.append(f"autodeflate {'on' if after.autodeflate else 'off'}")
    if before.free_page_reporting != after.free_page_reporting:
        out.append(f"freePageReporting {'on' if after.free_page_reporting else 'off'}")
    if (before.stats_period or 0) != (after.stats_period or 0):
        out.append(f"stats period {after.stats_period or 0} s")
    return out
