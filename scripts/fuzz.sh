#!/usr/bin/env bash
# Runs the cargo-fuzz targets (RESP request parser, frame decoder) for a while each.
#   scripts/fuzz.sh [seconds-per-target]      default 60
# Needs the nightly toolchain (present on these machines) and installs cargo-fuzz if missing.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${1:-60}"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
for target in request_parser frame_decoder wire_decoder; do
    echo "== fuzzing $target for ${secs}s"
    cargo +nightly fuzz run "$target" -- -max_total_time="$secs" -max_len=4096
done
