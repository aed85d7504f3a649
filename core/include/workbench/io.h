#pragma once
// Small file and hashing utilities that dataset plugins share (plugins link only the core and LibTorch).
#include <cstdint>
#include <string>

namespace workbench {

/// The whole file as bytes; gzip-compressed files (".gz") are decompressed (zlib).
/// Throws DataError naming the path when it cannot be read.
std::string read_text_file(const std::string& path);

/// Hex MD5 of `text` (OpenSSL). Used for deterministic splits, not for security.
std::string md5_hex(const std::string& text);

/// The MD5 of `key`, read as a 128-bit big-endian integer, modulo `buckets`: the same number Python
/// gives for `int(hashlib.md5(key.encode()).hexdigest(), 16) % buckets`. Deterministic across runs,
/// machines and languages, so a prompt id falls in the same split everywhere.
std::int64_t stable_bucket(const std::string& key, std::int64_t buckets);

}  // namespace workbench
