#!/bin/bash
# Test of `lab partition` / `lab heal` on a running lab of >= 4 nodes
# (LAB_RUN/LAB_NS as for lab): reachability between nodes inside and across
# sets, the power switch from every set (fence_lab status), heal.
# Usage: partition-test.sh [--up]   (--up: lab up 4 first and down at the end)
set -u
HERE=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
LAB=$HERE/lab
fail=0
ok() { echo "ok   - $*"; }
bad() { echo "FAIL - $*"; fail=1; }
if [ "${1:-}" = --up ]; then "$LAB" up 4 >/dev/null || exit 1; trap '"$LAB" down >/dev/null' EXIT; fi
addr() { echo "192.0.2.$((10 + $1))"; }
reach() { "$LAB" exec -t 20 "$1" "ping -c1 -W1 $(addr "$2") >/dev/null"; }
switch_ok() { "$LAB" exec -t 20 "$1" "$HERE/fence_lab --node $1 --action status --timeout 5 2>/dev/null"; }
expect() { # spec: pairs that must / must not reach each other
    local spec=$1 a b same
    for a in 1 2 3 4; do for b in 1 2 3 4; do
        [ "$a" = "$b" ] && continue
        same=0
        for s in ${spec//\// }; do [[ ,$s, == *,$a,* && ,$s, == *,$b,* ]] && same=1; done
        if reach "$a" "$b"; then r=1; else r=0; fi
        if [ $r = $same ]; then ok "[$spec] $a -> $b $([ $r = 1 ] && echo reaches || echo 'does not reach')"
        else bad "[$spec] $a -> $b reach=$r expected $same"; fi
    done; done
    for a in 1 2 3 4; do
        switch_ok "$a" && ok "[$spec] node $a reaches the switch" || bad "[$spec] node $a: switch unreachable"
    done
}
expect "1,2,3,4"
"$LAB" partition 1,2/3 || bad "partition 1,2/3"
"$LAB" status | grep -q "partitioned 1,2/3/4" && ok "status shows 1,2/3/4" || bad "status: $("$LAB" status | grep network)"
expect "1,2/3/4"
"$LAB" partition 1,2/3,4 || bad "partition 1,2/3,4"
expect "1,2/3,4"
# a fence across the partition: node 1 powers node 4 off and on through the switch
"$LAB" exec -t 30 1 "$HERE/fence_lab --node 4 --action off" && ! "$LAB" power 4 status >/dev/null &&
    ok "node 1 fenced node 4 (other set) through the switch" || bad "fence node 4 from node 1"
"$LAB" power 4 on >/dev/null && ok "node 4 on again (tap stays in its set)" || bad "node 4 on"
reach 3 4 && ok "3 -> 4 after node 4's reboot (same set)" || bad "3 -> 4 after reboot"
reach 1 4 && bad "1 -> 4 after reboot (other set)" || ok "1 does not reach 4 after its reboot"
"$LAB" heal || bad heal
expect "1,2,3,4"
"$LAB" partition 9/1 2>/dev/null && bad "partition 9/1 accepted" || ok "partition rejects unknown node"
"$LAB" partition 1,2/2 2>/dev/null && bad "partition 1,2/2 accepted" || ok "partition rejects a node in two sets"
[ $fail = 0 ] && echo "partition-test: all ok" || echo "partition-test: FAILED"
exit $fail
