#!/usr/bin/env bash
# Prints the raw and gzipped size of the WebAssembly + JS bundle built by `cargo leptos build`.
set -euo pipefail
cd "$(dirname "$0")/.."
total_raw=0
total_gz=0
for f in target/site/pkg/backend-monitor.wasm target/site/pkg/backend-monitor.js; do
  raw=$(stat -c %s "$f")
  gz=$(gzip -9 -c "$f" | wc -c)
  printf '%-40s %8d bytes raw %8d bytes gzip\n' "$f" "$raw" "$gz"
  total_raw=$((total_raw + raw))
  total_gz=$((total_gz + gz))
done
printf '%-40s %8d bytes raw %8d bytes gzip\n' "total" "$total_raw" "$total_gz"
