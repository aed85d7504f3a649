// Experiment files: TOML parsing, --set overrides, validation against the real plugins' schemas, error
// messages with file:line:column, defaults, the resolved TOML (round trip) and the flat params.
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <regex>
#include <sstream>
#include <string>
#include <variant>
#include <vector>

#include "workbench/error.h"
#include "workbench/experiment.h"
#include "workbench/registry.h"

#include <catch2/catch.hpp>

namespace fs = std::filesystem;
using namespace workbench;
using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;

namespace {

const Registry& registry() {
  static const Registry* r = [] {
    auto* reg = new Registry();
    reg->load_directory(Registry::builtin_plugin_dir());
    return reg;
  }();
  return *r;
}

SchemaLookup lookup() {
  return [](PluginKind kind, const std::string& name, const std::string& where) -> const OptionSchema& {
    return registry().get(kind, name, where).descriptor.options;
  };
}

const std::string kPath = "exp.toml";

// Line numbers matter: the tests below refer to them.
const std::vector<std::string> kBaseLines = {
    "[experiment]",                // 1
    "name = \"cfg\"",              // 2
    "seed = 7",                    // 3
    "",                            // 4
    "[data.train]",                // 5
    "plugin = \"asterisk\"",       // 6
    "languages = [\"en\", \"es\"]",  // 7
    "max_per_language = 3",        // 8
    "",                            // 9
    "[data.dev]",                  // 10
    "plugin = \"asterisk\"",       // 11
    "split = \"dev\"",             // 12
    "",                            // 13
    "[model.speech_encoder]",      // 14
    "plugin = \"conformer\"",      // 15
    "d_model = 32",                // 16
    "heads = 2",                   // 17
    "",                            // 18
    "[objectives.ctc]",            // 19
    "plugin = \"ctc\"",            // 20
    "data = \"train\"",            // 21
    "",                            // 22
    "[evaluators.asr]",            // 23
    "plugin = \"asr\"",            // 24
    "data = \"dev\"",              // 25
    "",                            // 26
    "[trainer]",                   // 27
    "steps = 10",                  // 28
    "lr = 0.002",                  // 29
};

std::string join(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& l : lines) out += l + "\n";
  return out;
}

std::string base() { return join(kBaseLines); }

/// The base file with line `line` (1-based) replaced by `text`.
std::string with_line(int line, const std::string& text) {
  auto lines = kBaseLines;
  lines.at(static_cast<std::size_t>(line - 1)) = text;
  return join(lines);
}

/// The base file with `text` inserted as the new line `line` (1-based); later lines move down.
std::string insert_line(int line, const std::string& text) {
  auto lines = kBaseLines;
  lines.insert(lines.begin() + (line - 1), text);
  return join(lines);
}

ExperimentConfig resolve(const std::string& text, const std::vector<std::string>& overrides = {}) {
  return ExperimentFile::parse_text(text, kPath, overrides).resolve(lookup());
}

/// The message of the ConfigError that parsing + resolving `text` throws.
std::string config_error(const std::string& text, const std::vector<std::string>& overrides = {}) {
  try {
    resolve(text, overrides);
  } catch (const ConfigError& e) {
    return e.what();
  } catch (const std::exception& e) {
    FAIL("expected a ConfigError, got: " << e.what());
  }
  FAIL("expected a ConfigError, the configuration resolved");
  return {};
}

/// True when `message` starts with "<kPath>:<line>:<column>: ".
bool starts_at_line(const std::string& message, int line) {
  return std::regex_search(message, std::regex("^exp\\.toml:" + std::to_string(line) + ":[0-9]+: "));
}

const OptionValue* flat_value(const ExperimentConfig& c, const std::string& key) {
  for (const auto& [k, v] : c.flat)
    if (k == key) return &v;
  return nullptr;
}

}  // namespace

TEST_CASE("a valid file resolves, with defaults filled in and origins recorded", "[config]") {
  auto c = resolve(base());
  CHECK(c.path == kPath);
  CHECK(c.name == "cfg");
  CHECK(c.seed == 7);
  CHECK(c.description.empty());

  REQUIRE(c.data.size() == 2);
  const ComponentConfig* train = c.find_data("train");
  const ComponentConfig* dev = c.find_data("dev");
  REQUIRE(train != nullptr);
  REQUIRE(dev != nullptr);
  CHECK(c.find_data("test") == nullptr);
  CHECK(train->section == "data.train");
  CHECK(train->kind == PluginKind::Dataset);
  CHECK(train->plugin == "asterisk");
  CHECK(train->options.get_strings("languages") == std::vector<std::string>{"en", "es"});
  CHECK(train->options.origin("languages") == "exp.toml:7:13");
  CHECK(train->options.get_int("max_per_language") == 3);
  CHECK(train->options.get_string("split") == "train");  // the plugin's default
  CHECK(train->options.origin("split") == "default");
  CHECK(dev->options.get_string("split") == "dev");
  // Core keys of a data table go to `core`, not to the plugin.
  CHECK(train->core.get_float("batch_seconds") == 160.0);
  CHECK(train->core.get_int("max_batch") == 64);
  CHECK(train->core.get_bool("shuffle"));
  CHECK_FALSE(train->options.has("batch_seconds"));
  CHECK_FALSE(train->core.has("languages"));

  const auto& enc = c.speech_encoder;
  CHECK(enc.section == "model.speech_encoder");
  CHECK(enc.name == "speech_encoder");
  CHECK(enc.kind == PluginKind::Encoder);
  CHECK(enc.plugin == "conformer");
  CHECK(enc.options.get_int("d_model") == 32);
  CHECK(enc.options.origin("d_model") == "exp.toml:16:11");
  CHECK(enc.options.get_int("heads") == 2);
  CHECK(enc.options.origin("heads") == "exp.toml:17:9");
  // Every option of the schema is present; those not written have the plugin's defaults.
  const auto& schema = registry().get(PluginKind::Encoder, "conformer", "t").descriptor.options;
  for (const auto& spec : schema.specs()) CHECK(enc.options.has(spec.name));
  CHECK(enc.options.entries().size() == schema.specs().size());
  CHECK(enc.options.get_int("layers") == 4);
  CHECK(enc.options.origin("layers") == "default");
  CHECK(enc.options.get_string("conv_norm") == "batch");
  CHECK(enc.options.get_float("dropout") == Approx(0.1));

  REQUIRE(c.objectives.size() == 1);
  CHECK(c.objectives[0].name == "ctc");
  CHECK(c.objectives[0].kind == PluginKind::Loss);
  CHECK(c.objectives[0].core.get_float("weight") == 1.0);
  CHECK(c.objectives[0].core.get_string("data") == "train");
  CHECK(c.objectives[0].options.get_float("dropout") == 0.0);
  REQUIRE(c.evaluators.size() == 1);
  CHECK(c.evaluators[0].core.get_int("every") == 0);
  CHECK(c.evaluators[0].options.get_string("predictor") == "ctc");

  CHECK(c.trainer.steps() == 10);
  CHECK(c.trainer.source.origin("steps") == "exp.toml:28:9");
  CHECK(c.trainer.lr() == 0.002);
  CHECK(c.trainer.warmup_steps() == 500);
  CHECK(c.trainer.device() == "auto");
  for (const auto& spec : TrainerOptions::schema().specs()) CHECK(c.trainer.source.has(spec.name));
  for (const auto& spec : FrontendOptions::schema().specs()) CHECK(c.frontend.source.has(spec.name));
  CHECK(c.frontend.sample_rate() == 16000);
  CHECK(c.frontend.num_mel_bins() == 80);
  CHECK(c.plugin_paths.empty());
}

TEST_CASE("the experiment name defaults to the file's stem", "[config]") {
  auto c = ExperimentFile::parse_text(with_line(2, ""), "some/dir/my_run.toml").resolve(lookup());
  CHECK(c.name == "my_run");
}

TEST_CASE("a TOML syntax error reports file:line:column", "[config][errors]") {
  auto msg = config_error(with_line(17, "heads = = 2"));
  INFO(msg);
  CHECK(starts_at_line(msg, 17));
  CHECK_THAT(msg, Contains("TOML syntax error"));

  msg = config_error(with_line(24, "plugin = \"asr"));  // unterminated string
  INFO(msg);
  CHECK(starts_at_line(msg, 24));

  msg = config_error(insert_line(30, "[trainer]"));  // the table defined twice
  INFO(msg);
  CHECK(starts_at_line(msg, 30));
}

TEST_CASE("an unknown key names its place, the key and the allowed keys", "[config][errors]") {
  auto msg = config_error(insert_line(18, "d_modle = 64"));
  INFO(msg);
  CHECK(starts_at_line(msg, 18));
  CHECK_THAT(msg, Contains("unknown key 'd_modle'") && Contains("[model.speech_encoder]"));
  CHECK_THAT(msg, Contains("conformer"));
  CHECK_THAT(msg, Contains("Allowed keys:") && Contains("d_model") && Contains("kernel_size") && Contains("plugin"));
  // A misspelling gets a suggestion, and the column is the key's (1), not its value's.
  CHECK_THAT(msg, Contains("Did you mean 'd_model'?"));
  CHECK_THAT(msg, Contains(":18:1:"));
  msg = config_error(insert_line(18, "  kernal_size = 7"));
  CHECK_THAT(msg, Contains(":18:3:") && Contains("Did you mean 'kernel_size'?"));
  // Nothing close: no suggestion.
  msg = config_error(insert_line(18, "xyzzy_plugh = 1"));
  CHECK_THAT(msg, !Contains("Did you mean"));

  // In a core section too.
  msg = config_error(insert_line(30, "learning_rate = 0.1"));
  INFO(msg);
  CHECK(starts_at_line(msg, 30));
  CHECK_THAT(msg, Contains("'learning_rate'") && Contains("[trainer]") && Contains("lr") && Contains("warmup_steps"));

  // In a data table the allowed keys are the core's and the plugin's.
  msg = config_error(insert_line(9, "language = \"en\""));
  INFO(msg);
  CHECK(starts_at_line(msg, 9));
  CHECK_THAT(msg, Contains("'language'") && Contains("[data.train]") && Contains("languages") &&
                      Contains("batch_seconds"));
}

TEST_CASE("unknown sections are refused", "[config][errors]") {
  auto msg = config_error(insert_line(30, "[optimizer]"));
  INFO(msg);
  CHECK_THAT(msg, Contains("unknown section 'optimizer'") && Contains("Allowed sections") && Contains("trainer"));
  CHECK_THAT(msg, StartsWith("exp.toml"));
  CHECK_THAT(msg, !Contains("Did you mean"));
  msg = config_error(insert_line(30, "[trainr]"));
  CHECK_THAT(msg, Contains("unknown section 'trainr'. Did you mean 'trainer'?"));

  msg = config_error(insert_line(19, "[model.text_encoder]\nplugin = \"conformer\"\n"));
  INFO(msg);
  CHECK_THAT(msg, Contains("model.text_encoder") && Contains("speech_encoder"));

  msg = config_error(insert_line(1, "steps = 3"));  // a key outside any table
  INFO(msg);
  CHECK(starts_at_line(msg, 1));
  CHECK_THAT(msg, Contains("'steps'"));
}

TEST_CASE("a value of the wrong type names its place and both types", "[config][errors]") {
  auto msg = config_error(with_line(16, "d_model = \"big\""));
  INFO(msg);
  CHECK(starts_at_line(msg, 16));
  CHECK_THAT(msg, Contains("[model.speech_encoder] d_model") && Contains("expected integer, got string"));

  msg = config_error(with_line(28, "steps = 2.5"));
  INFO(msg);
  CHECK(starts_at_line(msg, 28));
  CHECK_THAT(msg, Contains("steps") && Contains("expected integer, got float"));

  msg = config_error(with_line(7, "languages = \"en\""));
  INFO(msg);
  CHECK(starts_at_line(msg, 7));
  CHECK_THAT(msg, Contains("languages") && Contains("list of strings"));

  msg = config_error(with_line(7, "languages = [\"en\", 3]"));
  INFO(msg);
  CHECK(starts_at_line(msg, 7));
  CHECK_THAT(msg, Contains("integer in it"));

  // An integer is fine where a float is expected.
  auto c = resolve(with_line(29, "lr = 1"));
  CHECK(c.trainer.lr() == 1.0);

  // A section that is not a table.
  msg = config_error(insert_line(1, "frontend = 3"));
  INFO(msg);
  CHECK(starts_at_line(msg, 1));
  CHECK_THAT(msg, Contains("'frontend' must be a table"));
}

TEST_CASE("a choice outside the allowed values is refused with the choices", "[config][errors]") {
  auto msg = config_error(insert_line(18, "conv_norm = \"instance\""));
  INFO(msg);
  CHECK(starts_at_line(msg, 18));
  CHECK_THAT(msg, Contains("conv_norm") && Contains("'instance' is not one of: batch, group, layer"));

  msg = config_error(with_line(12, "split = \"validation\""));
  INFO(msg);
  CHECK(starts_at_line(msg, 12));
  CHECK_THAT(msg, Contains("'validation'") && Contains("train, dev, test, all"));
}

TEST_CASE("values outside their range are refused", "[config][errors]") {
  auto msg = config_error(insert_line(18, "dropout = 1.5"));
  INFO(msg);
  CHECK(starts_at_line(msg, 18));
  CHECK_THAT(msg, Contains("dropout") && Contains("1.5 is above the maximum 1"));

  msg = config_error(insert_line(18, "layers = -1"));
  INFO(msg);
  CHECK(starts_at_line(msg, 18));
  CHECK_THAT(msg, Contains("layers") && Contains("-1 is below the minimum 0"));

  msg = config_error(with_line(29, "lr = -0.001"));
  INFO(msg);
  CHECK(starts_at_line(msg, 29));
  CHECK_THAT(msg, Contains("[trainer] lr") && Contains("below the minimum 0"));

  // The bounds themselves are allowed.
  auto c = resolve(insert_line(18, "dropout = 1.0"));
  CHECK(c.speech_encoder.options.get_float("dropout") == 1.0);
}

TEST_CASE("an unknown plugin name lists the available plugins of that kind", "[config][errors]") {
  auto msg = config_error(with_line(15, "plugin = \"transformer\""));
  INFO(msg);
  CHECK(starts_at_line(msg, 15));
  CHECK_THAT(msg, Contains("unknown encoder plugin 'transformer'") && Contains("Available: ") &&
                      Contains("conformer"));

  msg = config_error(with_line(6, "plugin = \"librispeech\""));
  INFO(msg);
  CHECK(starts_at_line(msg, 6));
  CHECK_THAT(msg, Contains("'librispeech'") && Contains("asterisk") && Contains("manifest"));

  // A table without plugin = "..." says what it needs.
  msg = config_error(with_line(20, ""));
  INFO(msg);
  CHECK_THAT(msg, Contains("[objectives.ctc] needs plugin = "));
}

TEST_CASE("overrides: --set changes a value and the origin says --set", "[config][set]") {
  auto c = resolve(base(), {"trainer.steps=5"});
  CHECK(c.trainer.steps() == 5);
  CHECK(c.trainer.source.origin("steps") == "--set trainer.steps");
  CHECK_THAT(c.resolved_toml, Contains("\nsteps = 5\n"));
  const OptionValue* v = flat_value(c, "trainer.steps");
  REQUIRE(v != nullptr);
  REQUIRE(std::holds_alternative<std::int64_t>(*v));
  CHECK(std::get<std::int64_t>(*v) == 5);

  // A key the file does not have, in a table it has, and a list value.
  c = resolve(base(), {"model.speech_encoder.layers=2", "data.dev.languages=[\"ru\"]", "trainer.lr=3e-4"});
  CHECK(c.speech_encoder.options.get_int("layers") == 2);
  CHECK(c.speech_encoder.options.origin("layers") == "--set model.speech_encoder.layers");
  CHECK(c.find_data("dev")->options.get_strings("languages") == std::vector<std::string>{"ru"});
  CHECK(c.trainer.lr() == Approx(3e-4));
  // Later overrides win.
  c = resolve(base(), {"trainer.steps=5", "trainer.steps=6"});
  CHECK(c.trainer.steps() == 6);
}

TEST_CASE("overrides: --set takes a bare word as a string", "[config][set]") {
  const std::string minimal = join({
      "[data.train]",
      "plugin = \"asterisk\"",
      "[model.speech_encoder]",
      "plugin = \"conformer\"",
      "[objectives.ctc]",
      "plugin = \"ctc\"",
  });
  auto c = resolve(minimal, {"data.train.plugin=manifest", "data.train.path=/data/train.tsv"});
  const ComponentConfig* train = c.find_data("train");
  REQUIRE(train != nullptr);
  CHECK(train->plugin == "manifest");
  CHECK(train->options.get_string("path") == "/data/train.tsv");
  CHECK(train->options.origin("path") == "--set data.train.path");
  CHECK(train->options.get_bool("lowercase"));

  // The override is validated like the file: the base's asterisk keys are not manifest options.
  auto msg = config_error(base(), {"data.train.plugin=manifest"});
  INFO(msg);
  CHECK_THAT(msg, Contains("'languages'") && Contains("manifest") && Contains("Allowed keys") && Contains("path"));

  // A new section from --set alone.
  c = resolve(base(), {"experiment.description=hello"});
  CHECK(c.description == "hello");
}

TEST_CASE("bad --set overrides are ConfigErrors naming the override", "[config][set][errors]") {
  for (const std::string bad : {"trainer.steps", "=5", "trainer.steps.x=5", ".=5"}) {
    INFO(bad);
    auto msg = config_error(base(), {bad});
    CHECK_THAT(msg, StartsWith("--set " + bad));
  }
  auto msg = config_error(base(), {"trainer.steps"});
  CHECK_THAT(msg, Contains("key=value"));

  // A value of the wrong type from --set: the origin is the override.
  msg = config_error(base(), {"trainer.steps=many"});
  INFO(msg);
  CHECK_THAT(msg, StartsWith("--set trainer.steps: [trainer] steps: expected integer, got string"));
  msg = config_error(base(), {"trainer.bogus=1"});
  INFO(msg);
  CHECK_THAT(msg, StartsWith("--set trainer.bogus") && Contains("unknown key 'bogus'"));
}

// Known bug (reported): the key is split with std::getline, which drops a trailing empty part, so
// "trainer.=5" replaces the whole [trainer] table with 5, and "trainer..steps=5" creates a table named "".
// Both are then reported against the experiment file instead of the override.
TEST_CASE("overrides: an empty part in a --set key is refused naming the override", "[config][set][errors]") {
  for (const std::string bad : {"trainer.=5", "trainer..steps=5"}) {
    INFO(bad);
    auto msg = config_error(base(), {bad});
    CHECK_THAT(msg, StartsWith("--set " + bad));
  }
}

TEST_CASE("resolved_toml parses back to the same configuration", "[config][roundtrip]") {
  for (const auto& overrides : std::vector<std::vector<std::string>>{
           {}, {"trainer.steps=5", "trainer.lr=1e-4", "experiment.description=a \"quoted\" word"}}) {
    auto first = resolve(base(), overrides);
    REQUIRE_FALSE(first.resolved_toml.empty());
    INFO(first.resolved_toml);
    ExperimentConfig second;
    REQUIRE_NOTHROW(second = resolve(first.resolved_toml));
    CHECK(second.resolved_toml == first.resolved_toml);
    CHECK(second.name == first.name);
    CHECK(second.seed == first.seed);
    CHECK(second.description == first.description);
    REQUIRE(second.flat.size() == first.flat.size());
    for (std::size_t i = 0; i < first.flat.size(); ++i) {
      INFO(first.flat[i].first);
      CHECK(second.flat[i].first == first.flat[i].first);
      CHECK(to_toml(second.flat[i].second) == to_toml(first.flat[i].second));
      CHECK(second.flat[i].second.index() == first.flat[i].second.index());
    }
  }
  // Everything the file left out is written out, e.g. a tiny float default and the frontend.
  auto c = resolve(base());
  CHECK_THAT(c.resolved_toml, Contains("[frontend]") && Contains("sample_rate = 16000"));
  CHECK_THAT(c.resolved_toml, Contains("adam_eps = 1e-"));
  CHECK_THAT(c.resolved_toml, Contains("[model.speech_encoder]\nplugin = \"conformer\"\n"));
  CHECK_THAT(c.resolved_toml, Contains("layers = 4"));
}

TEST_CASE("flat params carry every resolved value with its type", "[config]") {
  auto c = resolve(base());
  const OptionValue* lr = flat_value(c, "trainer.lr");
  REQUIRE(lr != nullptr);
  REQUIRE(std::holds_alternative<double>(*lr));
  CHECK(std::get<double>(*lr) == 0.002);

  const OptionValue* steps = flat_value(c, "trainer.steps");
  REQUIRE(steps != nullptr);
  CHECK(std::get<std::int64_t>(*steps) == 10);

  const OptionValue* langs = flat_value(c, "data.train.languages");
  REQUIRE(langs != nullptr);
  CHECK(std::get<std::vector<std::string>>(*langs) == std::vector<std::string>{"en", "es"});

  const OptionValue* plugin = flat_value(c, "model.speech_encoder.plugin");
  REQUIRE(plugin != nullptr);
  CHECK(std::get<std::string>(*plugin) == "conformer");

  const OptionValue* shuffle = flat_value(c, "data.dev.shuffle");
  REQUIRE(shuffle != nullptr);
  CHECK(std::get<bool>(*shuffle) == true);

  CHECK(flat_value(c, "experiment.seed") != nullptr);
  CHECK(flat_value(c, "frontend.num_mel_bins") != nullptr);
  CHECK(flat_value(c, "model.speech_encoder.layers") != nullptr);  // defaults too
  CHECK(flat_value(c, "objectives.ctc.weight") != nullptr);
  CHECK(flat_value(c, "evaluators.asr.predictor") != nullptr);

  // Keys are unique.
  std::vector<std::string> keys;
  for (const auto& [k, v] : c.flat) keys.push_back(k);
  std::sort(keys.begin(), keys.end());
  CHECK(std::adjacent_find(keys.begin(), keys.end()) == keys.end());
}

TEST_CASE("objectives and evaluators must name an existing data table", "[config][errors]") {
  auto msg = config_error(with_line(21, "data = \"training\""));
  INFO(msg);
  CHECK(starts_at_line(msg, 21));
  CHECK_THAT(msg, Contains("[objectives.ctc] data") && Contains("no [data.training] table") &&
                      Contains("defined: dev, train"));

  // The evaluator's default data name is "dev": without that table the error says where it came from.
  auto lines = kBaseLines;
  lines[24] = "";  // drop data = "dev"
  lines[9] = "[data.valid]";
  msg = config_error(join(lines));
  INFO(msg);
  CHECK_THAT(msg, StartsWith("default: [evaluators.asr] data") && Contains("no [data.dev] table"));
}

TEST_CASE("the model and at least one objective are required", "[config][errors]") {
  auto lines = kBaseLines;
  lines[13] = lines[14] = lines[15] = lines[16] = "";
  auto msg = config_error(join(lines));
  CHECK_THAT(msg, StartsWith("exp.toml") && Contains("[model.speech_encoder]"));

  lines = kBaseLines;
  lines[18] = lines[19] = lines[20] = "";
  msg = config_error(join(lines));
  CHECK_THAT(msg, StartsWith("exp.toml") && Contains("[objectives.<name>]"));

  msg = config_error(insert_line(19, "[data.\"has space\"]\nplugin = \"asterisk\"\n"));
  INFO(msg);
  CHECK_THAT(msg, Contains("data.has space") && Contains("letters, digits"));
}

TEST_CASE("files on disk: parse, plugin paths relative to the file, a missing file", "[config]") {
  const fs::path dir = fs::temp_directory_path() / ("wbtest_config_" + std::to_string(std::random_device{}()));
  fs::create_directories(dir / "sub");
  const fs::path file = dir / "sub" / "e.toml";
  {
    std::ofstream out(file);
    out << "[plugins]\npaths = [\"my_plugins\", \"/opt/wb\"]\n" << base();
  }
  auto parsed = ExperimentFile::parse(file.string(), {"trainer.steps=3"});
  auto paths = parsed.plugin_paths();
  REQUIRE(paths.size() == 2);
  CHECK(fs::path(paths[0]) == fs::absolute(dir / "sub" / "my_plugins").lexically_normal());
  CHECK(paths[1] == "/opt/wb");
  auto c = parsed.resolve(lookup());
  CHECK(c.plugin_paths == paths);
  CHECK(c.trainer.steps() == 3);
  CHECK(c.speech_encoder.options.origin("d_model") == file.string() + ":18:11");

  const std::string missing = (dir / "nope.toml").string();
  try {
    ExperimentFile::parse(missing);
    FAIL("no error for a missing file");
  } catch (const ConfigError& e) {
    CHECK_THAT(std::string(e.what()), Contains(missing) && Contains("cannot open"));
  }
  fs::remove_all(dir);
}
