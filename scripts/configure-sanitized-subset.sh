# Sourced by scripts/fuzz.sh and scripts/test-sanitized-subset.sh: configures build-sanitized/, the clang
# build of the sanitized subset (WORKBENCH_SANITIZED_SUBSET: the libFuzzer targets and tests/sanitized/).
sanitized_cxx=$(command -v clang++ || command -v clang++-14 || true)
if [[ -z "$sanitized_cxx" ]]; then
  echo "sanitized subset: clang++ not found; scripts/install-deps.sh installs it" >&2
  exit 1
fi
cmake -S . -B build-sanitized -DWORKBENCH_SANITIZED_SUBSET=ON -DCMAKE_CXX_COMPILER="$sanitized_cxx" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
