#!/usr/bin/env bash
# Prints the raw and gzipped size of the WebAssembly + JS bundle built by `scripts/build.sh`,
# and fails when the gzip total is over the budget: the project's 250 KB (250,000 bytes).
# Override with BUNDLE_BUDGET_GZIP=<bytes>.
set -euo pipefail
cd "$(dirname "$0")/.."
budget="${BUNDLE_BUDGET_GZIP:-250000}"
total_raw=0
total_gz=0
for f in target/site/pkg/backend-monitor_bg.wasm target/site/pkg/backend-monitor.js; do
  raw=$(stat -c %s "$f")
  gz=$(gzip -9 -c "$f" | wc -c)
  printf '%-40s %8d bytes raw %8d bytes gzip\n' "$f" "$raw" "$gz"
  total_raw=$((total_raw + raw))
  total_gz=$((total_gz + gz))
done
printf '%-40s %8d bytes raw %8d bytes gzip\n' "total" "$total_raw" "$total_gz"
if [ "$total_gz" -gt "$budget" ]; then
  echo "the bundle is over its budget: $total_gz bytes gzip > $budget" >&2
  exit 1
fi
echo "within the budget of $budget bytes gzip"
