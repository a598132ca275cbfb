#!/usr/bin/env bash
# Regenerate include/cohort.h from this crate with cbindgen into a temp file
# and diff it against the checked-in header: exits 1 if it is stale.
#   ./check-header.sh           check (CI)
#   ./check-header.sh --update  rewrite include/cohort.h
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
header="$root/include/cohort.h"
want="0.29.4" # pinned: other versions format differently
if ! command -v cbindgen >/dev/null || [ "$(cbindgen --version | awk '{print $2}')" != "$want" ]; then
    echo "check-header: installing cbindgen $want" >&2
    cargo install cbindgen --locked --version "$want" >&2
fi
tmp="$(mktemp)"
trap 'rm -f "$tmp"' EXIT
(cd "$here" && cbindgen --quiet --config cbindgen.toml --crate cohort-ffi --output "$tmp" .)
if [ "${1:-}" = "--update" ]; then
    mkdir -p "$(dirname "$header")"
    install -m 644 "$tmp" "$header"
    echo "check-header: wrote $header"
    exit 0
fi
if ! diff -u "$header" "$tmp"; then
    echo "check-header: include/cohort.h is stale: run adapters/ffi/check-header.sh --update" >&2
    exit 1
fi
echo "check-header: include/cohort.h is up to date"
