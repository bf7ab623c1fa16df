#!/usr/bin/env bash
# Builds and runs the panel on http://127.0.0.1:8080 with the embedded default (two demo
# backends). Extra arguments go to backend-monitor, e.g. `scripts/run.sh --config models.toml`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/tools.sh
ensure_tools
scripts/build.sh
log "panel: http://127.0.0.1:8080 (Ctrl-C stops it and every backend it started)"
exec target/release/backend-monitor "$@"
