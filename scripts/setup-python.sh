#!/usr/bin/env bash
# Creates .venv with the real OpenFeature clients the interop tests drive. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
# Tests in one binary may call this at the same time (each module checks .venv on its own):
# one creates and installs, the others wait for it and then find everything in place.
exec 9>"${TMPDIR:-/tmp}/vexil-setup-python-$(id -u).lock"
flock 9
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! .venv/bin/python -c 'import openfeature, openfeature.contrib.provider.ofrep, openfeature.contrib.provider.flagd' 2>/dev/null; then
  .venv/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
fi
