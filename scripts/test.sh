#!/usr/bin/env bash
# The whole test suite: installs what the tests need if missing (scripts/setup.sh: Debian and
# pip packages, the model and the QA data, hash-checked), then runs every test optimised
# (model math in a debug build is far too slow). Every test binary runs even when an earlier
# one fails (--no-fail-fast); the exit status is non-zero if any test failed. Then the
# a3kv-cuda `cuda` feature is linted and tested (NVRTC compiles every kernel).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
status=0
cargo test --release --workspace --no-fail-fast "$@" || status=$?
# The `cuda` feature of a3kv-cuda (off in the workspace build): lint it and run its tests,
# which compile every kernel through NVRTC (libnvrtc from setup.sh) and, when a GPU is
# present, check kernel parity. Only a3kv-cuda is rebuilt (about 20 s).
cargo clippy --release -p a3kv-cuda --features cuda --all-targets -- -D warnings || status=$?
cargo test --release -p a3kv-cuda --features cuda --no-fail-fast || status=$?
exit $status
