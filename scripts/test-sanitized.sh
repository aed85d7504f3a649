#!/usr/bin/env bash
# Builds the tests with AddressSanitizer and UndefinedBehaviorSanitizer into build-asan/ (-O1; about 50
# minutes on 2 cores, the whole tree, since every test depends on the plugins and the app) and runs
# the tests that exercise our own parsing and arithmetic: audio and hostile files, text, TOML, data,
# the run store, CTC/RNN-T and the fbank. Any sanitizer report fails the test (UBSan does not recover).
# Leak checking is off: LibTorch keeps global allocations alive until exit.
#   ./scripts/test-sanitized.sh [ctest -R regex]
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
jobs=${JOBS:-$(nproc)}
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWORKBENCH_SANITIZE=ON >/dev/null
cmake --build build-asan -j "$jobs"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1
cd build-asan
ctest --output-on-failure -j "$jobs" -R "${1:-test_audio|test_hostile_inputs|test_text|test_config|test_data|test_run_store|test_fbank|test_ctc|test_rnnt|test_error_rates|test_w2v_bert_parts|test_stm_negatives|test_translation_metrics}"
