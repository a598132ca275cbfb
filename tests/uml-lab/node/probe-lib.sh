# sourced by the probe's steps inside a node
L=$(sed -n 's/.* labdir=\([^ ]*\).*/\1/p' /proc/cmdline)
ME=$(cat /run/lab/node)
CL=/sys/kernel/config/dlm/cluster
up() { cut -d' ' -f1 /proc/uptime; }
say() { echo "[node$ME $(up)] $*"; }
# print every attribute of a directory: name = value (or the read error)
dump() {
    local f v
    for f in "$1"/*; do
        if [ -d "$f" ]; then echo "  ${f#$1/}/  (dir: $(ls "$f" | tr '\n' ' '))"; continue; fi
        v=$(cat "$f" 2>&1 | head -c 300 | tr '\n' '|')
        printf '  %-22s %-10s = %s\n' "${f#$1/}" "$(stat -c %A "$f")" "$v"
    done
}
mark() { echo "probe-mark $1" >/dev/kmsg; }
since() { dmesg | sed -n "/probe-mark $1\$/,\$p" | sed 1d; }
hold_monitor() { # keep /dev/dlm-monitor open (what a control daemon must do)
    setsid bash -c 'exec 7</dev/dlm-monitor; echo $$ > /run/lab/monitor.pid; exec sleep infinity' </dev/null >/dev/null 2>&1 &
    sleep 0.3; say "holding /dev/dlm-monitor open (pid $(cat /run/lab/monitor.pid))"
}
# cluster + comms: dlm_config LOCALID ID:ADDR...
dlm_config() {
    local me=$1 a id ad; shift
    [ -d $CL ] || mkdir $CL
    echo lab > $CL/cluster_name
    for a in "$@"; do
        id=${a%%:*}; ad=${a#*:}
        [ -d $CL/comms/$id ] && continue
        mkdir $CL/comms/$id
        echo $id > $CL/comms/$id/nodeid
        /usr/bin/python3 $L/node/sockaddr.py $CL/comms/$id/addr $ad >/dev/null
        [ $id = $me ] && echo 1 > $CL/comms/$id/local
    done
    return 0
}
wait_for() { # PATH SECONDS
    local i
    for ((i = 0; i < $2 * 20; i++)); do [ -e "$1" ] && return 0; sleep 0.05; done
    return 1
}
uevents() { cat /run/lab/uevents.log; }
