#!/usr/bin/env bash
# Runs every check: formatting, lints (server and WebAssembly sides), unit and integration tests,
# a short fuzzing run, the release build, and the end-to-end tests in Chromium. Installs missing
# tools first.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/tools.sh
ensure_tools

log "cargo fmt --check"
cargo fmt --all -- --check

log "clippy (server side)"
cargo clippy --workspace --all-targets -- -D warnings

log "clippy (WebAssembly side)"
cargo clippy -p app --no-default-features --features hydrate --target wasm32-unknown-unknown -- -D warnings

log "cargo test"
cargo test --workspace

log "fuzzing (libFuzzer on stable, 15 s per target)"
scripts/fuzz.sh 15

log "release build (server, demo backend, WebAssembly bundle)"
scripts/build.sh

log "bundle size"
scripts/bundle-size.sh

log "end-to-end tests (Playwright + Chromium)"
(cd end2end && npx playwright test)

log "all checks passed"
