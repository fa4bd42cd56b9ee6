#!/usr/bin/env bash
# Fetches the flagd-testbed (tag v3.9.0) into $1 when ../shared/conformance/flagd-testbed is absent.
# The conformance tests call this only as a last resort; FLAGD_TESTBED_DIR overrides both.
set -euo pipefail
dest=${1:?usage: fetch-flagd-testbed.sh DEST}
git clone --quiet --depth 1 --branch v3.9.0 https://github.com/open-feature/flagd-testbed.git "$dest"
