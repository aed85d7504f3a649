#!/usr/bin/env bash
# Installs every Debian 12 package workbench needs to build, run the quickstart and pass its tests.
# Idempotent: apt-get skips what is already there.
set -euo pipefail

packages=(
  # toolchain
  build-essential cmake ccache git pkg-config lld
  # clang and its libFuzzer runtime: the fuzz targets (scripts/fuzz.sh, run by scripts/test.sh)
  clang libclang-rt-14-dev
  # LibTorch (CPU, 1.13.1) and a fast BLAS for it; see README "BLAS"
  libtorch-dev libopenblas0-pthread
  # c10d's Gloo process group (data-parallel training): its headers
  libgloo-dev
  # plugin loading, config, formatting, CLI, run store, hashing
  libboost-dev libboost-filesystem-dev libtomlplusplus-dev libfmt-dev libcli11-dev
  libsqlite3-dev sqlite3 libssl-dev
  # audio decoding and resampling
  libsndfile1-dev libsoxr-dev
  # learning curves (`workbench plot`: SVG, PNG, PDF)
  libcairo2-dev
  # tests (catch2; expat parses the plots' SVG)
  catch2 libexpat1-dev
  # SentencePiece tokenizer (SLAM text embedding)
  libsentencepiece-dev
  # unpaired text in five languages (issue 3: SpanBERT data)
  fortunes fortunes-es fortunes-it fortunes-ru fortunes-de
  # data: human speech with transcripts in five languages
  asterisk-core-sounds-en asterisk-core-sounds-en-wav
  asterisk-core-sounds-es asterisk-core-sounds-es-wav
  asterisk-core-sounds-fr asterisk-core-sounds-fr-wav
  asterisk-core-sounds-it asterisk-core-sounds-it-wav
  asterisk-core-sounds-ru asterisk-core-sounds-ru-wav
)

# Only the benchmark and the golden-value scripts (tests/golden/) need these; install with WITH_PYTHON_PEER=1.
if [[ "${WITH_PYTHON_PEER:-0}" == 1 ]]; then
  packages+=(python3-torch python3-torchaudio python3-numpy sctk)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"

# Debian's libtorch picks the BLAS through alternatives; make sure the pthread OpenBLAS wins over
# the reference BLAS, which is about 17x slower here.
arch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)
for alt in "libblas.so.3-$arch" "liblapack.so.3-$arch"; do
  path=$(update-alternatives --list "$alt" 2>/dev/null | grep openblas-pthread | head -n1 || true)
  [[ -n "$path" ]] && $SUDO update-alternatives --set "$alt" "$path" >/dev/null
done
echo "install-deps: installed ${#missing[@]} packages"
