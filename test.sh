#!/usr/bin/env bash
# The whole test suite, as on a fresh machine: installs what the tests need, then checks
# formatting, lints and runs every test. `.ci/run` calls this.
set -euo pipefail
cd "$(dirname "$0")"

# The Rust toolchain is the machine's; rustfmt and clippy come with it. Install them if a
# minimal toolchain lacks them.
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add rustfmt clippy
fi

# The TLS key-format test and the JWT RSA test (tests/gateway/jwt.rs) make keys with the
# openssl command-line tool.
if ! command -v openssl >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y --no-install-recommends openssl >/dev/null 2>&1 \
    || { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y --no-install-recommends openssl >/dev/null; }
fi

# The README's and docs' examples (tests/gateway/readme.rs) run with real curl.
if ! command -v curl >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y --no-install-recommends curl >/dev/null 2>&1 \
    || { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y --no-install-recommends curl >/dev/null; }
fi

# The dashboard test drives a real headless Chromium (Debian's package).
if ! command -v chromium >/dev/null 2>&1; then
  echo "installing chromium for the dashboard test..."
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y --no-install-recommends chromium >/dev/null 2>&1 \
    || { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y --no-install-recommends chromium >/dev/null; }
fi

# The shared rate-limit tests (tests/redis_limits.rs, tests/gateway/redis.rs) start their own
# redis-server (Debian's package) on free loopback ports; the cluster test joins three with
# redis-cli (redis-tools, which redis-server depends on).
if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
  echo "installing redis-server for the shared rate-limit tests..."
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y --no-install-recommends redis-server >/dev/null 2>&1 \
    || { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y --no-install-recommends redis-server >/dev/null; }
fi

# The real-document tests (tests/gateway/openapi_import.rs, `#[ignore]`) load OpenAPI
# documents that npm packages ship: GitHub's REST description (@octokit/openapi) and Scalar's
# Galaxy (OpenAPI 3.1), installed under target/npm (node and npm from Debian when missing).
OPENAPI_PACKAGES="@octokit/openapi@23.0.2 @scalar/galaxy@0.6.12"
if [ ! -f target/npm/node_modules/@octokit/openapi/package.json ] \
  || [ ! -f target/npm/node_modules/@scalar/galaxy/package.json ]; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "installing node and npm for the real-document OpenAPI tests..."
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get install -y --no-install-recommends nodejs npm >/dev/null 2>&1 \
      || { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y --no-install-recommends nodejs npm >/dev/null; }
  fi
  mkdir -p target/npm
  # shellcheck disable=SC2086
  npm install --no-audit --no-fund --silent --prefix target/npm $OPENAPI_PACKAGES
fi

# The benchmark harness is not run in CI (it takes minutes and needs nginx and wrk); CI
# only checks that its scripts parse (the Node peers' too, where node is installed).
for script in bench/*.sh; do bash -n "$script"; done
python3 -c 'import ast, glob, sys; [ast.parse(open(f).read(), f) for f in glob.glob("bench/*.py")]'
if command -v node >/dev/null 2>&1; then
  for script in bench/peers/node/*.js; do node --check "$script"; done
fi

cargo fmt --all -- --check
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
cargo clippy --locked --all-targets -- -D warnings
# The fuzz targets (fuzz/, its own workspace) are built, not run, so that they do not rot;
# `cargo test` replays their corpus (tests/fuzz_corpus.rs). A plain build needs neither nightly
# nor cargo-fuzz, and sharing target/ means the dependencies are compiled once for both builds.
CARGO_TARGET_DIR=target cargo build --locked --manifest-path fuzz/Cargo.toml
# `cargo test` alone needs nothing installed; the tests that need a tool installed above
# (chromium, openssl, redis-server, curl, the npm documents) are marked `#[ignore]` and run here
# with the rest.
cargo test --locked -- --include-ignored

# Schemathesis (from PyPI, pinned, in a venv under target/) against a live gateway, driven by
# `schemagate openapi`; it installs what it needs and stops what it starts.
tests/schemathesis/run.sh
