"""``python -m tests.rig build|up|sweep|stop|status``: the rig by hand, and CI's end-of-job cleanup.

``stop`` stops only the libvirtd/virtlogd PIDs the rig itself started (recorded under /run).
"""

from __future__ import annotations

import argparse
import json
import sys

from tests.rig import daemons
from tests.rig.errors import RigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.rig", description=__doc__)
    parser.add_argument("command", choices=("build", "up", "sweep", "stop", "status"))
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            from tests.rig.image import build_image

            print(build_image())
        elif args.command == "up":
            print(json.dumps(daemons.ensure_daemons()))
        elif args.command == "sweep":
            from tests.rig.domains import open_connection, quiet_libvirt, sweep

            quiet_libvirt()
            print("\n".join(sweep(open_connection())) or "nothing to sweep")
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
