#!/bin/bash
# The lab's control channel inside a node (runs as PID 1 after init.sh).
# The host writes a request REQ/<id>.sh (atomically, by rename) into the
# node's control directory (a hostfs mount at /run/lab/ctl of
# $RUN/nodes/N/ctl on the host). The agent claims it (rename to run/),
# runs it with bash in the background (several may run at once: a blocking
# mount does not stop `lab exec dmesg`), and writes out/<id>.out,
# out/<id>.err and finally out/<id>.rc (atomically). It does not use the lab
# network, so it keeps working while the network is cut.
# As PID 1 it also reaps orphans.
C=/run/lab/ctl
mkdir -p $C/req $C/run $C/out
rm -f $C/req/* $C/run/* 2>/dev/null
trap '' TERM INT HUP
echo "$(cut -d' ' -f1 /proc/uptime) $(uname -r)" > $C/ready.tmp && mv $C/ready.tmp $C/ready
echo "lab-agent: ready (uptime $(cut -d' ' -f1 /proc/uptime))"
run() {
    local id=$1
    ( cd /root
      bash "$C/run/$id.sh" </dev/null >"$C/out/$id.out" 2>"$C/out/$id.err"
      echo $? > "$C/out/$id.rc.tmp"; mv "$C/out/$id.rc.tmp" "$C/out/$id.rc"
      rm -f "$C/run/$id.sh" ) &
}
shopt -s nullglob
mkfifo /run/lab/tick && exec 9<>/run/lab/tick
while :; do
    for f in $C/req/*.sh; do
        id=${f##*/}; id=${id%.sh}
        mv "$f" "$C/run/$id.sh" 2>/dev/null && run "$id"
    done
    # sleep without forking (bash's SIGCHLD handler reaps orphans: we are PID 1)
    read -r -t 0.1 -u 9 _
done
