#!/usr/bin/env bash
# Measures the hot paths against their floors and writes BENCHMARKS.md: builds everything in
# release mode, installs oha (the HTTP load generator) when missing, runs the in-process
# benchmarks with criterion (server/benches/fallback.rs), then server/benches/hot_paths.rs, which
# measures the rest and reads criterion's results. Takes a few minutes; keep the machine idle.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/tools.sh
ensure_tools
ensure_oha
ensure_twiggy
command -v gzip >/dev/null || { log "installing gzip"; apt_install gzip; }

log "release build (server, demo backend, WebAssembly bundle)"
scripts/build.sh

log "in-process benchmarks (criterion)"
cargo bench -p server --bench fallback

log "benchmarks"
cargo bench -p server --bench hot_paths -- --out "$PWD/BENCHMARKS.md"
