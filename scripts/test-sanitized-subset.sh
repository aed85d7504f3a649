#!/usr/bin/env bash
# Builds the sanitized subset (tests/sanitized/CMakeLists.txt: the tests of our parsing and arithmetic,
# with clang, AddressSanitizer and UndefinedBehaviorSanitizer, against an uninstrumented LibTorch) into
# build-sanitized/ and runs it with ctest. Any sanitizer report fails its test. scripts/test.sh runs this
# after the normal suite; scripts/test-sanitized.sh instruments the whole tree instead (too long for CI).
#   ./scripts/test-sanitized-subset.sh [ctest args]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/configure-sanitized-subset.sh
cmake --build build-sanitized -j "${JOBS:-$(nproc)}"
cd build-sanitized
ctest --output-on-failure -j "${JOBS:-$(nproc)}" -L sanitized "$@"
