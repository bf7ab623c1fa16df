#!/usr/bin/env bash
# Coverage-guided fuzzing on stable Rust: builds the libFuzzer targets in fuzz/ with the
# SanitizerCoverage flags cargo-fuzz uses (scripts/fuzz-rustc.sh adds them to our own crates
# only, so the debug build's dependencies are reused), then runs each target for SECONDS
# (default 20) from its seeds in fuzz/corpus/<target>. Fails, naming the crashing input saved
# in fuzz/artifacts/<target>/, if any input panics, times out or runs out of memory.
#   scripts/fuzz.sh [SECONDS] [TARGET…]      e.g. scripts/fuzz.sh 600 config
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-20}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(request config)
target_dir=${CARGO_TARGET_DIR:-$PWD/target}

bins=()
for target in "${targets[@]}"; do bins+=(--bin "$target"); done
# `-p server --lib --examples` (there are no examples) makes cargo resolve features as
# `cargo test --workspace` does, dev-dependencies included, so every dependency it built is
# reused as it is; only the workspace crates and libFuzzer are compiled here.
RUSTC_WORKSPACE_WRAPPER="$PWD/scripts/fuzz-rustc.sh" \
    cargo build -p fuzz -p server --lib --examples "${bins[@]}"

for target in "${targets[@]}"; do
    # New inputs go to a scratch corpus under the target dir; the committed seeds stay as they are.
    corpus="$target_dir/fuzz-corpus/$target"
    artifacts="$PWD/fuzz/artifacts/$target"
    mkdir -p "$corpus" "$artifacts"
    marker=$(mktemp)
    echo "fuzzing $target for ${seconds}s"
    status=0
    "$target_dir/debug/$target" "$corpus" "fuzz/corpus/$target" \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=16384 \
        -artifact_prefix="$artifacts/" -print_final_stats=1 2>"$target_dir/fuzz-$target.log" ||
        status=$?
    if [ "$status" -ne 0 ]; then
        tail -n 40 "$target_dir/fuzz-$target.log" >&2
        found=$(find "$artifacts" -type f -newer "$marker")
        rm -f "$marker"
        echo "fuzz target $target failed (exit $status); input: ${found:-none saved}" >&2
        echo "reproduce: $target_dir/debug/$target ${found:-<input>}" >&2
        exit 1
    fi
    rm -f "$marker"
    grep -E '^stat::number_of_executed_units|^Done' "$target_dir/fuzz-$target.log" || true
done
