"""Build (once, then cache) the test guest: Debian's cloud kernel plus a busybox initramfs.

Everything comes from Debian packages already on the host or fetched with ``apt-get download``; nothing
is downloaded from elsewhere. The result lives in a world-readable cache directory because libvirt's
QEMU runs as ``libvirt-qemu`` and must read the kernel and initramfs. The cache key covers the kernel
version and every input file, so editing the agent or /init rebuilds the image automatically.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from autoballoon.rig.errors import RigError

GUEST_DIR = Path(__file__).with_name("guest")  # package data: agent.c, init.sh
AGENT_SOURCE = GUEST_DIR / "agent.c"
INIT_SCRIPT = GUEST_DIR / "init.sh"
BUSYBOX = Path("/bin/busybox")
KERNEL_META_PACKAGE = "linux-image-cloud-amd64"
#: Load order matters: each module needs the ones before it (no modprobe/depmod in the guest).
VIRTIO_MODULES = (
    "virtio_ring",
    "virtio",
    "virtio_pci_legacy_dev",
    "virtio_pci_modern_dev",
    "virtio_pci",
    "virtio_balloon",
    "virtio_blk",
    "virtio_mem",
)
DEFAULT_CACHE = Path("/var/cache/autoballoon-rig")
WORLD_READABLE_DIR = 0o755


@dataclass(frozen=True, slots=True)
class GuestImage:
    """What a domain needs for a direct kernel boot."""

    kernel: Path
    initrd: Path
    kernel_version: str


def cache_dir() -> Path:
    """The rig's cache (``AUTOBALLOON_RIG_CACHE`` overrides), created world-readable."""
    path = Path(os.environ.get("AUTOBALLOON_RIG_CACHE", DEFAULT_CACHE))
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(WORLD_READABLE_DIR)
    return path


def _run(cmd: list[str], *, cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise RigError(f"{cmd[0]} is not installed ({exc}); run scripts/setup-rig") from exc
    if done.returncode != 0:
        raise RigError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()[-800:]}")
    return done.stdout


def current_kernel_package() -> str:
    """The ``linux-image-6.1.0-N-cloud-amd64`` that Debian's cloud meta-package points at today."""
    out = _run(["apt-cache", "depends", KERNEL_META_PACKAGE])
    match = re.search(r"Depends:\s*(linux-image-\S+-cloud-amd64)", out)
    if match is None:
        raise RigError(f"apt-cache depends {KERNEL_META_PACKAGE} names no kernel package:\n{out}")
    return match.group(1)


def _cached_kernel_trees(root: Path) -> list[Path]:
    return sorted(p for p in (root / "kernels").glob("linux-image-*") if (p / "boot").is_dir())


def kernel_tree(root: Path) -> tuple[Path, str]:
    """An extracted kernel package: fetch it with ``apt-get download`` unless one is cached already.

    A cached kernel is reused when apt cannot answer (offline CI cache), so only the first run needs
    the Debian mirror.
    """
    try:
        package = current_kernel_package()
    except RigError:
        cached = _cached_kernel_trees(root)
        if cached:
            package = cached[-1].name
        else:
            # Container images often ship without apt lists: fetch them once, then ask again.
            _run(["apt-get", "update", "-qq"])
            package = current_kernel_package()
    tree = root / "kernels" / package
    if not (tree / "boot").is_dir():
        download = root / "downloads"
        download.mkdir(parents=True, exist_ok=True)
        download.chmod(0o777)  # apt-get download drops privileges to _apt when it can
        for old in download.glob(f"{package}_*.deb"):
            old.unlink()
        _run(["apt-get", "download", "-q", package], cwd=download)
        debs = sorted(download.glob(f"{package}_*.deb"))
        if not debs:
            raise RigError(f"apt-get download {package} produced no .deb in {download}")
        staging = Path(tempfile.mkdtemp(prefix="kernel-", dir=root))
        _run(["dpkg-deb", "-x", str(debs[-1]), str(staging)])
        tree.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(tree)
        debs[-1].unlink()
    version = package.removeprefix("linux-image-")
    return tree, version


def _digest(version: str) -> str:
    h = hashlib.sha256(version.encode())
    for path in (AGENT_SOURCE, INIT_SCRIPT, BUSYBOX):
        h.update(path.read_bytes())
    h.update(" ".join(VIRTIO_MODULES).encode())
    return h.hexdigest()[:16]


def _write_initramfs(tree: Path, version: str, out: Path, work: Path) -> None:
    root = work / "root"
    for sub in ("bin", "proc", "sys", "dev", "lib/modules", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    shutil.copy2(INIT_SCRIPT, root / "init")
    (root / "init").chmod(0o755)
    _run(["gcc", "-static", "-O2", "-o", str(root / "bin" / "agent"), str(AGENT_SOURCE)])
    module_root = tree / "lib" / "modules" / version / "kernel"
    for name in VIRTIO_MODULES:
        # Debian 12 ships uncompressed .ko files, which busybox insmod loads as they are.
        found = list(module_root.rglob(f"{name}.ko"))
        if not found:
            raise RigError(f"kernel {version} has no uncompressed module {name}.ko under {module_root}")
        shutil.copy2(found[0], root / "lib" / "modules" / f"{name}.ko")
    files = _run(["find", "."], cwd=root)
    cpio = subprocess.run(
        ["cpio", "-o", "-H", "newc", "--quiet"],
        cwd=root,
        input=files.encode(),
        capture_output=True,
        check=False,
    )
    if cpio.returncode != 0:
        raise RigError(f"cpio failed: {cpio.stderr.decode(errors='replace')}")
    with gzip.open(out, "wb", compresslevel=6) as fh:
        fh.write(cpio.stdout)


def build_image() -> GuestImage:
    """The guest image, built under an exclusive lock so that concurrent test sessions build it once."""
    root = cache_dir()
    with (root / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        tree, version = kernel_tree(root)
        image_dir = root / "images" / _digest(version)
        kernel = image_dir / "vmlinuz"
        initrd = image_dir / "initrd.gz"
        if not (kernel.exists() and initrd.exists()):
            image_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=root) as work:
                tmp_initrd = Path(work) / "initrd.gz"
                _write_initramfs(tree, version, tmp_initrd, Path(work))
                shutil.copy2(tree / "boot" / f"vmlinuz-{version}", kernel)
                tmp_initrd.rename(initrd)
            for path in (image_dir.parent, image_dir):
                path.chmod(WORLD_READABLE_DIR)
            for path in (kernel, initrd):
                path.chmod(0o644)
        return GuestImage(kernel=kernel, initrd=initrd, kernel_version=version)
