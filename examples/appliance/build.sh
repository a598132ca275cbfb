#!/usr/bin/env bash
# Build the appliance firmware (thumbv7em-none-eabihf, release) and print its
# footprint. flash = .vector_table + .text + .rodata + .data (the .data
# initializer lives in flash too); RAM = .data + .bss + .uninit (static RAM;
# the stack takes what is left of the 256 KiB).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
rustup target list --installed 2>/dev/null | grep -qx thumbv7em-none-eabihf || rustup target add thumbv7em-none-eabihf
cargo build --release --target thumbv7em-none-eabihf "$@"
target_dir="${CARGO_TARGET_DIR:-$here/target}"
elf="$target_dir/thumbv7em-none-eabihf/release/cohort-appliance"
size -A "$elf" | awk -v elf="$elf" '
    { s[$1] = $2 }
    END {
        text = s[".text"] + 0; rodata = s[".rodata"] + 0; data = s[".data"] + 0
        bss = s[".bss"] + 0; vt = s[".vector_table"] + 0; uninit = s[".uninit"] + 0
        printf "appliance: %s\n", elf
        printf "appliance: .text %d .rodata %d .data %d .bss %d (.vector_table %d .uninit %d)\n", text, rodata, data, bss, vt, uninit
        printf "appliance: flash (.text+.rodata) %d bytes (%.1f KiB); with vector table and .data image %d bytes\n", text + rodata, (text + rodata) / 1024, vt + text + rodata + data
        printf "appliance: RAM (.data+.bss) %d bytes (%.1f KiB); with .uninit (RTT buffer) %d bytes\n", data + bss, (data + bss) / 1024, data + bss + uninit
    }'
