# Installs what building and testing backend-monitor needs, skipping what is already there.
# Sourced by scripts/run.sh and scripts/test.sh. Works on a fresh Debian machine with rustup.

# The HTTP load generator of the benchmarks (scripts/bench.sh).
OHA_VERSION=1.16.0
# What the WebAssembly bundle is made of, in BENCHMARKS.md (scripts/bench.sh).
TWIGGY_VERSION=0.8.0

# Each step is logged with the time since the script started, so a slow run shows where it went.
log() { printf '\033[1;34m==>\033[0m [%dm%02ds] %s\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*"; }

# `install_tool OPT_LEVEL ARGS…`: `cargo install ARGS…` with a cheaper release profile than the
# tool's own (no LTO, 16 codegen units, the given opt-level), which more than halves the compile
# time on a 2-core machine. wasm-bindgen-cli and twiggy get opt-level 1: rewriting one wasm file
# needs no more. oha keeps 3: it is the load generator of the benchmarks, and its own speed is
# part of what they measure. (cargo-leptos is not needed: scripts/build.sh does its release
# build with these tools, where installing cargo-leptos meant ten minutes of compiling.)
install_tool() {
  local opt_level="$1"
  shift
  CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
    CARGO_PROFILE_RELEASE_OPT_LEVEL="$opt_level" CARGO_PROFILE_RELEASE_DEBUG=false \
    cargo install "$@"
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then
    as_root apt-get update -qq
    apt_updated=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_tools() {
  local root
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  export PATH="$HOME/.cargo/bin:$root/end2end/node_modules/.bin:$PATH"

  command -v cargo >/dev/null || { echo "cargo not found: install Rust with rustup first" >&2; return 1; }
  command -v cc >/dev/null || { log "installing a C compiler"; apt_install build-essential; }
  command -v curl >/dev/null || { log "installing curl"; apt_install curl ca-certificates; }
  command -v npm >/dev/null || { log "installing Node.js and npm"; apt_install nodejs npm; }

  for component in clippy rustfmt; do
    if ! rustup component list --installed | grep -q "^$component"; then
      log "adding the $component component"
      rustup component add "$component"
    fi
  done

  if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    log "adding the wasm32-unknown-unknown target"
    rustup target add wasm32-unknown-unknown
  fi


  # The wasm-bindgen CLI must match the library version pinned in Cargo.lock exactly.
  local wbg
  wbg="$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' "$root/Cargo.lock")"
  if ! wasm-bindgen --version 2>/dev/null | grep -q " $wbg\$"; then
    log "installing wasm-bindgen-cli $wbg"
    # Not --locked: its lock file names a crate version the registry no longer serves.
    install_tool 1 wasm-bindgen-cli --version "$wbg"
  fi

  if [ ! -x /usr/bin/chromium ]; then
    log "installing Debian's Chromium"
    apt_install chromium
  fi

  # Playwright, binaryen's wasm-opt (Debian's binaryen is too old: its output fails to hydrate) and
  # esbuild (minifies the JS loader and the CSS in scripts/build.sh).
  if [ ! -f "$root/end2end/node_modules/.package-lock.json" ] ||
     [ "$root/end2end/package-lock.json" -nt "$root/end2end/node_modules/.package-lock.json" ]; then
    log "installing npm packages (Playwright, binaryen, esbuild)"
    (cd "$root/end2end" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
  fi
}

# oha, the HTTP load generator the benchmarks use (only scripts/bench.sh needs it).
ensure_oha() {
  if ! oha --version 2>/dev/null | grep -q " $OHA_VERSION\$"; then
    log "installing oha $OHA_VERSION"
    install_tool 3 oha --version "$OHA_VERSION" --locked
  fi
}

# twiggy, the WebAssembly size profiler the benchmarks use to break the bundle down.
ensure_twiggy() {
  if ! twiggy --version 2>/dev/null | grep -q " $TWIGGY_VERSION\$"; then
    log "installing twiggy $TWIGGY_VERSION"
    install_tool 1 twiggy --version "$TWIGGY_VERSION" --locked
  fi
}
