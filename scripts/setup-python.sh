#!/usr/bin/env bash
# Creates .venv with the real OpenFeature clients the interop tests drive. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! .venv/bin/python -c 'import openfeature, openfeature.contrib.provider.ofrep' 2>/dev/null; then
  .venv/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
fi
