#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian machine, and is safe to re-run:
# Debian packages (prometheus + promtool for the metrics tests, haproxy and redis-server for
# the fleet: scripts/fleet.sh and the gateway test), the Python `openai` client
# (the OpenAI-compatibility test), then the model and the QA data (hash-checked, into the
# git-ignored models/ and data/), and libnvrtc (hash-checked, into the git-ignored tools/). Used by scripts/test.sh (the README's test command) and CI.
set -euo pipefail
cd "$(dirname "$0")/.."

# Runs a command as root: directly when we are root, else through sudo.
as_root() {
  if [ "$(id -u)" = 0 ]; then
    "$@"
  elif command -v sudo >/dev/null; then
    sudo "$@"
  else
    echo "setup: '$*' needs root (no sudo here); install the packages by hand" >&2
    exit 1
  fi
}

# Debian packages, installed only when one of their commands is missing.
# Each entry: "command package".
need=()
for pair in "promtool prometheus" "prometheus prometheus" "haproxy haproxy" \
  "redis-server redis-server"; do
  set -- $pair
  # /usr/sbin (haproxy) is not on a normal user's PATH.
  if ! command -v "$1" >/dev/null && [ ! -x "/usr/sbin/$1" ] && [[ " ${need[*]} " != *" $2 "* ]]; then
    need+=("$2")
  fi
done
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${need[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! python3 -c "import openai" 2>/dev/null; then
  echo "setup: installing the Python openai client"
  python3 -m pip install -q openai
fi

scripts/fetch-model.sh
scripts/fetch-data.sh
# libnvrtc for the a3kv-cuda NVRTC test (compiles every kernel to PTX without a GPU).
scripts/fetch-nvrtc.sh
