#!/usr/bin/env bash
# The whole test suite: fetches the real model and data if missing (hash-checked), then runs
# every test optimised (model math in a debug build is far too slow).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-model.sh
scripts/fetch-data.sh
cargo test --release --workspace "$@"
