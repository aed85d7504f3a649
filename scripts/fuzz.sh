#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/) with clang, AddressSanitizer and UndefinedBehaviorSanitizer into
# build-sanitized/, then runs each for FUZZ_SECONDS (default 30) from its seeds and regression cases. A crash,
# a sanitizer report or a failed check leaves the input in build-sanitized/artifacts/ and exits non-zero:
# fix the bug, then add the input to fuzz/regressions/<target>/ so that ctest replays it from then on.
#   ./scripts/fuzz.sh                      # all three targets, 30 s each
#   FUZZ_SECONDS=600 ./scripts/fuzz.sh audio
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-30}
targets=("$@")
((${#targets[@]})) || targets=(experiment audio manifest)

source scripts/configure-sanitized-subset.sh
cmake --build build-sanitized -j "${JOBS:-$(nproc)}" --target "${targets[@]/#/fuzz_}"

mkdir -p build-sanitized/artifacts
status=0
for t in "${targets[@]}"; do
  corpus=build-sanitized/corpus/$t  # what this machine's runs found, kept between runs; the first folder is written
  mkdir -p "$corpus"
  inputs=("$corpus" "fuzz/seeds/$t")
  [[ -d "fuzz/regressions/$t" ]] && inputs+=("fuzz/regressions/$t")
  [[ $t == audio ]] && inputs+=(tests/data/hostile)
  echo "fuzz: $t for ${seconds} s"
  # A scratch folder per target for fuzz_audio's files. Leaks count as bugs, but for those in
  # fuzz/lsan.supp, inside system libraries.
  if ! TMPDIR=$(mktemp -d) ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} LSAN_OPTIONS=suppressions=$PWD/fuzz/lsan.supp \
      "build-sanitized/bin/fuzz_$t" -max_total_time="$seconds" -max_len=16384 -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 -artifact_prefix="build-sanitized/artifacts/$t-" "${inputs[@]}" \
      > "build-sanitized/fuzz_$t.log" 2>&1; then
    echo "fuzz: $t FAILED; the log is build-sanitized/fuzz_$t.log, the input in build-sanitized/artifacts/" >&2
    tail -n 40 "build-sanitized/fuzz_$t.log" >&2
    status=1
  else
    grep -E "stat::number_of_executed_units|cov:" "build-sanitized/fuzz_$t.log" | tail -n 2
  fi
done
exit $status
