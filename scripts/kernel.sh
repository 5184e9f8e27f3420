#!/usr/bin/env bash
# Builds the fence-matching kernel (kernel/, Rust) into geofences/_kernel.abi3.so.
# Without cargo the index runs on its numpy path (same answers, ~2.5x slower at matching):
# this says so and succeeds. With cargo, a failed build fails.
# GEOPUSH_KERNEL_RUSTFLAGS: rustc flags (default: this machine's CPU; "" for a portable build).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo=$(command -v cargo || true)
[ -z "$cargo" ] && [ -x "$HOME/.cargo/bin/cargo" ] && cargo="$HOME/.cargo/bin/cargo"
if [ -z "$cargo" ]; then
  echo "kernel: cargo not found; the fence index uses its numpy path (install Rust, then \`make kernel\`)" >&2
  exit 0
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-build/kernel}"
export RUSTFLAGS="${GEOPUSH_KERNEL_RUSTFLAGS--C target-cpu=native}"
"$cargo" build --quiet --release --locked --manifest-path kernel/Cargo.toml --features extension-module
cp "$CARGO_TARGET_DIR/release/lib_kernel.so" geofences/_kernel.abi3.so
if [ "${1:-}" = "--test" ]; then
  # the kernel's own tests: its H3 cells against h3o's, its tables, its exact tests
  "$cargo" test --quiet --release --locked --manifest-path kernel/Cargo.toml --lib
fi
