#!/usr/bin/env bash
# Creates .venv with every Python package FLTS needs, on a fresh machine or a warm one.
# Downloads are cached under ~/.cache/flts so the second run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${FLTS_CACHE:-$HOME/.cache/flts}"
export UV_CACHE_DIR="${UV_CACHE_DIR:-$CACHE/uv}"
export UV_LINK_MODE="${UV_LINK_MODE:-copy}"
PYTHON="${PYTHON:-python3}"
mkdir -p "$CACHE"

if [ ! -x "$CACHE/tools/bin/uv" ]; then
  echo "==> bootstrap: installing uv into $CACHE/tools"
  "$PYTHON" -m venv "$CACHE/tools"
  "$CACHE/tools/bin/pip" install --quiet --disable-pip-version-check uv
fi
UV="$CACHE/tools/bin/uv"

stamp=".venv/.flts-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "==> bootstrap: creating .venv and installing flts[dev] (first run downloads PyTorch: a few GB)"
[ -x .venv/bin/python ] || "$UV" venv --quiet --python "$PYTHON" .venv
# Byte-compiled at install: services (and the 10 s inference start-up target) must not pay for it.
VIRTUAL_ENV="$PWD/.venv" "$UV" pip install --compile-bytecode -e '.[dev]'
echo "$want" > "$stamp"
