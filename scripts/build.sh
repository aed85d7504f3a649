#!/usr/bin/env bash
# Configures and builds into build/ (Release with debug info; ccache when installed).
# Pass -DTorch_DIR=/path/to/libtorch/share/cmake/Torch in CMAKE_ARGS to build against another LibTorch
# (a CUDA one, for instance).
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${JOBS:-$(nproc)}
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo ${CMAKE_ARGS:-} >/dev/null
cmake --build build -j "$jobs"
