#!/usr/bin/env bash
# Run the whole test suite (slow tests included), installing what it needs first if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
