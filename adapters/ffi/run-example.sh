#!/usr/bin/env bash
# Build libcohort_ffi.a, compile examples/host.c against it with gcc and run
# it: two nodes in one process through a mount and a node failure.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
cargo build -p cohort-ffi --release
target_dir="${CARGO_TARGET_DIR:-$root/target}"
lib="$target_dir/release/libcohort_ffi.a"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
${CC:-gcc} -std=c11 -Wall -Wextra -Werror -O2 -I "$root/include" "$here/examples/host.c" "$lib" \
    -lpthread -ldl -lm -o "$out/cohort-host"
"$out/cohort-host"
