#!/bin/bash
# PID 1 of a lab node (UML). The host root is the read-only hostfs root.
# Kernel command line words set by `lab`: labnode=N labrun=DIR labaddr=A labmac=M labhost=H
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm 2>/dev/null
[ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd
mount -t devpts devpts /dev/pts 2>/dev/null
mount -t tmpfs tmpfs /dev/shm 2>/dev/null
for a in $(cat /proc/cmdline); do
    case $a in
        labnode=*) NODE=${a#labnode=} ;;
        labrun=*) RUN=${a#labrun=} ;;
        labaddr=*) ADDR=${a#labaddr=} ;;
        labmac=*) MAC=${a#labmac=} ;;
        labhost=*) HOSTADDR=${a#labhost=} ;;
        labdir=*) LABDIR=${a#labdir=} ;;
    esac
done
# writable places (the host root stays read-only)
for d in /tmp /run /var/tmp /var/run /var/lib /var/log /var/cache /root /mnt /media /srv; do
    [ -d "$d" ] && [ ! -L "$d" ] && mount -t tmpfs -o mode=0755 tmpfs "$d"
done
chmod 1777 /tmp /var/tmp
mkdir -p /run/lab/ctl /run/lock /mnt/gfs2
# per-node control directory: a writable hostfs mount of RUN/nodes/N/ctl
mount -t hostfs -o "$RUN/nodes/$NODE/ctl" none /run/lab/ctl
echo "$NODE" > /run/lab/node
hostname "node$NODE" 2>/dev/null
# kernel modules: configfs, dlm (needs configfs), gfs2 (needs dlm)
M=/usr/lib/uml/modules/$(uname -r)/kernel/fs
T0=$(cat /proc/uptime)
for m in configfs/configfs.ko dlm/dlm.ko gfs2/gfs2.ko; do
    insmod "$M/$m" || echo "lab-init: insmod $m failed" >&2
done
mount -t configfs none /sys/kernel/config || echo "lab-init: configfs mount failed" >&2
# network
ip link set lo up
[ -n "$MAC" ] && ip link set vec0 address "$MAC"
ip addr add "$ADDR/24" dev vec0
ip link set vec0 up
echo "lab-init: node $NODE up, vec0 $ADDR, modules loaded, uptime $(cut -d' ' -f1 /proc/uptime)"
exec "$LABDIR/node/agent.sh" "$NODE"
