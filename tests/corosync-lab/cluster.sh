#!/usr/bin/env bash
# A real corosync cluster on one machine, in network namespaces.
#
#   cluster.sh up N DIR            create bridge + N node namespaces, start one
#                                  corosync per node, wait until all N see N members
#   cluster.sh down DIR            stop the recorded corosyncs, delete namespaces,
#                                  remove their /dev/shm/qb-<pid>-* and
#                                  qb-corosync-<pid>-* files (idempotent)
#   cluster.sh [-d DIR] exec K CMD...   run CMD in node K's network namespace
#   cluster.sh [-d DIR] cut K      drop all traffic in/out of node K's eth0
#   cluster.sh [-d DIR] heal K     undo `cut K`
#   cluster.sh [-d DIR] kill-corosync K   SIGKILL node K's corosync
#   cluster.sh [-d DIR] start-corosync K  (re)start node K's corosync
#   cluster.sh [-d DIR] wait-members K M [SECS]  wait until node K sees M members
#   cluster.sh [-d DIR] status     print corosync-quorumtool -s of every node
#
# Commands taking no DIR use `-d DIR` or $COHORT_LAB_DIR.
#
# Every name (namespaces) is prefixed with `ch-<6 hex of sha256(realpath DIR)>`
# so concurrent clusters in different DIRs do not collide. Addresses are
# 192.0.2.K/24 (documentation range) and exist only inside these namespaces.
# Must run as root. Needs: corosync, iproute2, iptables, util-linux (unshare).
#
# Environment:
#   COHORT_LAB_TOKEN    totem token in ms (default 1000)
#   COHORT_LAB_CRYPTO=1 crypto_cipher aes256 + crypto_hash sha256 with a key
#                       shared by the nodes (DIR/authkey); default: none
#   COHORT_LAB_TIMEOUT  seconds `up` waits for full membership (default 30)
#   COHORT_LAB_KEEP=1   do not tear down automatically when `up` fails
set -euo pipefail

die() { echo "cluster.sh: error: $*" >&2; exit 1; }
log() { echo "cluster.sh: $*" >&2; }

need_root() { [ "$(id -u)" = 0 ] || die "must run as root"; }

prefix_of() { # DIR -> ch-xxxxxx
    local h
    h=$(printf %s "$1" | sha256sum | cut -c1-6)
    echo "ch-$h"
}

load_dir() { # sets DIR PREFIX N from DIR/cluster.env
    DIR=$(realpath -m "$1")
    [ -f "$DIR/cluster.env" ] || die "no cluster in $DIR (missing cluster.env)"
    # shellcheck disable=SC1091
    . "$DIR/cluster.env"
}

ns_of() { echo "$PREFIX-n$1"; }
br_of() { echo "$PREFIX-br"; }

check_k() {
    [[ "$1" =~ ^[0-9]+$ ]] && [ "$1" -ge 1 ] && [ "$1" -le "$N" ] || die "node '$1' not in 1..$N"
}

write_conf() { # K
    local k=$1 d="$DIR/node$1" i
    mkdir -p "$d/run" "$d/state"
    {
        echo "totem {"
        echo "  version: 2"
        echo "  cluster_name: $PREFIX"
        echo "  transport: knet"
        if [ "${COHORT_LAB_CRYPTO:-0}" = 1 ]; then
            echo "  crypto_cipher: aes256"
            echo "  crypto_hash: sha256"
            echo "  keyfile: $DIR/authkey"
        else
            echo "  crypto_cipher: none"
            echo "  crypto_hash: none"
        fi
        echo "  token: ${COHORT_LAB_TOKEN:-1000}"
        echo "}"
        echo "logging {"
        echo "  to_stderr: yes"
        echo "  to_logfile: no"
        echo "  to_syslog: no"
        echo "  timestamp: hires"
        echo "}"
        echo "quorum {"
        echo "  provider: corosync_votequorum"
        echo "}"
        echo "system {"
        echo "  state_dir: $d/state"
        echo "  sched_rr: no"
        echo "}"
        echo "nodelist {"
        for i in $(seq 1 "$N"); do
            echo "  node {"
            echo "    name: node$i"
            echo "    nodeid: $i"
            echo "    ring0_addr: 192.0.2.$i"
            echo "  }"
        done
        echo "}"
    } > "$d/corosync.conf"
}

# Is PID running (a zombie, not yet reaped by its new parent, counts as dead)?
pid_running() {
    local st
    st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

# Is PID a live corosync started by this harness for DIR?
is_our_corosync() { # PID K
    local pid=$1 k=$2
    [ -n "$pid" ] && pid_running "$pid" || return 1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = corosync ] || return 1
    tr '\0' ' ' < "/proc/$pid/cmdline" | grep -qF -- "$DIR/node$k/corosync.conf"
}

start_node() { # K
    local k=$1 d="$DIR/node$1" ns pid i p
    ns=$(ns_of "$k")
    rm -f "$d/run/corosync.pid"
    # Own network namespace (ip netns exec) and own private mount namespace
    # with DIR/nodeK/run over /run (corosync hard-codes /run/corosync.pid).
    # ip netns exec, unshare (no --fork) and `exec` keep the same PID, so $!
    # is normally corosync's PID (unless setsid had to fork: then use the
    # pid file corosync writes into DIR/nodeK/run).
    setsid ip netns exec "$ns" unshare -m --propagation private \
        sh -c 'mount --bind "$1/run" /run && exec corosync -f -c "$1/corosync.conf"' \
        sh "$d" >> "$d/corosync.log" 2>&1 < /dev/null &
    pid=$!
    echo "$pid" >> "$DIR/pids"          # every PID ever started, for `down`
    for i in $(seq 1 100); do
        if is_our_corosync "$pid" "$k"; then
            echo "$pid" > "$d/corosync.pid"
            return 0
        fi
        p=$(cat "$d/run/corosync.pid" 2>/dev/null || true)
        if [ -n "$p" ] && is_our_corosync "$p" "$k"; then
            echo "$p" >> "$DIR/pids"
            echo "$p" > "$d/corosync.pid"
            return 0
        fi
        sleep 0.05
    done
    tail -n 20 "$d/corosync.log" >&2 || true
    die "corosync of node $k (pid $pid) did not start (log: $d/corosync.log)"
}

members_seen() { # K -> number of nodes in node K's membership, or 0
    local out
    out=$(ip netns exec "$(ns_of "$1")" corosync-quorumtool -s 2>/dev/null) || true
    echo "$out" | awk '/^Nodes:/ {print $2; found=1} END {if (!found) print 0}'
}

wait_members() { # K M SECS
    local k=$1 m=$2 secs=$3 deadline
    deadline=$(( $(date +%s%N) / 1000000 + secs * 1000 ))
    while :; do
        [ "$(members_seen "$k")" = "$m" ] && return 0
        [ $(( $(date +%s%N) / 1000000 )) -ge "$deadline" ] && return 1
        sleep 0.2
    done
}

diagnose() {
    local k
    for k in $(seq 1 "$N"); do
        echo "---- node $k: corosync-quorumtool -s" >&2
        ip netns exec "$(ns_of "$k")" corosync-quorumtool -s >&2 2>&1 || true
        echo "---- node $k: last lines of $DIR/node$k/corosync.log" >&2
        tail -n 15 "$DIR/node$k/corosync.log" >&2 2>/dev/null || true
    done
}

cmd_up() {
    need_root
    [ $# -eq 2 ] || die "usage: cluster.sh up N DIR"
    N=$1
    [[ "$N" =~ ^[0-9]+$ ]] && [ "$N" -ge 1 ] && [ "$N" -le 200 ] || die "bad N '$N'"
    command -v corosync >/dev/null || die "corosync is not installed"
    command -v corosync-quorumtool >/dev/null || die "corosync-quorumtool is not installed"
    mkdir -p "$2"
    DIR=$(realpath "$2")
    PREFIX=$(prefix_of "$DIR")
    [ ! -f "$DIR/cluster.env" ] || die "$DIR already holds a cluster (run down first)"
    ip netns list | grep -q "^$PREFIX-" && die "namespaces $PREFIX-* already exist (run down $DIR)"
    printf 'PREFIX=%s\nN=%s\n' "$PREFIX" "$N" > "$DIR/cluster.env"
    : > "$DIR/pids"
    UP_DONE=0
    trap 'up_exit' EXIT

    local br k ns t0
    t0=$(date +%s%N)
    br=$(br_of)
    ip netns add "$br"
    ip -n "$br" link set lo up
    ip -n "$br" link add br0 type bridge
    ip -n "$br" link set br0 up
    if [ "${COHORT_LAB_CRYPTO:-0}" = 1 ]; then
        # knet wants 1024..4096 bits of key; one key for every node.
        head -c 256 /dev/urandom > "$DIR/authkey"
        chmod 400 "$DIR/authkey"
    fi
    for k in $(seq 1 "$N"); do
        ns=$(ns_of "$k")
        ip netns add "$ns"
        ip -n "$ns" link set lo up
        # create the pair inside the bridge namespace, peer straight into the node
        ip -n "$br" link add "v$k" type veth peer name eth0 netns "$ns"
        ip -n "$br" link set "v$k" master br0
        ip -n "$br" link set "v$k" up
        ip -n "$ns" addr add "192.0.2.$k/24" dev eth0
        ip -n "$ns" link set eth0 up
        write_conf "$k"
    done
    for k in $(seq 1 "$N"); do
        start_node "$k"
    done
    local timeout=${COHORT_LAB_TIMEOUT:-30}
    for k in $(seq 1 "$N"); do
        if ! wait_members "$k" "$N" "$timeout"; then
            diagnose
            die "node $k does not see $N members after ${timeout}s (sees $(members_seen "$k"))"
        fi
    done
    UP_DONE=1
    log "cluster $PREFIX up: $N nodes in $(( ($(date +%s%N) - t0) / 1000000 )) ms, dir $DIR"
}

up_exit() { # EXIT trap of `up`: tear down what a failed `up` created
    local rc=$?
    [ "${UP_DONE:-0}" = 1 ] && return 0
    echo "cluster.sh: error: cluster $PREFIX in $DIR did not come up" >&2
    if [ "${COHORT_LAB_KEEP:-0}" != 1 ]; then
        (cmd_down "$DIR") || true
    fi
    [ "$rc" != 0 ] || exit 1
}

cmd_down() {
    need_root
    [ $# -eq 1 ] || die "usage: cluster.sh down DIR"
    local d
    d=$(realpath -m "$1")
    if [ ! -f "$d/cluster.env" ]; then
        # nothing recorded; still remove namespaces with our prefix, if any
        PREFIX=$(prefix_of "$d")
    else
        load_dir "$d"
    fi
    DIR=$d
    local pids="" pid k i alive
    if [ -f "$DIR/pids" ]; then
        pids=$(sort -u "$DIR/pids")
    fi
    # TERM only PIDs we recorded that are still our corosync
    for pid in $pids; do
        for k in $(seq 1 "${N:-0}"); do
            if is_our_corosync "$pid" "$k"; then
                kill -TERM "$pid" 2>/dev/null || true
            fi
        done
    done
    for i in $(seq 1 50); do
        alive=0
        for pid in $pids; do
            for k in $(seq 1 "${N:-0}"); do
                is_our_corosync "$pid" "$k" && alive=1
            done
        done
        [ $alive = 0 ] && break
        sleep 0.1
    done
    for pid in $pids; do
        for k in $(seq 1 "${N:-0}"); do
            if is_our_corosync "$pid" "$k"; then
                log "corosync $pid did not stop on TERM, killing"
                kill -KILL "$pid" 2>/dev/null || true
            fi
        done
    done
    # namespaces: ours are exactly PREFIX-br and PREFIX-nK
    local ns
    for ns in $(ip netns list | awk '{print $1}' | grep -E "^$PREFIX-(br|n[0-9]+)$" || true); do
        ip netns del "$ns" 2>/dev/null || log "could not delete netns $ns"
    done
    # IPC buffers (directories qb-<corosync pid>-<client pid>-<n>-<rand>/ with
    # libqb 2.0) and the blackbox files that a
    # SIGKILLed corosync leaves behind (qb-corosync-<pid>-blackbox-*)
    for pid in $pids; do
        pid_running "$pid" && continue
        rm -rf /dev/shm/qb-"$pid"-* /dev/shm/qb-corosync-"$pid"-* 2>/dev/null || true
    done
    rm -f "$DIR/cluster.env"
    log "cluster $PREFIX down"
}

node_cmd_prologue() { # sets DIR from -d / env, checks K
    [ -n "${LAB_DIR:-}" ] || die "no cluster dir: use -d DIR or set COHORT_LAB_DIR"
    load_dir "$LAB_DIR"
}

cmd_exec() {
    [ $# -ge 2 ] || die "usage: cluster.sh exec K CMD..."
    local k=$1; shift
    check_k "$k"
    # The network namespace is enough for clients: corosync's IPC goes through
    # abstract unix sockets (per network namespace) and /dev/shm, which is not
    # replaced by the private /run. exec keeps the caller's PID for CMD.
    exec ip netns exec "$(ns_of "$k")" "$@"
}

ipt() { # K ACTION(-I|-D)
    local ns
    ns=$(ns_of "$1")
    ip netns exec "$ns" iptables -w "$2" INPUT -i eth0 -j DROP
    ip netns exec "$ns" iptables -w "$2" OUTPUT -o eth0 -j DROP
}

cmd_cut() {
    [ $# -eq 1 ] || die "usage: cluster.sh cut K"
    check_k "$1"
    ipt "$1" -I
    log "node $1 cut off"
}

cmd_heal() {
    [ $# -eq 1 ] || die "usage: cluster.sh heal K"
    check_k "$1"
    local ns
    ns=$(ns_of "$1")
    while ip netns exec "$ns" iptables -w -C INPUT -i eth0 -j DROP 2>/dev/null; do
        ip netns exec "$ns" iptables -w -D INPUT -i eth0 -j DROP
    done
    while ip netns exec "$ns" iptables -w -C OUTPUT -o eth0 -j DROP 2>/dev/null; do
        ip netns exec "$ns" iptables -w -D OUTPUT -o eth0 -j DROP
    done
    log "node $1 healed"
}

cmd_kill_corosync() {
    [ $# -eq 1 ] || die "usage: cluster.sh kill-corosync K"
    check_k "$1"
    local pid
    pid=$(cat "$DIR/node$1/corosync.pid" 2>/dev/null || true)
    is_our_corosync "$pid" "$1" || die "corosync of node $1 is not running"
    kill -KILL "$pid"
    log "corosync of node $1 (pid $pid) killed"
}

cmd_start_corosync() {
    [ $# -eq 1 ] || die "usage: cluster.sh start-corosync K"
    check_k "$1"
    local pid
    pid=$(cat "$DIR/node$1/corosync.pid" 2>/dev/null || true)
    if is_our_corosync "$pid" "$1"; then die "corosync of node $1 already runs (pid $pid)"; fi
    start_node "$1"
    log "corosync of node $1 started (pid $(cat "$DIR/node$1/corosync.pid"))"
}

cmd_wait_members() {
    [ $# -ge 2 ] || die "usage: cluster.sh wait-members K M [SECS]"
    check_k "$1"
    wait_members "$1" "$2" "${3:-30}" || die "node $1 does not see $2 members (sees $(members_seen "$1"))"
}

cmd_status() {
    local k
    for k in $(seq 1 "$N"); do
        echo "==== node $k ($(ns_of "$k"))"
        ip netns exec "$(ns_of "$k")" corosync-quorumtool -s || true
    done
}

LAB_DIR=${COHORT_LAB_DIR:-}
if [ "${1:-}" = "-d" ]; then
    [ $# -ge 2 ] || die "-d needs a DIR"
    LAB_DIR=$2
    shift 2
fi
[ $# -ge 1 ] || die "usage: cluster.sh up N DIR | down DIR | [-d DIR] exec|cut|heal|kill-corosync|start-corosync|wait-members|status ..."
cmd=$1; shift
case "$cmd" in
    up) cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    exec) need_root; node_cmd_prologue; cmd_exec "$@" ;;
    cut) need_root; node_cmd_prologue; cmd_cut "$@" ;;
    heal) need_root; node_cmd_prologue; cmd_heal "$@" ;;
    kill-corosync) need_root; node_cmd_prologue; cmd_kill_corosync "$@" ;;
    start-corosync) need_root; node_cmd_prologue; cmd_start_corosync "$@" ;;
    wait-members) need_root; node_cmd_prologue; cmd_wait_members "$@" ;;
    status) need_root; node_cmd_prologue; cmd_status ;;
    *) die "unknown command '$cmd'" ;;
esac
