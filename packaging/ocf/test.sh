#!/usr/bin/env bash
# Validate packaging/ocf/cohortd with ocf-tester (resource-agents) against a
# real cohortd: one node on loopback over the UDP transport, a memory
# filesystem. Then the stop refusal: with fs1 mounted, stop fails and
# cohortd keeps running.
#   packaging/ocf/test.sh BIN_DIR     (root; BIN_DIR holds cohortd and cohortctl)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="$(cd "${1:?usage: test.sh BIN_DIR}" && pwd)"
command -v ocf-tester >/dev/null || { echo "ocf/test.sh: ocf-tester is not installed (resource-agents)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "ocf/test.sh: ocf-tester needs root" >&2; exit 2; }
d="$(mktemp -d)"
agent_pid() { cat "$d/rsc/"*.pid 2>/dev/null || true; }
cleanup() {
    p="$(agent_pid)"
    [ -n "$p" ] && kill -KILL "$p" 2>/dev/null || true
    rm -rf "$d"
}
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$d/key"; echo >>"$d/key"; chmod 600 "$d/key"
printf '#!/bin/sh\nexit 0\n' >"$d/fence"; chmod 755 "$d/fence"
cat >"$d/cohort.toml" <<CFG
node_id = 1
transport = "udp"
state_dir = "$d/state"
[udp]
mode = "unicast"
key_file = "$d/key"
[udp.peers]
1 = "127.0.0.1:$port"
[fence]
agent = "$d/fence"
[[filesystem]]
name = "fs1"
journals = 2
backend = "memory"
CFG
export HA_RSCTMP="$d/rsc"
params=(-o config="$d/cohort.toml" -o binary="$bin/cohortd" -o ctl="$bin/cohortctl" -o logfile="$d/cohortd.log")
ocf-tester -n cohortd "${params[@]}" "$here/cohortd"
# The refusal: start, mount fs1 (the memory kernel keeps it mounted), stop.
export OCF_ROOT=/usr/lib/ocf OCF_RESKEY_config="$d/cohort.toml" OCF_RESKEY_binary="$bin/cohortd" \
    OCF_RESKEY_ctl="$bin/cohortctl" OCF_RESKEY_logfile="$d/cohortd.log"
"$here/cohortd" start
"$bin/cohortctl" --config "$d/cohort.toml" mount fs1 --wait 20
if "$here/cohortd" stop; then
    echo "ocf/test.sh: stop succeeded with fs1 mounted" >&2
    exit 1
fi
"$here/cohortd" monitor || { echo "ocf/test.sh: cohortd not running after the refused stop" >&2; exit 1; }
echo "ocf/test.sh: ok (ocf-tester passed; stop refused while fs1 is mounted)"
