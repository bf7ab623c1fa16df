#!/usr/bin/env bash
# RUSTC_WORKSPACE_WRAPPER for scripts/fuzz.sh. Cargo runs it as `fuzz-rustc.sh <rustc> <args…>`
# for workspace crates only; dependencies compile as usual and are shared with the debug build.
# It adds libFuzzer's coverage instrumentation (the flags cargo-fuzz passes, less the sanitizer,
# which needs nightly) to the crates that hold the fuzzed code: `server` and the fuzz targets.
# `app` and `proto` compile unchanged. opt-level 2 turns off the sharing of generic code with
# (uninstrumented) dependencies, so serde_json's, serde_urlencoded's and toml's generic parsing
# code is compiled, and instrumented, in `server`; it also runs ~1.5x faster. Debug assertions
# and overflow checks stay on, as in cargo-fuzz.
# Cargo does not see changes to this file: after editing it, `touch server/src/lib.rs`.
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
        -Copt-level=2 -Cdebug-assertions -Coverflow-checks \
        --cfg fuzzing
    ;;
esac
exec "$rustc" "$@"
