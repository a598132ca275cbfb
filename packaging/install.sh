#!/usr/bin/env bash
# Install cohortd from a build into DESTDIR (default /): the binaries, the
# systemd unit and its UDP drop-in (not enabled), the example
# configuration, man pages and bash/zsh/fish completions generated from the
# binaries' own command-line definitions (cohort-docs).
#   cargo build --release -p cohortd --features corosync
#   packaging/install.sh target/release [DESTDIR]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${1:?usage: install.sh BIN_DIR [DESTDIR]}"
dest="${2:-/}"
for b in cohortd cohortctl cohort-docs; do
    [ -x "$bin/$b" ] || { echo "install.sh: $bin/$b not built" >&2; exit 1; }
done
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$bin/cohort-docs" "$tmp" >/dev/null
install -D -m 755 "$bin/cohortd" "$dest/usr/sbin/cohortd"
install -D -m 755 "$bin/cohortctl" "$dest/usr/sbin/cohortctl"
install -D -m 644 "$here/cohortd.service" "$dest/usr/lib/systemd/system/cohortd.service"
install -D -m 755 "$here/ocf/cohortd" "$dest/usr/lib/ocf/resource.d/cohort/cohortd"
install -D -m 644 "$here/cohortd-udp.conf" "$dest/usr/share/doc/cohort/cohortd-udp.conf"
install -D -m 644 "$here/cohort.toml.example" "$dest/usr/share/doc/cohort/cohort.toml.example"
for m in "$tmp"/man8/*.8; do
    install -D -m 644 "$m" "$dest/usr/share/man/man8/$(basename "$m")"
done
install -D -m 644 "$tmp/completions/cohortd.bash" "$dest/usr/share/bash-completion/completions/cohortd"
install -D -m 644 "$tmp/completions/cohortctl.bash" "$dest/usr/share/bash-completion/completions/cohortctl"
install -D -m 644 "$tmp/completions/_cohortd" "$dest/usr/share/zsh/vendor-completions/_cohortd"
install -D -m 644 "$tmp/completions/_cohortctl" "$dest/usr/share/zsh/vendor-completions/_cohortctl"
install -D -m 644 "$tmp/completions/cohortd.fish" "$dest/usr/share/fish/vendor_completions.d/cohortd.fish"
install -D -m 644 "$tmp/completions/cohortctl.fish" "$dest/usr/share/fish/vendor_completions.d/cohortctl.fish"
echo "install.sh: installed into $dest (enable with: systemctl enable --now cohortd; UDP transport: copy"
echo "  /usr/share/doc/cohort/cohortd-udp.conf to /etc/systemd/system/cohortd.service.d/udp.conf first)"
