// The plugin API version means something: the contract headers (the installed SDK, core/include/workbench)
// are hashed, and the hash is checked in next to the version it belongs to (core/plugin_api.txt). Change a
// header in a way a built plugin would see without bumping kPluginApiVersion, and this test fails.
// Comments and whitespace are left out of the hash: they change nothing a compiled plugin sees.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "workbench/error.h"
#include "workbench/plugin.h"
#include "workbench/registry.h"
#include "workbench/sha256.h"

#include <catch2/catch.hpp>

namespace fs = std::filesystem;
using Catch::Matchers::Contains;

namespace {

std::string read(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// The headers' text without // comments and with whitespace runs collapsed, each after its file name.
std::string contract_text() {
  std::vector<fs::path> headers;
  for (const auto& e : fs::directory_iterator(WORKBENCH_SOURCE_DIR "/core/include/workbench"))
    if (e.path().extension() == ".h") headers.push_back(e.path());
  std::sort(headers.begin(), headers.end());
  std::string all;
  const std::regex comment("//[^\n]*"), space("[ \t\r\n]+");
  for (const auto& h : headers) {
    std::string text = std::regex_replace(read(h), comment, "");
    text = std::regex_replace(text, space, " ");
    all += h.filename().string() + "\n" + text + "\n";
  }
  return all;
}

}  // namespace

TEST_CASE("plugin API: the contract headers match the hash recorded for kPluginApiVersion", "[sdk][api]") {
  const std::string hash = workbench::sha256_text(contract_text());
  std::istringstream recorded(read(WORKBENCH_SOURCE_DIR "/core/plugin_api.txt"));
  std::string line;
  std::vector<std::pair<std::uint32_t, std::string>> versions;
  while (std::getline(recorded, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream fields(line);
    std::uint32_t version = 0;
    std::string h;
    fields >> version >> h;
    versions.emplace_back(version, h);
  }
  REQUIRE_FALSE(versions.empty());
  INFO("The contract headers hash to " << hash << ". If a built plugin would see the change (a layout, a virtual "
       "function, an inline body, a new type in a signature), bump kPluginApiVersion in plugin.h, say why there, "
       "and add the line \"" << workbench::kPluginApiVersion + 1 << " " << hash << "\" to core/plugin_api.txt.");
  // The last line is the current version, versions only go up, and no two versions share headers: a
  // change that kept its version number would have to reuse a released hash or rewrite a released line.
  CHECK(versions.back().first == workbench::kPluginApiVersion);
  CHECK(versions.back().second == hash);
  for (std::size_t i = 1; i < versions.size(); ++i) {
    CHECK(versions[i].first == versions[i - 1].first + 1);
    for (std::size_t j = 0; j < i; ++j) CHECK(versions[i].second != versions[j].second);
  }
}

TEST_CASE("plugin API: a plugin built for another API version is refused with both numbers", "[sdk][api]") {
  REQUIRE(workbench::kPluginApiVersion >= 2);
  for (const auto& [path, theirs] : {std::pair<std::string, std::string>{WBTEST_WRONG_API_PATH, "999"},
                                     std::pair<std::string, std::string>{WBTEST_API_V1_PATH, "1"}}) {
    INFO(path);
    workbench::Registry registry;
    try {
      registry.load_file(path);
      FAIL("a plugin built for API version " + theirs + " was accepted");
    } catch (const workbench::PluginError& e) {
      CHECK_THAT(std::string(e.what()), Contains("built for workbench plugin API version " + theirs + ","));
      CHECK_THAT(std::string(e.what()),
                 Contains("uses plugin API version " + std::to_string(workbench::kPluginApiVersion) + ";"));
    }
  }
}
