#!/usr/bin/env bash
# The whole test suite: installs what the tests need if missing (scripts/setup.sh: Debian and
# pip packages, the model and the QA data, hash-checked), then runs every test optimised
# (model math in a debug build is far too slow). Every test binary runs even when an earlier
# one fails (--no-fail-fast); the exit status is non-zero if any test failed.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo test --release --workspace --no-fail-fast "$@"
