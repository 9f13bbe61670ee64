#!/bin/busybox sh
# /init of the qemu-system stage (.ci/arm-lanes): load the 9p modules, mount the lane's root (the
# same debootstrapped tree, shared by the host over virtio-9p), bring up loopback, run the tests there
# (.ci/arm/inside.sh vm), leave the exit code in /lane/vm.rc and power off.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
while read -r m; do insmod "/modules/$m.ko" || echo "vm-init: insmod $m failed"; done < /modules.order
if ! mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=loose lane /newroot; then
    echo "vm-init: cannot mount the lane root over 9p"; poweroff -f
fi
ip link set lo up
mount -t proc proc /newroot/proc
mount -t sysfs sysfs /newroot/sys
mount -t devtmpfs devtmpfs /newroot/dev
mkdir -p /newroot/dev/pts && mount -t devpts -o ptmxmode=0666 devpts /newroot/dev/pts
mount -t tmpfs -o size=512m tmpfs /newroot/tmp
echo "vm-init: $(uname -srm), running the tests"
chroot /newroot /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/root LANG=C.UTF-8 \
    TSQ_LANE="$(cat /newroot/lane/name)" TSQ_ARM_FOOTPRINT="$(cat /newroot/lane/footprint 2>/dev/null)" \
    /bin/sh /src/.ci/arm/inside.sh vm
echo $? > /newroot/lane/vm.rc
umount /newroot/tmp /newroot/dev/pts /newroot/dev /newroot/sys /newroot/proc
umount /newroot
sync
poweroff -f
