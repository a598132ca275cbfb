#!/usr/bin/env bash
# `systemd-analyze verify` on the shipped units, with the binaries of a
# build (the unit names /usr/sbin/cohortd, which verify requires to exist):
#   packaging/verify-units.sh DIR_WITH_COHORTD_AND_COHORTCTL
# Checks cohortd.service alone (corosync) and with the cohortd-udp.conf
# drop-in (the effective unit must not need corosync).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="$(cd "${1:?usage: verify-units.sh BIN_DIR}" && pwd)"
command -v systemd-analyze >/dev/null || { echo "verify-units: systemd-analyze is not installed" >&2; exit 2; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
sed "s#/usr/sbin/cohortd#$bin/cohortd#g" "$here/cohortd.service" > "$tmp/cohortd.service"
out="$(SYSTEMD_LOG_LEVEL=warning systemd-analyze verify --man=no "$tmp/cohortd.service" 2>&1)" || {
    echo "$out" >&2; echo "verify-units: cohortd.service FAILED" >&2; exit 1; }
# Anything verify prints about our files is a finding (it exits 0 on
# unknown keys).
if grep -F "$tmp" <<<"$out"; then echo "verify-units: cohortd.service has warnings" >&2; exit 1; fi
echo "verify-units: cohortd.service ok"
mkdir -p "$tmp/cohortd.service.d"
cp "$here/cohortd-udp.conf" "$tmp/cohortd.service.d/udp.conf"
# verify reads the drop-in directory beside a unit given by path.
out="$(SYSTEMD_LOG_LEVEL=warning systemd-analyze verify --man=no "$tmp/cohortd.service" 2>&1)" || {
    echo "$out" >&2; echo "verify-units: cohortd.service + udp.conf FAILED" >&2; exit 1; }
if grep -F "$tmp" <<<"$out"; then echo "verify-units: cohortd.service + udp.conf has warnings" >&2; exit 1; fi
echo "verify-units: cohortd.service + udp.conf ok"
