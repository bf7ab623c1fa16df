#!/usr/bin/env bash
# RUSTC_WORKSPACE_WRAPPER for scripts/fuzz.sh. Cargo runs it as `fuzz-rustc.sh <rustc> <args…>`
# for workspace crates only; dependencies compile as usual and are shared with the debug build.
# It adds libFuzzer's coverage instrumentation (the flags cargo-fuzz passes, less the sanitizer,
# which needs nightly) to the crates that hold the fuzzed code: `server` (whose generic calls
# into serde_json, serde_urlencoded and toml are compiled, and so instrumented, there) and the
# fuzz targets themselves. `app` and `proto` compile unchanged.
set -euo pipefail
rustc=$1
shift
case " $* " in
*" --crate-name server "* | *" --crate-name request "* | *" --crate-name config "*)
    exec "$rustc" "$@" \
        -Cpasses=sancov-module \
        -Cllvm-args=-sanitizer-coverage-level=4 \
        -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
        -Cllvm-args=-sanitizer-coverage-pc-table \
        -Cllvm-args=-sanitizer-coverage-trace-compares \
        -Cllvm-args=-sanitizer-coverage-stack-depth \
        -Cllvm-args=-simplifycfg-branch-fold-threshold=0 \
        --cfg fuzzing
    ;;
esac
exec "$rustc" "$@"
