// Tests of workbench::sha256_file / sha256_text (core/src/sha256.cpp): known digests, files larger than
// the read buffer, and errors that name the path.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>

#include "test_support.h"
#include "workbench/sha256.h"

#include <catch2/catch.hpp>

namespace fs = std::filesystem;
using workbench::sha256_file;
using workbench::sha256_text;
using workbench::testing::TempDir;

namespace {

std::string write_file(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
  return path;
}

}  // namespace

TEST_CASE("sha256 of strings matches the FIPS 180-2 test vectors", "[sha256]") {
  CHECK(sha256_text("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(sha256_text("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(sha256_text("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  CHECK(sha256_text(std::string(1000000, 'a')) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  // Bytes, not C strings: an embedded NUL counts.
  CHECK(sha256_text(std::string("a\0b", 3)) != sha256_text("a"));
}

TEST_CASE("sha256 of a file is the sha256 of its bytes", "[sha256]") {
  TempDir dir;
  CHECK(sha256_file(write_file(dir.file("libabc.so"), "abc")) ==
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(sha256_file(write_file(dir.file("empty"), "")) == sha256_text(""));
  CHECK(sha256_file(write_file(dir.file("million_a"), std::string(1000000, 'a'))) ==
        "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");

  // The file is read in 1 MiB blocks: exactly one block, and several with a partial last one.
  std::string one_block(1 << 20, '\0');
  for (std::size_t i = 0; i < one_block.size(); ++i) one_block[i] = static_cast<char>(i * 131 % 251);
  CHECK(sha256_file(write_file(dir.file("one_block.bin"), one_block)) == sha256_text(one_block));
  const std::string several = one_block + one_block + one_block + "tail";
  CHECK(sha256_file(write_file(dir.file("several.bin"), several)) == sha256_text(several));
  CHECK(sha256_text(several) != sha256_text(one_block));
}

TEST_CASE("sha256 of an unreadable path throws naming it", "[sha256]") {
  TempDir dir;
  CHECK_THROWS_WITH(sha256_file(dir.file("missing.so")), Catch::Contains("missing.so"));
  CHECK_THROWS_AS(sha256_file(dir.file("missing.so")), std::runtime_error);
  // A directory opens with fopen on Linux and fails on the first read.
  CHECK_THROWS_WITH(sha256_file(dir.path.string()), Catch::Contains(dir.path.string()));
}
