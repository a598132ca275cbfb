#!/usr/bin/env bash
# Transport benchmark: cohort UDP (the core's VS protocol over multicast)
# against corosync CPG (through the cohort-corosync adapter), on the same
# 3-node network-namespace topology (a bridge, 192.0.2.K/24), with the same
# client (bench/transport/src/main.rs) for both.
#
#   bench/transport.sh            build, run everything, print a markdown table
#
# Measures, per transport:
#   * agreed-multicast throughput (msgs/s, MB/s): 64-byte and 1400-byte
#     messages (cohort UDP cuts a 1400-byte message across ~1.4 units), one
#     sender (node 1, which is also cohort's sequencer, and node 3, which is
#     not) and three senders; from the first send to the last delivery at the
#     slowest node; median of $REPS runs (each run is logged to stderr);
#   * failure detection: node 3 cut off with iptables (both directions, one
#     atomic iptables-restore) -> new view without it at nodes 1 and 2
#     (slowest of the two), median of $REPS runs;
#   * merge: heal -> merged view of 3 at every node (slowest), median;
#   * CPU per message: user + system time of every process of the system
#     (the clients, and corosync's daemons) over a throughput run, per
#     message sent;
#   * delivery latency at a fixed offered load (1,000 msgs/s, and half of
#     corosync token 1000's 3-sender maximum of this run), 3 senders, send
#     to delivery at the slowest node: p50/p99/max.
# corosync runs three times, first: token 1000 ms ("tuned"), token 3000 ms
# (default), and token 1000 ms with crypto_cipher aes256 + crypto_hash
# sha256 (tests/corosync-lab/cluster.sh). The ceiling, raw UDP multicast of
# the same messages between the same namespaces (no order, crypto or
# retransmission), runs after cohort UDP: throughput and CPU only.
#
# Needs root, iproute2, iptables, corosync (+ its client libraries to build),
# awk. On demand only: not part of CI. Everything it creates (namespaces
# cb<pid>-*, the corosync lab, its temp dir) is removed on exit.
#
# Environment: REPS (default 3), N64 (messages per sender, 64 B; default
# 20000), N1400 (default 5000), KEEP_LOGS=1 (keep the work dir),
# ONLY=udp (skip corosync: quick runs), CARGO_TARGET_DIR.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LAB="$ROOT/tests/corosync-lab/cluster.sh"
REPS=${REPS:-3}
N64=${N64:-20000}
N1400=${N1400:-5000}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/bench/transport/target}"
BIN="$CARGO_TARGET_DIR/release/cohort-udp-bench"
PREFIX="cb$$"
WORK=$(mktemp -d /tmp/cohort-transport-bench.XXXXXX)
CDIR="$WORK/corosync-lab"
PIDS=()

die() { echo "transport.sh: error: $*" >&2; exit 1; }
log() { echo "transport.sh: $*" >&2; }

[ "$(id -u)" = 0 ] || die "must run as root (network namespaces, iptables)"
for t in ip iptables-restore corosync awk cargo; do
    command -v "$t" >/dev/null || die "$t is not installed"
done

cleanup() {
    local rc=$?
    touch "$WORK"/stop-* 2>/dev/null || true
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    udp_down
    [ -f "$CDIR/cluster.env" ] && bash "$LAB" down "$CDIR" >/dev/null 2>&1 || true
    if [ "${KEEP_LOGS:-0}" = 1 ]; then log "logs kept in $WORK"; else rm -rf "$WORK"; fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "building cohort-udp-bench (release; bench/transport, links corosync's client libraries)"
cargo build -q --release --manifest-path "$ROOT/bench/transport/Cargo.toml"
[ -x "$BIN" ] || die "no $BIN after the build"

mono() { "$BIN" mono; }

# ---- topology for cohort UDP (the same as cluster.sh builds for corosync) --
udp_ns() { echo "$PREFIX-n$1"; }

udp_up() {
    local br="$PREFIX-br" k ns
    ip netns add "$br"
    ip -n "$br" link set lo up
    ip -n "$br" link add br0 type bridge mcast_snooping 0
    ip -n "$br" link set br0 up
    for k in 1 2 3; do
        ns=$(udp_ns "$k")
        ip netns add "$ns"
        ip -n "$ns" link set lo up
        ip -n "$br" link add "v$k" type veth peer name eth0 netns "$ns"
        ip -n "$br" link set "v$k" master br0
        ip -n "$br" link set "v$k" up
        ip -n "$ns" addr add "192.0.2.$k/24" dev eth0
        ip -n "$ns" link set eth0 up
        ip -n "$ns" route add 224.0.0.0/4 dev eth0
    done
}

udp_down() {
    local ns
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$PREFIX-(br|n[0-9]+)$" || true); do
        ip netns del "$ns" 2>/dev/null || log "could not delete namespace $ns"
    done
}

# run CMD in node K's namespace for transport T
in_node() { # T K CMD...
    local t=$1 k=$2; shift 2
    if [ "$t" = udp ] || [ "$t" = raw ]; then
        ip netns exec "$(udp_ns "$k")" "$@"
    else
        bash "$LAB" -d "$CDIR" exec "$k" "$@"
    fi
}

# cut (-I) or heal (-D) node 3, both directions in one transaction
cut3() { # T -I|-D
    printf '*filter\n%s INPUT -i eth0 -j DROP\n%s OUTPUT -o eth0 -j DROP\nCOMMIT\n' "$2" "$2" \
        | in_node "$1" 3 iptables-restore -w --noflush
}

start_clients() { # TAG T ARGS...
    local tag=$1 t=$2 k; shift 2
    rm -f "$WORK/stop-$tag"
    for k in 1 2 3; do
        in_node "$t" "$k" "$BIN" --transport "$t" --node "$k" --key "$WORK/key" --iface "192.0.2.$k" \
            --members 3 --stop-file "$WORK/stop-$tag" "$@" > "$WORK/$tag-$k.log" 2> "$WORK/$tag-$k.err" &
        PIDS+=($!)
    done
}

stop_clients() { # TAG
    touch "$WORK/stop-$1"
    local p
    for p in "${PIDS[@]}"; do
        for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    PIDS=()
    grep -h '^error' "$WORK/$1"-*.log >&2 || true
}

# wait until every node in NODES has a line matching the awk condition
wait_for() { # TAG "NODES" SECS AWK-COND
    local tag=$1 nodes=$2 secs=$3 cond=$4 k ok end
    end=$(( $(date +%s) + secs ))
    while :; do
        ok=1
        for k in $nodes; do
            [ -f "$WORK/$tag-$k.log" ] && awk "$cond {f=1} END {exit !f}" "$WORK/$tag-$k.log" || { ok=0; break; }
        done
        [ $ok = 1 ] && return 0
        if [ "$(date +%s)" -ge "$end" ]; then
            for k in $nodes; do echo "--- node $k:" >&2; tail -5 "$WORK/$tag-$k.log" >&2; tail -5 "$WORK/$tag-$k.err" >&2; done
            die "$tag: timed out after ${secs}s waiting for: $cond"
        fi
        sleep 0.05
    done
}

median() { sort -n | awk '{a[NR]=$1} END {if (NR==0) print "n/a"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

# CPU time (user + system, ms) of the corosync daemons so far (0 for the
# other transports: their whole stack runs in the client).
daemon_cpu_ms() { # T
    [ "$1" = corosync ] || { echo 0; return; }
    local hz p sum=0
    hz=$(getconf CLK_TCK)
    for p in $(cat "$CDIR"/node*/corosync.pid 2>/dev/null); do
        [ -r "/proc/$p/stat" ] || continue
        sum=$(awk -v s="$sum" -v hz="$hz" '{sub(/^.*\) /, ""); print s + ($12 + $13) * 1000 / hz}' "/proc/$p/stat")
    done
    echo "$sum"
}

# throughput: prints "msgs/s MB/s cpu-us-per-message" (CPU: every process of
# the system, the three clients and, for corosync, the three daemons, user +
# system, over the run, per message sent; each message is delivered to
# every node)
throughput() { # T SIZE SENDERS COUNT [FIRST-SENDER]
    local t=$1 size=$2 s=$3 n=$4 first=${5:-1} tag="tp-$1-$2-$3-${5:-1}" start end d0 d1 cpu
    d0=$(daemon_cpu_ms "$t")
    start_clients "$tag" "$t" --throughput --senders "$s" --first-sender "$first" --count "$n" --size "$size" --limit 300
    wait_for "$tag" "1 2 3" 320 '$1=="done"'
    stop_clients "$tag"
    d1=$(daemon_cpu_ms "$t")
    cpu=$(cat "$WORK/$tag"-*.log | awk -v d0="$d0" -v d1="$d1" -v m=$((s * n)) \
        '$1=="cpu" {c += $2 + $3} END {printf "%.2f", (c + d1 - d0) * 1000 / m}')
    start=$(cat "$WORK/$tag"-*.log | awk '$1=="send_start" {print $2}' | sort -n | head -1)
    if [ "$t" = raw ]; then
        # No retransmission: what the slowest node received, over its time.
        local k rates=""
        for k in 1 2 3; do
            rates="$rates $(awk -v a="$start" '$1=="done" {print $3 / (($6 - a) / 1000), $3}' "$WORK/$tag-$k.log")"
        done
        log "[raw] $size B x $s: delivered per node (msgs/s, msgs):$rates of $((s * n)) sent"
        echo "$rates" | awk -v b="$size" -v c="$cpu" '{m = -1; for (i = 1; i <= NF; i += 2) if (m < 0 || $i < m) m = $i; printf "%.0f %.2f %s\n", m, m * b / 1e6, c}'
        return
    fi
    grep -q incomplete "$WORK/$tag"-*.log && die "$tag: a node did not receive every message"
    end=$(cat "$WORK/$tag"-*.log | awk '$1=="done" {print $6}' | sort -n | tail -1)
    awk -v n=$((s * n)) -v b="$size" -v a="$start" -v e="$end" -v c="$cpu" \
        'BEGIN {d = (e - a) / 1000; printf "%.0f %.2f %s\n", n / d, n * b / d / 1e6, c}'
}

# median over $REPS runs (by msgs/s): prints "msgs/s MB/s"; every run is logged
throughput_median() { # T SIZE SENDERS COUNT [FIRST-SENDER]
    local i runs=""
    for i in $(seq 1 "$REPS"); do
        runs="$runs$(throughput "$@")"$'\n'
    done
    log "[$1] $2 B x $3${5:+ (node $5)}: $(echo "$runs" | awk 'NF {printf "%s%s", s, $1; s=", "}') msgs/s; CPU $(echo "$runs" | awk 'NF {printf "%s%s", s, $3; s=", "}') us/msg"
    echo "$runs" | awk 'NF' | sort -n | awk '{a[NR]=$0} END {print a[int((NR+1)/2)]}'
}

# delivery latency at a fixed offered load RATE (msgs/s in all; 3 senders
# at RATE/3 each, ~3 s): send to delivery at the slowest node, per message;
# prints "p50 p99 max" in ms (one run: thousands of messages)
latency() { # T SIZE RATE
    local t=$1 size=$2 rate=$3 tag="lat-$1-$2-${3%.*}" per n
    per=$(awk -v r="$rate" 'BEGIN {printf "%.3f", r / 3}')
    n=$(awk -v r="$rate" 'BEGIN {n = int(r); if (n < 300) n = 300; print n}')
    start_clients "$tag" "$t" --throughput --senders 3 --count "$n" --size "$size" --rate "$per" \
        --lat-file "$WORK/$tag-lat" --limit 300
    wait_for "$tag" "1 2 3" 320 '$1=="done"'
    stop_clients "$tag"
    grep -q incomplete "$WORK/$tag"-*.log && die "$tag: a node did not receive every message"
    cat "$WORK/$tag-lat".[123] | awk '{k = $1 " " $2; if (!(k in m) || $3 > m[k]) m[k] = $3} END {for (k in m) print m[k]}' |
        sort -n | awk '{a[NR] = $1} END {if (NR == 0) {print "n/a n/a n/a"; exit}
            i50 = int(NR * 0.50); if (i50 < 1) i50 = 1; i99 = int(NR * 0.99); if (i99 < 1) i99 = 1
            printf "%.2f %.2f %.2f\n", a[i50], a[i99], a[NR]}'
}

# one cut/heal cycle: prints "detection_ms merge_ms"
failover() { # T REP
    local t=$1 tag="fo-$1-$2" tc th det mer
    start_clients "$tag" "$t" --limit 300
    wait_for "$tag" "1 2 3" 60 '$1=="ready"'
    sleep 1
    cut3 "$t" -I
    tc=$(mono)
    wait_for "$tag" "1 2" 60 "\$1==\"ring\" && \$2>=$tc && \$4==\"1,2\""
    det=$(for k in 1 2; do awk -v tc="$tc" '$1=="ring" && $2>=tc && $4=="1,2" {print $2 - tc; exit}' "$WORK/$tag-$k.log"; done | sort -n | tail -1)
    sleep 1
    cut3 "$t" -D
    th=$(mono)
    wait_for "$tag" "1 2 3" 120 "\$1==\"ring\" && \$2>=$th && \$4==\"1,2,3\""
    mer=$(for k in 1 2 3; do awk -v th="$th" '$1=="ring" && $2>=th && $4=="1,2,3" {print $2 - th; exit}' "$WORK/$tag-$k.log"; done | sort -n | tail -1)
    stop_clients "$tag"
    printf '%.0f %.0f\n' "$det" "$mer"
}

f1() { echo "$1" | cut -d' ' -f1; }
f2() { echo "$1" | cut -d' ' -f2; }
f3() { echo "$1" | cut -d' ' -f3; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b > 0) printf "%.2f", a / b; else print "n/a"}'; }

declare -A R
for l in udp cs1000 cs3000 cs1000c raw; do
    for k in tp64_1 tp64_3 tp1400_1 tp1400_3 tp64_1n3 tp1400_1n3 det mer det_all mer_all; do R[$l,$k]="n/a n/a n/a"; done
    for k in lat64_1k lat1400_1k lat64_half lat1400_half; do R[$l,$k]="n/a n/a n/a"; done
done

measure() { # T LABEL
    local t=$1 l=$2 i out d m
    log "[$l] throughput"
    R[$l,tp64_1]=$(throughput_median "$t" 64 1 "$N64")
    R[$l,tp64_3]=$(throughput_median "$t" 64 3 "$N64")
    R[$l,tp1400_1]=$(throughput_median "$t" 1400 1 "$N1400")
    R[$l,tp1400_3]=$(throughput_median "$t" 1400 3 "$N1400")
    # One sender that is not cohort's sequencer (node 1 is, in every view).
    R[$l,tp64_1n3]=$(throughput_median "$t" 64 1 "$N64" 3)
    R[$l,tp1400_1n3]=$(throughput_median "$t" 1400 1 "$N1400" 3)
    [ "$t" = raw ] && return
    # Latency at 1,000 msgs/s and at half of corosync token 1000's maximum
    # (3 senders; measured first, in this run).
    local half64 half1400
    half64=$(f1 "${R[cs1000,tp64_3]}"); half1400=$(f1 "${R[cs1000,tp1400_3]}")
    log "[$l] latency"
    R[$l,lat64_1k]=$(latency "$t" 64 1000)
    R[$l,lat1400_1k]=$(latency "$t" 1400 1000)
    if [ "$half64" != n/a ]; then
        R[$l,lat64_half]=$(latency "$t" 64 "$(awk -v x="$half64" 'BEGIN {print int(x / 2)}')")
        R[$l,lat1400_half]=$(latency "$t" 1400 "$(awk -v x="$half1400" 'BEGIN {print int(x / 2)}')")
    fi
    log "[$l] latency p50/p99/max ms: 64 B at 1k ${R[$l,lat64_1k]}, 1400 B at 1k ${R[$l,lat1400_1k]}, 64 B at half ${R[$l,lat64_half]}, 1400 B at half ${R[$l,lat1400_half]}"
    log "[$l] failure detection and merge, $REPS runs"
    d=""; m=""
    for i in $(seq 1 "$REPS"); do
        out=$(failover "$t" "$i")
        log "[$l] run $i: detection $(echo "$out" | cut -d' ' -f1) ms, merge $(echo "$out" | cut -d' ' -f2) ms"
        d="$d $(echo "$out" | cut -d' ' -f1)"
        m="$m $(echo "$out" | cut -d' ' -f2)"
    done
    R[$l,det]=$(echo "$d" | tr ' ' '\n' | grep . | median)
    R[$l,mer]=$(echo "$m" | tr ' ' '\n' | grep . | median)
    R[$l,det_all]=$(echo "$d" | sed 's/^ //; s/ /, /g')
    R[$l,mer_all]=$(echo "$m" | sed 's/^ //; s/ /, /g')
}

head -c 32 /dev/urandom > "$WORK/key"
chmod 600 "$WORK/key"

# corosync first: the latency runs use half of its maximum as a load.
# corosync with token 1000 and 3000 ms, no crypto; and token 1000 with
# crypto_cipher aes256 + crypto_hash sha256 (cohort always encrypts and
# authenticates: the fair second baseline).
for v in $([ "${ONLY:-}" = udp ] || echo 1000 3000 1000c); do
    tok=${v%c}
    crypto=0; [ "$v" = "${tok}c" ] && crypto=1
    log "corosync token $tok (crypto $crypto): cluster.sh up 3"
    COHORT_LAB_TOKEN=$tok COHORT_LAB_CRYPTO=$crypto bash "$LAB" up 3 "$CDIR" >/dev/null 2>"$WORK/lab-up-$v.err" ||
        { cat "$WORK/lab-up-$v.err" >&2; die "corosync cluster did not start"; }
    measure corosync "cs$v"
    bash "$LAB" down "$CDIR" >/dev/null 2>&1
done

log "cohort UDP: namespaces $PREFIX-*"
udp_up
measure udp udp
# The ceiling: plain UDP multicast between the same namespaces.
measure raw raw
udp_down

# ---- report ------------------------------------------------------------------

echo
echo "Transport benchmark, $(date -u +%Y-%m-%d), $(uname -r), $(nproc) cores, $(corosync -v 2>/dev/null | head -1)"
echo "3 nodes in network namespaces on one bridge; same client for both transports (cohort-udp-bench)."
echo "Throughput: first send to last delivery at the slowest node; N64=$N64, N1400=$N1400 messages per sender; median of $REPS runs."
echo "Detection: cut (iptables DROP both ways) -> view without node 3 at nodes 1 and 2; merge: heal -> view of 3 everywhere; median of $REPS."
echo "Ratios: the UDP value divided by corosync token 1000 without and with crypto, and by raw UDP multicast (the ceiling: no order, no crypto, no retransmission; its count is what the slowest node received). Throughput: higher is better; times: lower is better."
echo
echo "| measure | cohort UDP | corosync token 1000 | corosync token 3000 | corosync 1000 + aes256/sha256 | raw UDP multicast | UDP / cs-1000 | UDP / cs-1000 crypto | UDP / raw |"
echo "|---|---|---|---|---|---|---|---|---|"
for k in tp64_1 tp64_1n3 tp64_3 tp1400_1 tp1400_1n3 tp1400_3; do
    case $k in
        tp64_1) n="64 B, 1 sender (node 1)" ;; tp64_3) n="64 B, 3 senders" ;;
        tp1400_1) n="1400 B, 1 sender (node 1)" ;; tp1400_3) n="1400 B, 3 senders" ;;
        tp64_1n3) n="64 B, 1 sender (node 3)" ;; tp1400_1n3) n="1400 B, 1 sender (node 3)" ;;
    esac
    for f in f1 f2 f3; do
        u=$($f "${R[udp,$k]}")
        unit=$(case $f in f1) echo msgs/s ;; f2) echo MB/s ;; f3) echo "CPU us per message (lower is better; median run by msgs/s)" ;; esac)
        echo "| throughput $n, $unit | $u | $($f "${R[cs1000,$k]}") | $($f "${R[cs3000,$k]}") | $($f "${R[cs1000c,$k]}") | $($f "${R[raw,$k]}") | $(ratio "$u" "$($f "${R[cs1000,$k]}")") | $(ratio "$u" "$($f "${R[cs1000c,$k]}")") | $(ratio "$u" "$($f "${R[raw,$k]}")") |"
    done
done
for k in lat64_1k lat1400_1k lat64_half lat1400_half; do
    case $k in
        lat64_1k) n="64 B at 1,000 msgs/s" ;; lat1400_1k) n="1400 B at 1,000 msgs/s" ;;
        lat64_half) n="64 B at half of corosync-1000's 3-sender maximum" ;;
        lat1400_half) n="1400 B at half of corosync-1000's 3-sender maximum" ;;
    esac
    for f in f1 f2 f3; do
        q=$(case $f in f1) echo p50 ;; f2) echo p99 ;; f3) echo max ;; esac)
        u=$($f "${R[udp,$k]}")
        echo "| latency $n, $q ms (send to delivery at the slowest node) | $u | $($f "${R[cs1000,$k]}") | $($f "${R[cs3000,$k]}") | $($f "${R[cs1000c,$k]}") | - | $(ratio "$u" "$($f "${R[cs1000,$k]}")") | $(ratio "$u" "$($f "${R[cs1000c,$k]}")") | - |"
    done
done
for m in det mer; do
    name=$([ $m = det ] && echo "failure detection" || echo "merge after heal")
    echo "| $name, ms (median; runs) | ${R[udp,$m]} (${R[udp,${m}_all]}) | ${R[cs1000,$m]} (${R[cs1000,${m}_all]}) | ${R[cs3000,$m]} (${R[cs3000,${m}_all]}) | ${R[cs1000c,$m]} (${R[cs1000c,${m}_all]}) | - | $(ratio "${R[udp,$m]}" "${R[cs1000,$m]}") | $(ratio "${R[udp,$m]}" "${R[cs1000c,$m]}") | - |"
done
