#!/bin/bash
# Smoke test of the UML lab: up 3, exec on every node, ping mesh over the
# lab network, power node 2 off (through a node's fence agent and the
# switch) and check it is really gone, power it on again, check it answers
# and pings, down. Exits non-zero on any failure; always tears the lab down.
set -u
HERE=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
LAB=$HERE/lab
N=3
fail=0
LOGDIR=${SMOKE_LOGS:-}
t_start=$(date +%s.%N)
ts() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}'; }
ok() { echo "ok   - $*"; }
bad() { echo "FAIL - $*"; fail=1; }
cleanup() {
    if [ $fail != 0 ] && [ -d "${LAB_RUN:-/run/cohort-uml-lab}" ]; then
        d=${LOGDIR:-/tmp/uml-lab-smoke-logs.$$}
        "$LAB" logs "$d" >/dev/null 2>&1 && echo "# logs kept in $d"
    fi
    "$LAB" down >/dev/null 2>&1
}
trap cleanup EXIT
trap 'fail=1; exit 1' INT TERM

t=$(date +%s.%N)
if "$LAB" up $N; then ok "lab up $N ($(ts "$t") s)"; else bad "lab up $N"; exit 1; fi

for i in $(seq 1 $N); do
    out=$("$LAB" exec -t 20 "$i" 'cat /run/lab/node; uname -r') && [ "$(echo "$out" | head -1)" = "$i" ] &&
        ok "node $i answers exec ($(echo "$out" | tail -1))" || bad "node $i exec: $out"
done
"$LAB" exec 1 'exit 42'; rc=$?
[ $rc = 42 ] && ok "exec returns the exit status (42)" || bad "exec exit status: $rc"
out=$("$LAB" exec 1 'echo to-stderr >&2' 2>&1 >/dev/null)
[ "$out" = to-stderr ] && ok "exec returns stderr" || bad "exec stderr: $out"
for i in $(seq 1 $N); do
    "$LAB" exec -t 20 "$i" 'test -d /sys/kernel/config/dlm && test -c /dev/dlm-monitor && test -b /dev/ubdb && grep -qw gfs2 /proc/filesystems' &&
        ok "node $i: configfs/dlm/gfs2 loaded, /dev/ubdb present" || bad "node $i: kernel modules / shared disk"
done

ping_mesh() {
    local i j
    for i in $(seq 1 $N); do
        for j in $(seq 1 $N) 0; do
            [ "$i" = "$j" ] && continue
            a=192.0.2.$((10 + j)); [ "$j" = 0 ] && a=192.0.2.1
            "$LAB" exec -t 20 "$i" "ping -c1 -W3 $a >/dev/null || ping -c1 -W3 $a >/dev/null" &&
                ok "node $i pings $a" || bad "node $i cannot ping $a"
        done
    done
}
ping_mesh

# power off node 2 through the fence agent on node 1 -> switch
pid2=$(cat "${LAB_RUN:-/run/cohort-uml-lab}/nodes/2/pid")
t=$(date +%s.%N)
"$LAB" exec -t 40 1 "$HERE/fence_lab --node 2 --action off" && ok "fence_lab on node 1: node 2 off ($(ts "$t") s)" || bad "fence_lab off node 2"
if [ -n "$pid2" ] && [ -e "/proc/$pid2" ] && [ "$(awk '{print $3}' "/proc/$pid2/stat" 2>/dev/null)" != Z ]; then
    bad "node 2's UML process $pid2 still exists"
else ok "node 2's UML process $pid2 is gone"; fi
left=$(ps -eo pgid=,stat= | awk -v p="$pid2" '$1==p && $2 !~ /^Z/' | wc -l)
[ "$left" = 0 ] && ok "no process left in node 2's process group" || bad "$left processes left in node 2's group"
"$LAB" power 2 status >/dev/null; [ $? = 2 ] && ok "lab power 2 status: off" || bad "power status after off"
"$LAB" exec 1 "$HERE/fence_lab --node 2 --action status"; [ $? = 2 ] && ok "fence_lab status: off (2)" || bad "fence_lab status after off"
"$LAB" exec -t 5 2 true 2>/dev/null; [ $? = 255 ] && ok "exec on a powered-off node fails (255)" || bad "exec on node 2 while off"
"$LAB" exec 1 "ping -c2 -W1 192.0.2.12 >/dev/null" && bad "node 2 still pings while off" || ok "node 2 does not answer ping"

# the CLI path: lab power off (idempotent) / on
"$LAB" power 2 off >/dev/null && ok "lab power 2 off when already off" || bad "lab power 2 off (already off)"
t=$(date +%s.%N)
"$LAB" power 2 on && ok "lab power 2 on ($(ts "$t") s to agent ready)" || bad "lab power 2 on"
[ "$(cat "${LAB_RUN:-/run/cohort-uml-lab}/nodes/2/boots")" = 2 ] && ok "node 2 booted twice" || bad "boot count"
ping_mesh

# and the switch path for on, then CLI off/on once more
t=$(date +%s.%N)
"$LAB" power 2 off >/dev/null && ok "lab power 2 off ($(ts "$t") s)" || bad "lab power 2 off"
"$LAB" exec 3 "$HERE/fence_lab --node 2 --action on" && ok "fence_lab on node 3: node 2 on" || bad "fence_lab on"
"$LAB" exec -t 60 2 'cat /run/lab/node' >/dev/null && ok "node 2 answers after switch power-on" || bad "node 2 after switch on"

t=$(date +%s.%N)
"$LAB" down && ok "lab down ($(ts "$t") s)" || bad "lab down"
[ -e "${LAB_RUN:-/run/cohort-uml-lab}" ] && bad "run directory left" || ok "run directory removed"
ip netns list | grep -qw "${LAB_NS:-cohort-uml-lab}" && bad "namespace left" || ok "namespace removed"
echo "# smoke: $([ $fail = 0 ] && echo PASS || echo FAIL) in $(ts "$t_start") s"
exit $fail
