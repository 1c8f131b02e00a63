"""The real-guest rig: small Linux guests under libvirt/QEMU that autoballoon can be measured on.

``autoballoon evaluate --real`` and the real-VM tests (``tests/real/``) use the same pieces:

- :mod:`.image` builds the guest (Debian's cloud kernel, busybox, a static C agent, an init script) from
  Debian packages and caches it;
- :mod:`.domains` writes the domain XML and boots, sweeps and removes guests (named ``abtest-<pid>-<n>``);
- :mod:`.control` talks to the agent inside a guest over its second serial port;
- :mod:`.daemons` starts libvirtd/virtlogd where no init system does, and stops only the ones it started.

``python -m autoballoon.rig build|up|sweep|stop|status|`` drives it by hand. See docs/rig.md.
"""
