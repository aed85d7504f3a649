#!/usr/bin/env bash
# One command from a fresh Debian 12 machine to a passing test suite: install the packages, build,
# and run every Catch2 test through ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/build.sh
cd build
ctest --output-on-failure -j "${JOBS:-$(nproc)}" "$@"
