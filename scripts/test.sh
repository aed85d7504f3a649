#!/usr/bin/env bash
# One command from a fresh Debian 12 machine to a passing test suite: install the packages, build,
# run every Catch2 test through ctest, then the sanitized subset under ASan and UBSan: its tests
# (scripts/test-sanitized-subset.sh; SANITIZED_TESTS=0 skips them) and each libFuzzer target for
# FUZZ_SECONDS (default 15; 0 skips them; scripts/fuzz.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/build.sh
(cd build && ctest --output-on-failure -j "${JOBS:-$(nproc)}" "$@")
if [[ "${SANITIZED_TESTS:-1}" != 0 ]]; then
  ./scripts/test-sanitized-subset.sh
fi
if [[ "${FUZZ_SECONDS:-15}" != 0 ]]; then
  FUZZ_SECONDS=${FUZZ_SECONDS:-15} ./scripts/fuzz.sh
fi
