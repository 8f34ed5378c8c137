#!/bin/busybox sh
# /init of the e2e initramfs (see tools/vm/e2e.py and docs/e2e.md).
#
# Loads the modules listed in /modules.order (already in dependency order), mounts the host's
# root read-only over 9p with a tmpfs overlay on top (so the guest can write anywhere without
# touching the host), mounts the writable results share at /e2e-out, and runs
# /e2e-out/guest-entry.sh inside that root. Whatever happens, the VM powers off at the end so
# the host never waits for a hung guest longer than its own timeout.
/bin/busybox --install -s /bin
export PATH=/bin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

say() { echo "e2e-init: $*" > /dev/console; }
die() { say "FATAL: $*"; sync; poweroff -f; }

while read -r mod; do
    [ -n "$mod" ] || continue
    insmod "/modules/$mod" || die "insmod $mod failed"
done < /modules.order

mkdir -p /host /ovl /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144 hostroot /host \
    || die "cannot mount the host root over 9p"
mount -t tmpfs -o size=1200m tmpfs /ovl
mkdir -p /ovl/upper /ovl/work
mount -t overlay overlay -o lowerdir=/host,upperdir=/ovl/upper,workdir=/ovl/work /newroot \
    || die "cannot mount the overlay"

for d in proc sys dev tmp run e2e-out; do mkdir -p "/newroot/$d"; done

# A checkout under /tmp or /run would vanish under the fresh tmpfs mounted there below: keep
# its (writable, overlay) view aside and move it back on top afterwards.
checkout=$(sed -n 's/.*softkey_checkout=\([^ ]*\).*/\1/p' /proc/cmdline)
case "$checkout" in
    /tmp/*|/run/*)
        mkdir -p /keep
        mount -o bind "/newroot$checkout" /keep || die "cannot keep the checkout $checkout"
        ;;
    *) checkout="" ;;
esac

mount -t proc proc /newroot/proc
mount -t sysfs sysfs /newroot/sys
mount -t devtmpfs devtmpfs /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts /newroot/dev/pts
mount -t tmpfs -o mode=1777 tmpfs /newroot/dev/shm
mount -t tmpfs -o mode=1777 tmpfs /newroot/tmp
mount -t tmpfs -o mode=0755 tmpfs /newroot/run
if [ -n "$checkout" ]; then
    mkdir -p "/newroot$checkout"
    mount -o move /keep "/newroot$checkout" || die "cannot restore the checkout $checkout"
fi
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 e2eout /newroot/e2e-out \
    || die "cannot mount the results share"

say "booted in $(cut -d' ' -f1 /proc/uptime)s; running the guest script"
chroot /newroot /bin/sh /e2e-out/guest-entry.sh < /dev/console > /dev/console 2>&1
say "guest script exited with status $?"
sync
poweroff -f
