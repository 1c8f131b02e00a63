#!/bin/busybox sh
# The test guest's PID 1: mount the kernel filesystems, load the virtio stack from Debian's cloud kernel
# (built as modules there, and order matters), then run the control agent on the second serial port.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_balloon; do
  insmod "/lib/modules/$m.ko" || echo "init: insmod $m failed"
done
# There is no udev to online hot-plugged vCPUs; do its job once a second.
(while true; do
   for f in /sys/devices/system/cpu/cpu*/online; do
     [ "$(cat "$f")" = 0 ] && echo 1 > "$f"
   done
   sleep 1
 done) &
echo "init: autoballoon test guest up, agent on /dev/ttyS1"
# Respawn the agent if it ever dies: PID 1 must never exit.
while true; do
  /bin/agent /dev/ttyS1
  sleep 1
done
