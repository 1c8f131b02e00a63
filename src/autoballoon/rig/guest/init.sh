#!/bin/busybox sh
# The rig guest's PID 1: mount the kernel filesystems, load the virtio stack from Debian's cloud kernel
# (built as modules there, and order matters), turn on swap when the host gave the guest a swap disk,
# then run the control agent on the second serial port.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
# Memory that virtio-mem plugs is onlined at once (there is no udev), mostly as ZONE_MOVABLE so that it
# can be unplugged again: the kernel's auto-movable policy, as virtio-mem's author recommends.
echo auto-movable > /sys/module/memory_hotplug/parameters/online_policy
echo online > /sys/devices/system/memory/auto_online_blocks
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_balloon virtio_blk virtio_mem; do
  insmod "/lib/modules/$m.ko" || echo "init: insmod $m failed"
done
# A swap disk (the rig's per-guest swap) is the first virtio disk; the disk scan may lag the module load.
if [ -e /sys/bus/virtio/drivers/virtio_blk ]; then
  for _ in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/vda ] && break; sleep 0.2; done
  if [ -b /dev/vda ]; then
    mkswap /dev/vda >/dev/null && swapon /dev/vda && echo "init: swap on /dev/vda"
  fi
fi
# There is no udev to online hot-plugged vCPUs; do its job once a second. Only hot-plugged vCPUs have an
# `online` file (cpu0 never does), so with none plugged the glob matches nothing: skip it, don't cat it.
(while true; do
   for f in /sys/devices/system/cpu/cpu*/online; do
     [ -e "$f" ] || continue
     [ "$(cat "$f")" = 0 ] && echo 1 > "$f"
   done
   sleep 1
 done) &
echo "init: autoballoon rig guest up, agent on /dev/ttyS1"
# Respawn the agent if it ever dies: PID 1 must never exit.
while true; do
  /bin/agent /dev/ttyS1
  sleep 1
done
