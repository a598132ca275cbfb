#!/bin/bash
# Inside a lab node: the incumbent stack (corosync 3 + dlm_controld + GFS2),
# driven by ../incumbent through `lab exec`. The root is read-only: configs
# live on tmpfs mounted over /etc/corosync and /etc/dlm, logs in /var/log.
#
#   incumbent-node.sh config NNODES   write corosync.conf (knet, votequorum) and dlm.conf
#   incumbent-node.sh start           start corosync, wait for a quorate membership (30 s at
#                                     most; not with START_NOWAIT=1), start dlm_controld -D
#   incumbent-node.sh stop            umount gfs2, stop dlm_controld and corosync
#   incumbent-node.sh mount | umount
#   incumbent-node.sh writer-start | writer-stop
#   incumbent-node.sh monitor-start | monitor-stop   (dlm_tool ls/status + quorum every second)
#   incumbent-node.sh verify          checksums of this node's files against its write log
#   incumbent-node.sh state           one-shot dlm_tool ls/status, corosync-quorumtool
set -u
LABDIR=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
NODE=$(cat /run/lab/node)
MNT=/mnt/gfs2
L=/var/log/incumbent
mkdir -p $L
ts() { date +%s.%N; }

cfg() {
    local n=$1 i
    for d in /etc/corosync /etc/dlm; do
        mountpoint -q $d || mount -t tmpfs -o mode=0755 tmpfs $d
    done
    # libdlm (dlm_controld, dlm_tool) opens /dev/misc/dlm-control,
    # dlm-monitor, dlm_plock (udev's names); devtmpfs has them in /dev
    mkdir -p /dev/misc
    for d in dlm-control dlm-monitor dlm_plock; do [ -e /dev/misc/$d ] || ln -s ../$d /dev/misc/$d; done
    mkdir -p /var/log/corosync /var/lib/corosync /run/dlm_controld /var/log/dlm_controld /var/lib/pacemaker
    {
        echo "totem {"
        echo "    version: 2"
        echo "    cluster_name: lab"
        echo "    transport: knet"
        echo "    crypto_cipher: none"
        echo "    crypto_hash: none"
        echo "}"
        echo "logging {"
        echo "    to_logfile: yes"
        echo "    logfile: /var/log/corosync/corosync.log"
        echo "    to_syslog: no"
        echo "    to_stderr: no"
        echo "    timestamp: hires"
        echo "}"
        echo "quorum {"
        echo "    provider: corosync_votequorum"
        echo "}"
        echo "nodelist {"
        for ((i = 1; i <= n; i++)); do
            echo "    node {"
            echo "        ring0_addr: 192.0.2.$((10 + i))"
            echo "        name: node$i"
            echo "        nodeid: $i"
            echo "    }"
        done
        echo "}"
    } >/etc/corosync/corosync.conf
    {
        echo "log_debug=0"
        echo "protocol=tcp"
        echo "fence_all $LABDIR/fence_lab"
    } >/etc/dlm/dlm.conf
}

start() {
    pgrep -x corosync >/dev/null || corosync </dev/null >>$L/corosync.stdout 2>&1
    local i
    for ((i = 0; i < 100; i++)); do corosync-cfgtool -s >/dev/null 2>&1 && break; sleep 0.1; done
    # wait until this corosync is in a quorate membership (it may first form
    # one of its own: a lockspace joined then makes a second dlm_controld
    # group that later merges with the cluster's; see INCUMBENT.md, rejoin).
    # START_NOWAIT=1 skips this (the rejoin-early scenario)
    if [ "${START_NOWAIT:-0}" != 1 ]; then
        for ((i = 0; i < 300; i++)); do
            corosync-quorumtool -s 2>/dev/null | grep -q '^Quorate: *Yes' && break
            sleep 0.1
        done
    fi
    pgrep -x dlm_controld >/dev/null ||
        setsid dlm_controld -D </dev/null >>/var/log/dlm_controld/dlm_controld.log 2>&1 &
    for ((i = 0; i < 100; i++)); do dlm_tool status >/dev/null 2>&1 && break; sleep 0.1; done
    dlm_tool status >/dev/null 2>&1 || { echo "node $NODE: dlm_controld not answering"; return 1; }
    echo "node $NODE: corosync + dlm_controld started"
}

stop() {
    mountpoint -q $MNT && umount $MNT
    pkill -x dlm_controld; sleep 0.5
    corosync-cfgtool -H 2>/dev/null || pkill -x corosync
    for ((i = 0; i < 50; i++)); do pgrep -x corosync >/dev/null || break; sleep 0.1; done
    echo "node $NODE: stopped"
}

do_mount() {
    mountpoint -q $MNT && { echo "node $NODE: mounted already"; return 0; }
    local t0; t0=$(ts)
    mount -t gfs2 /dev/ubdb $MNT || return 1
    echo "node $NODE: mounted in $(awk -v a="$t0" -v b="$(ts)" 'BEGIN{printf "%.2f", b-a}') s"
}

writer() { # one line per completed write: seq start end file sha256
    local d=$MNT/w$NODE i=0 f s t0
    mkdir -p "$d" || return 1
    while [ ! -e /run/writer.stop ]; do
        i=$((i + 1)); f=$d/f$((i % 100))
        head -c 4096 /dev/urandom >/run/wbuf
        s=$(sha256sum </run/wbuf); s=${s%% *}
        t0=$(ts)
        dd if=/run/wbuf of="$f.tmp" bs=4096 conv=fsync status=none && mv -f "$f.tmp" "$f" &&
            echo "$i $t0 $(ts) $f $s" >>$L/writer.log
        sleep 0.05
    done
}

monitor() {
    while [ ! -e /run/monitor.stop ]; do
        {
            echo "=== $(ts)"
            timeout 3 dlm_tool ls 2>&1
            timeout 3 dlm_tool status 2>&1 | head -20
            timeout 3 corosync-quorumtool -s 2>&1 | grep -E 'Quorate|Total votes|Expected|Members|Ring ID|Quorum:'
        } >>$L/monitor.log
        sleep 1
    done
}

verify() {
    mountpoint -q $MNT || { echo "node $NODE: not mounted"; return 1; }
    # the last completed write of each file must be its content
    awk '{last[$4]=$5} END{for (f in last) print f, last[f]}' $L/writer.log | {
        ok=0 badn=0
        while read -r f s; do
            if [ "$(sha256sum <"$f" | cut -c1-64)" = "$s" ]; then ok=$((ok + 1)); else badn=$((badn + 1)); echo "node $NODE: BAD $f"; fi
        done
        echo "node $NODE: verify $ok files ok, $badn bad ($(wc -l <$L/writer.log) writes logged)"
        [ $badn = 0 ]
    }
}

state() {
    echo "## node $NODE at $(ts) uptime $(cut -d' ' -f1 /proc/uptime)"
    echo "# dlm_tool ls"; timeout 5 dlm_tool ls 2>&1
    echo "# dlm_tool status"; timeout 5 dlm_tool status 2>&1
    echo "# corosync-quorumtool -s"; timeout 5 corosync-quorumtool -s 2>&1
    echo "# mounts"; grep gfs2 /proc/mounts
}

case ${1:-} in
config) cfg "${2:?nodes}" ;;
start) start ;;
stop) stop ;;
mount) do_mount ;;
umount) umount $MNT && echo "node $NODE: unmounted" ;;
writer-start) rm -f /run/writer.stop; : >$L/writer.log; setsid bash "$0" writer </dev/null >>$L/writer.err 2>&1 & echo "node $NODE: writer started" ;;
writer) writer ;;
writer-stop) touch /run/writer.stop ;;
monitor-start) rm -f /run/monitor.stop; setsid bash "$0" monitor </dev/null >/dev/null 2>&1 & ;;
monitor) monitor ;;
monitor-stop) touch /run/monitor.stop ;;
verify) verify ;;
state) state ;;
logs) # DIR (host path, via the control dir): copy this node's logs
    d=/run/lab/ctl/logs; rm -rf $d; mkdir -p $d
    cp -r $L/. $d/ 2>/dev/null; cp /var/log/corosync/corosync.log /var/log/dlm_controld/dlm_controld.log $d/ 2>/dev/null
    { echo "## clock uptime $(cut -d' ' -f1 /proc/uptime) epoch $(ts)"; dmesg; } >$d/dmesg
    state >$d/state 2>&1
    echo "node $NODE: logs in ctl/logs" ;;
*) sed -n '2,15p' "$0"; exit 2 ;;
esac
