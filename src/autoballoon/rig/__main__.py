"""``python -m autoballoon.rig build|up|sweep|stop|status|boot``: the rig by hand.

``stop`` stops only the libvirtd/virtlogd PIDs the rig itself started (recorded under /run). ``boot N``
boots N guests at once, prints how long each took (libvirt's domain start plus the guest's own boot, until
its agent answers), and removes them: the figure that tells a slow libvirtd (for example one that probes
QEMU again on every start) from a healthy one.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from autoballoon.rig import daemons
from autoballoon.rig.errors import RigError


def _boot(count: int) -> None:
    """Boot ``count`` guests at once in a session of their own (daemons started if needed, and stopped
    again), print how long it took, remove them."""
    from autoballoon.rig.domains import GuestSpec
    from autoballoon.rig.session import open_session

    session = open_session()
    try:
        started = time.monotonic()
        guests = session.boot([GuestSpec() for _ in range(count)])
        took = time.monotonic() - started
        for guest in guests:
            print(f"{guest.name}: agent answered {guest.boot_seconds:.1f} s after its start returned")
        print(f"{count} guest(s) booted in {took:.1f} s (domain start + boot, all at once)")
    finally:
        session.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autoballoon.rig", description=__doc__)
    parser.add_argument("command", choices=("build", "up", "sweep", "stop", "status", "boot"))
    parser.add_argument("count", nargs="?", type=int, default=1, help="guests to boot at once (boot)")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            from autoballoon.rig.image import build_image

            print(build_image())
        elif args.command == "up":
            print(json.dumps(daemons.ensure_daemons()))
        elif args.command == "sweep":
            from autoballoon.rig.domains import open_connection, quiet_libvirt, sweep

            quiet_libvirt()
            print("\n".join(sweep(open_connection())) or "nothing to sweep")
        elif args.command == "boot":
            _boot(args.count)
        elif args.command == "stop":
            print(" ".join(daemons.stop_started()) or "the rig started no daemon that is still running")
        else:
            print(json.dumps(daemons.load_started()))
    except RigError as exc:
        print(f"rig: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
