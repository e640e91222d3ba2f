#!/usr/bin/env bash
# Install platekit with everything its tests need into ./.venv. Idempotent: a no-op when already up to date.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($python --version)"
  "$python" -m venv .venv
fi
# Reinstall only when pyproject.toml changed since the last successful install.
stamp=.venv/.platekit-installed
want=$(sha256sum pyproject.toml | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing platekit and its dependencies into .venv (torch is large: a few minutes the first time)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[test]"
  echo "$want" > "$stamp"
fi
# The UI tests drive Debian's Chromium through Playwright (Playwright's own browser download is not used).
if [ ! -x /usr/bin/chromium ] && [ "${PLATEKIT_NO_BROWSER:-0}" != 1 ]; then
  echo "setup: installing Debian's chromium for the browser tests"
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q chromium >/dev/null
fi
# classify export --format web's browser tests run onnxruntime-web from its npm tarball (no node_modules needed):
# packed once into .venv/npm-cache, at the version classify/share.py pins. Without npm those tests are skipped.
ort=$(sed -n 's/^ORT_VERSION = "\([0-9.]*\)".*/\1/p' classify/share.py)
if command -v npm >/dev/null && [ -n "$ort" ] && [ ! -f ".venv/npm-cache/onnxruntime-web-$ort.tgz" ]; then
  echo "setup: npm pack onnxruntime-web@$ort into .venv/npm-cache"
  mkdir -p .venv/npm-cache
  (cd .venv/npm-cache && npm pack -q "onnxruntime-web@$ort" >/dev/null) \
    || echo "setup: npm pack failed; the web export's browser tests will be skipped"
fi
