#!/bin/sh
# mmdebstrap's customize hook for the production-like guest: install the rig's files into the new root
# ($1), enable the agent, configure the applications, and create the database's data set by running
# PostgreSQL once inside the root. Arguments: ROOT GUEST_DIR AGENT_BINARY DB_SCALE.
set -eu
root=$1 guest=$2 agent=$3 scale=$4
install -m 0755 "$agent" "$root/usr/local/sbin/ab-agent"
install -m 0755 "$guest/ab-app" "$root/usr/local/sbin/ab-app"
install -d "$root/usr/local/share/ab"
install -m 0644 "$guest/web.lua" "$root/usr/local/share/ab/web.lua"
install -m 0644 "$guest/ab-agent.service" "$root/etc/systemd/system/ab-agent.service"
chroot "$root" systemctl enable ab-agent.service
echo abguest > "$root/etc/hostname"
printf '/dev/vda / ext4 rw,noatime 0 1\n' > "$root/etc/fstab"
# nginx: only the rig's site.
rm -f "$root/etc/nginx/sites-enabled/default"
install -m 0644 "$guest/nginx-site.conf" "$root/etc/nginx/sites-enabled/ab"
# PostgreSQL: the role's settings, local connections without a password (loopback only, test guest).
conf=$root/etc/postgresql/15/main
install -m 0644 "$guest/postgresql.conf" "$conf/conf.d/ab.conf"
printf 'local all all trust\nhost all all 127.0.0.1/32 trust\n' > "$conf/pg_hba.conf"
mounted=
if ! mountpoint -q "$root/proc"; then mount -t proc proc "$root/proc"; mounted=1; fi
# Owners are the root's own users: chroot, so that postgres is the guest's uid, not the host's.
chroot "$root" install -d -o postgres -g postgres -m 2775 /run/postgresql
chroot "$root" su postgres -s /bin/sh -c \
  "/usr/lib/postgresql/15/bin/pg_ctl -D /var/lib/postgresql/15/main -w -t 120 \
   -o '-c config_file=/etc/postgresql/15/main/postgresql.conf -c dynamic_shared_memory_type=mmap' start"
chroot "$root" su postgres -s /bin/sh -c "createdb bench && pgbench -q -i -s $scale bench"
chroot "$root" su postgres -s /bin/sh -c "/usr/lib/postgresql/15/bin/pg_ctl -D /var/lib/postgresql/15/main -w stop"
rm -rf "$root/run/postgresql"
if [ -n "$mounted" ]; then umount "$root/proc"; fi
# No journal to disk, no timers that wake the guest: its memory should be the applications'.
mkdir -p "$root/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=volatile\nRuntimeMaxUse=16M\n' > "$root/etc/systemd/journald.conf.d/ab.conf"
chroot "$root" systemctl mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer man-db.timer >/dev/null 2>&1 || true
