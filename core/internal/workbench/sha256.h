#pragma once
// SHA-256 digests (OpenSSL EVP), for plugin files, configs and checkpoints.
#include <string>

namespace workbench {

/// Hex (lowercase) sha256 of a file's bytes, read in 1 MiB blocks. Throws std::runtime_error naming the
/// path if the file cannot be opened or read (a directory, a missing file).
std::string sha256_file(const std::string& path);
/// Hex (lowercase) sha256 of a string (runs.config_hash).
std::string sha256_text(const std::string& text);

}  // namespace workbench
