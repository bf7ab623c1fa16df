#!/usr/bin/env bash
# The release build: the server and the demo backend (target/release/), and the site the server
# serves (target/site/: the WebAssembly bundle, its JS loader and the CSS under pkg/, and the
# static assets). It does what `cargo leptos build --release` does for this project, with tools
# that take seconds to install instead of cargo-leptos' ten minutes of compiling: cargo,
# wasm-bindgen (the CLI matching Cargo.lock), binaryen's wasm-opt and esbuild (npm packages),
# which scripts/tools.sh installs when missing. (Cargo.toml keeps cargo-leptos' metadata for
# those who install it for `cargo leptos watch`; these scripts do not use it.)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/tools.sh
ensure_tools
# The names the server expects (server/src/startup.rs: output name `backend-monitor`).
name=backend-monitor
site=target/site
pkg="$site/pkg"
wasm=target/wasm32-unknown-unknown/wasm-release/app.wasm
hydration=target/wasm32-unknown-unknown/wasm-release/app.hydration.wasm

cargo build --release -p server --bin backend-monitor --bin demo-backend
# The hydration bundle: profile wasm-release (opt-level z, LTO, one codegen unit, panic abort).
cargo build -p app --lib --target wasm32-unknown-unknown --no-default-features --features hydrate \
  --profile wasm-release

rm -rf "$site"
mkdir -p "$pkg"
# Leptos' asynchronous and template hydration, which the panel never uses: a quarter of the
# bundle's code (see the script).
node scripts/strip-unused-hydration.mjs "$wasm" "$hydration"
# backend-monitor.js and backend-monitor_bg.wasm: the names Leptos' hydration script asks for
# when the server was built by plain cargo.
wasm-bindgen --target web --no-typescript --out-name "$name" --out-dir "$pkg" "$hydration"
# The flags cargo-leptos passes: smallest code, with the features rustc's wasm32 target emits.
wasm-opt -Oz --enable-bulk-memory --enable-nontrapping-float-to-int "$pkg/${name}_bg.wasm" \
  -o "$pkg/${name}_bg.wasm"
esbuild --minify --format=esm --log-level=warning "$pkg/$name.js" --outfile="$pkg/$name.js" --allow-overwrite
esbuild --minify --log-level=warning style/main.css --outfile="$pkg/$name.css"
cp -R public/. "$site/"
