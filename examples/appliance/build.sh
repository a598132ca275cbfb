#!/usr/bin/env bash
# Build the appliance firmware (thumbv7em-none-eabihf, release) and print its
# footprint. flash = .vector_table + .text + .rodata + .data (the .data
# initializer lives in flash too); RAM = .data + .bss + .uninit (static RAM;
# the stack takes what is left of the 256 KiB). Fails when either is over the
# appliance profile's goal (64 KiB each; FLASH_LIMIT / RAM_LIMIT in bytes
# override it). A goal never blocks a safety fix: if one needs the room,
# raise the limit here and report the cost in BENCHMARKS.md.
set -euo pipefail
FLASH_LIMIT="${FLASH_LIMIT:-65536}"
RAM_LIMIT="${RAM_LIMIT:-65536}"
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
rustup target list --installed 2>/dev/null | grep -qx thumbv7em-none-eabihf || rustup target add thumbv7em-none-eabihf
cargo build --release --target thumbv7em-none-eabihf "$@"
target_dir="${CARGO_TARGET_DIR:-$here/target}"
elf="$target_dir/thumbv7em-none-eabihf/release/cohort-appliance"
size -A "$elf" | awk -v elf="$elf" -v flash_limit="$FLASH_LIMIT" -v ram_limit="$RAM_LIMIT" '
    { s[$1] = $2 }
    END {
        text = s[".text"] + 0; rodata = s[".rodata"] + 0; data = s[".data"] + 0
        bss = s[".bss"] + 0; vt = s[".vector_table"] + 0; uninit = s[".uninit"] + 0
        printf "appliance: %s\n", elf
        printf "appliance: .text %d .rodata %d .data %d .bss %d (.vector_table %d .uninit %d)\n", text, rodata, data, bss, vt, uninit
        printf "appliance: flash (.text+.rodata) %d bytes (%.1f KiB); with vector table and .data image %d bytes\n", text + rodata, (text + rodata) / 1024, vt + text + rodata + data
        printf "appliance: RAM (.data+.bss) %d bytes (%.1f KiB); with .uninit (RTT buffer) %d bytes\n", data + bss, (data + bss) / 1024, data + bss + uninit
        bad = 0
        flash = vt + text + rodata + data
        if (flash > flash_limit) { printf "appliance: flash (with vector table and .data image) %d bytes is over the limit of %d\n", flash, flash_limit; bad = 1 }
        if (data + bss > ram_limit) { printf "appliance: RAM %d bytes is over the limit of %d\n", data + bss, ram_limit; bad = 1 }
        exit bad
    }'
