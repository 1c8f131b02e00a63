"""Build (once per recipe, then cache) the production-like guest: Debian 12 with systemd and real services.

The busybox guest (:mod:`.image`) is fast and exact, but it holds no page cache and runs no application,
so it cannot show what an operator feels most: an application slowed because the balloon evicted the
cache it reads from. This guest is what a small production VM is: Debian 12 from Debian's own packages
(``mmdebstrap``), its own cloud kernel and initramfs, systemd, the virtio-balloon driver, an ext4 root
on a virtio disk, and three applications with a figure of merit, each on a data set that lives in the
page cache (PostgreSQL with ``pgbench``, nginx with ``wrk``, a batch ``sort``), plus a cold blob for
the idle role. The rig agent runs as a systemd service, on the same serial protocol as in the busybox
guest, and starts the applications' driver (``guest/debian/ab-app``) on request.

The image is a qcow2 file that every guest boots through its own copy-on-write overlay, so a run never
changes it. It is rebuilt when its recipe changes: the digest covers :class:`Recipe`, every file of
``guest/debian`` and the agent's source. Building it needs the Debian mirror once (about 300 MB of
packages) and about two and a half minutes here; other recipes' images are removed after a build.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import astuple, dataclass
from pathlib import Path

from autoballoon.rig.errors import RigError
from autoballoon.rig.image import AGENT_SOURCE, GUEST_DIR, WORLD_READABLE_DIR, cache_dir
from autoballoon.units import GiB, MiB

DEBIAN_DIR = GUEST_DIR / "debian"
SUITE = "bookworm"
#: The guest's data sets live here (the application driver knows the same paths).
DATA_DIR = "srv/ab"
DONE_MARK = "complete"
BUILD_TIMEOUT_S = 1800


@dataclass(frozen=True, slots=True)
class Recipe:
    """What the image holds. Every data set is larger than what its application caches itself, and
    small enough that a guest of the production scenario holds it in its page cache unballooned."""

    packages: tuple[str, ...] = (
        "systemd-sysv", "udev", "kmod", "initramfs-tools", "linux-image-cloud-amd64", "procps",
        "e2fsprogs", "postgresql-15", "postgresql-client-15", "nginx-light", "wrk",
    )  # fmt: skip
    #: pgbench's scale: 15 MB of tables and indexes per unit, against 64 MB of shared_buffers.
    db_scale: int = 40
    web_files: int = 9600
    web_file_bytes: int = 64 * 1024
    batch_bytes: int = 256 * MiB
    idle_bytes: int = 512 * MiB
    #: Bytes of text per line of the batch input.
    batch_line_bytes: int = 33
    disk_bytes: int = 6 * GiB


RECIPE = Recipe()


@dataclass(frozen=True, slots=True)
class DebianImage:
    """The base disk (read-only to guests) and the kernel and initramfs a domain boots directly."""

    disk: Path
    kernel: Path
    initrd: Path
    digest: str


def _run(cmd: list[str], **kwargs: object) -> None:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=BUILD_TIMEOUT_S,
                              **kwargs)  # type: ignore[call-overload]  # fmt: skip
    except FileNotFoundError as exc:
        raise RigError(f"{cmd[0]} is not installed ({exc}); run scripts/setup-rig") from exc
    except subprocess.TimeoutExpired as exc:
        raise RigError(f"{' '.join(cmd[:2])} took more than {BUILD_TIMEOUT_S} s") from exc
    if done.returncode != 0:
        out = (done.stderr or done.stdout or "").strip()[-1500:]
        raise RigError(f"{' '.join(cmd[:3])} … failed ({done.returncode}):\n{out}")


def digest(recipe: Recipe = RECIPE) -> str:
    h = hashlib.sha256(repr(astuple(recipe)).encode())
    for path in sorted(DEBIAN_DIR.iterdir()):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    h.update(AGENT_SOURCE.read_bytes())
    return h.hexdigest()[:16]


def _write_data(root: Path, recipe: Recipe) -> None:
    """The web tree, the batch input and the idle blob (random, so that nothing can be deduplicated)."""
    data = root / DATA_DIR
    files = data / "www" / "f"
    files.mkdir(parents=True)
    for i in range(recipe.web_files):
        (files / f"{i}.bin").write_bytes(os.urandom(recipe.web_file_bytes))
    (data / "www" / "count").write_text(f"{recipe.web_files}\n")
    (data / "batch").mkdir()
    hex_per_line = recipe.batch_line_bytes - 1
    lines_per_chunk = MiB // recipe.batch_line_bytes
    with (data / "batch" / "input.txt").open("w") as fh:
        for _ in range(recipe.batch_bytes // (lines_per_chunk * recipe.batch_line_bytes)):
            text = os.urandom(lines_per_chunk * hex_per_line // 2).hex()
            fh.write("\n".join(text[i : i + hex_per_line] for i in range(0, len(text), hex_per_line)))
            fh.write("\n")
    (data / "idle").mkdir()
    with (data / "idle" / "blob").open("wb") as fh:
        for _ in range(recipe.idle_bytes // MiB):
            fh.write(os.urandom(MiB))


def _boot_file(root: Path, prefix: str) -> Path:
    found = sorted((root / "boot").glob(f"{prefix}-*"))
    if not found:
        raise RigError(f"the Debian root has no /boot/{prefix}-*: the kernel package did not install")
    return found[-1]


def _build(out: Path, work: Path, recipe: Recipe) -> None:
    agent = work / "ab-agent"
    _run(["gcc", "-static", "-O2", "-o", str(agent), str(AGENT_SOURCE)])
    root = work / "root"
    hook = f'sh {DEBIAN_DIR / "prepare.sh"} "$1" {DEBIAN_DIR} {agent} {recipe.db_scale}'
    _run(["mmdebstrap", "--variant=apt", "--include=" + ",".join(recipe.packages),
          "--customize-hook=" + hook, SUITE, str(root)])  # fmt: skip
    _write_data(root, recipe)
    shutil.copy2(_boot_file(root, "vmlinuz"), out / "vmlinuz")
    shutil.copy2(_boot_file(root, "initrd.img"), out / "initrd.img")
    raw = work / "root.img"
    _run(["mkfs.ext4", "-q", "-F", "-L", "abroot", "-d", str(root), str(raw), str(recipe.disk_bytes)])
    _run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(out / "disk.qcow2")])


def build_debian_image(recipe: Recipe = RECIPE) -> DebianImage:
    """The image for ``recipe``: the cached one, or a new build (under the rig cache's lock)."""
    top = cache_dir()
    key = digest(recipe)
    final = top / "debian" / key
    with (top / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (final / DONE_MARK).exists():
            final.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix="debian-", dir=top) as work:
                staging = Path(work) / "out"
                staging.mkdir()
                _build(staging, Path(work), recipe)
                (staging / DONE_MARK).write_text(key + "\n")
                shutil.rmtree(final, ignore_errors=True)
                staging.rename(final)
            for path in (final.parent, final):
                path.chmod(WORLD_READABLE_DIR)
            for path in final.iterdir():
                path.chmod(0o644)
            for old in final.parent.iterdir():  # images of recipes no longer in use
                if old != final:
                    with contextlib.suppress(OSError):
                        shutil.rmtree(old)
    return DebianImage(final / "disk.qcow2", final / "vmlinuz", final / "initrd.img", key)
