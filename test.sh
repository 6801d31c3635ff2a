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

cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked
