// The plugin registry: discovery of the built-in plugins, building components through them, and
// refusing broken libraries (tests/plugins/) with messages that name the file and the cause.
#include <torch/types.h>
#include <torch/utils.h>
#include <unistd.h>

#include <cmath>

#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "workbench/encoder.h"
#include "workbench/error.h"
#include "workbench/loss.h"
#include "workbench/plugin.h"
#include "workbench/registry.h"
#include "workbench/vocabulary.h"

// Catch2 after torch: glog's CHECK would otherwise replace Catch's.
#include <catch2/catch.hpp>

namespace fs = std::filesystem;
using namespace workbench;
using Catch::Matchers::Contains;

namespace {

const std::string kNotAPlugin = WBTEST_NOT_A_PLUGIN_PATH;
const std::string kWrongApi = WBTEST_WRONG_API_PATH;
const std::string kDuplicateCtc = WBTEST_DUPLICATE_CTC_PATH;
const std::string kThrowingFactory = WBTEST_THROWING_FACTORY_PATH;
const std::string kThrowingDescribe = WBTEST_THROWING_DESCRIBE_PATH;
const std::string kWrongTorch = WBTEST_WRONG_TORCH_PATH;

/// The message of the PluginError that `f` throws (fails the test if it throws nothing or another type).
template <typename F>
std::string plugin_error(F&& f) {
  try {
    f();
  } catch (const PluginError& e) {
    return e.what();
  } catch (const std::exception& e) {
    FAIL("expected a PluginError, got another exception: " << e.what());
  }
  FAIL("expected a PluginError, nothing was thrown");
  return {};
}

template <typename F>
std::string config_error(F&& f) {
  try {
    f();
  } catch (const ConfigError& e) {
    return e.what();
  } catch (const std::exception& e) {
    FAIL("expected a ConfigError, got another exception: " << e.what());
  }
  FAIL("expected a ConfigError, nothing was thrown");
  return {};
}

/// Every option of a plugin at its default, as the config resolver would deliver them.
Options defaults_of(const LoadedPlugin& plugin, const std::string& section) {
  Options o(section);
  for (const auto& spec : plugin.descriptor.options.specs()) o.set(spec.name, spec.default_value, "default");
  return o;
}

Options tiny_conformer_options(const Registry& registry) {
  Options o = defaults_of(registry.get(PluginKind::Encoder, "conformer", "test"), "model.speech_encoder");
  o.set("d_model", std::int64_t{32}, "test");
  o.set("heads", std::int64_t{2}, "test");
  o.set("layers", std::int64_t{1}, "test");
  o.set("ffn_dim", std::int64_t{64}, "test");
  o.set("kernel_size", std::int64_t{7}, "test");
  o.set("subsampling_channels", std::int64_t{8}, "test");
  return o;
}

std::string canonical(const std::string& path) { return fs::canonical(path).string(); }

}  // namespace

TEST_CASE("the built-in plugin directory is next to the test executables", "[registry]") {
  const std::string dir = Registry::builtin_plugin_dir();
  CHECK(fs::path(dir) == fs::path(WORKBENCH_BINARY_DIR "/lib/workbench/plugins").lexically_normal());
  REQUIRE(fs::is_directory(dir));
  auto paths = Registry::default_search_paths();
  REQUIRE_FALSE(paths.empty());
  CHECK(paths.front() == canonical(dir));
}

TEST_CASE("loading the built-in plugins finds each with its kind", "[registry]") {
  Registry registry;
  registry.load_directory(Registry::builtin_plugin_dir());

  struct Expected {
    PluginKind kind;
    const char* name;
  };
  for (const auto& e : {Expected{PluginKind::Encoder, "conformer"}, Expected{PluginKind::Loss, "ctc"},
                        Expected{PluginKind::Dataset, "asterisk"}, Expected{PluginKind::Dataset, "manifest"},
                        Expected{PluginKind::Evaluator, "asr"}}) {
    INFO(to_string(e.kind) << " " << e.name);
    const LoadedPlugin* p = registry.find(e.kind, e.name);
    REQUIRE(p != nullptr);
    CHECK(p->descriptor.kind == e.kind);
    CHECK(p->descriptor.name == e.name);
    CHECK_FALSE(p->descriptor.version.empty());
    CHECK_FALSE(p->descriptor.description.empty());
    CHECK(fs::path(p->path).is_absolute());
    CHECK(fs::path(p->path).filename() == std::string(e.name) + ".so");
    CHECK(p->abi.magic == kPluginMagic);
    CHECK(p->abi.api_version == kPluginApiVersion);
    CHECK(std::string(p->abi.torch_version) == torch_header_version());
    // The same name under another kind is not found.
    CHECK(registry.find(e.kind == PluginKind::Loss ? PluginKind::Encoder : PluginKind::Loss, e.name) == nullptr);
  }
  // Each name exactly once, and nothing from the test-plugin folders.
  std::multiset<std::string> names;
  for (const auto* p : registry.plugins()) {
    names.insert(p->descriptor.name);
    CHECK(p->path.find("test-plugins") == std::string::npos);
  }
  for (const char* n : {"conformer", "ctc", "asterisk", "manifest", "asr"}) CHECK(names.count(n) == 1);

  // Loading the same directory again is a no-op, not a duplicate.
  const auto before = registry.plugins().size();
  REQUIRE_NOTHROW(registry.load_directory(Registry::builtin_plugin_dir()));
  CHECK(registry.plugins().size() == before);
}

TEST_CASE("LoadedPlugin::sha256 is the hex digest of the .so file", "[registry]") {
  Registry registry;
  const LoadedPlugin& p = registry.load_file(Registry::builtin_plugin_dir() + "/ctc.so");
  const std::string& h = p.sha256();
  CHECK(h.size() == 64);
  CHECK(h.find_first_not_of("0123456789abcdef") == std::string::npos);
  CHECK(&p.sha256() == &h);  // computed once
}

TEST_CASE("a conformer built through the registry has the right shapes", "[registry][conformer]") {
  Registry registry;
  registry.load_directory(Registry::builtin_plugin_dir());
  BuildContext ctx;
  ctx.input_dim = 80;
  torch::manual_seed(0);
  auto encoder = registry.create_as<Encoder>(PluginKind::Encoder, "conformer", tiny_conformer_options(registry), ctx);
  REQUIRE(encoder);
  CHECK(encoder->output_dim() == 32);
  std::int64_t params = 0;
  for (const auto& p : encoder->module().parameters()) params += p.numel();
  CHECK(params > 0);

  encoder->module().eval();
  torch::NoGradGuard no_grad;
  auto features = torch::randn({2, 100, 80});
  auto lengths = torch::tensor(std::vector<std::int64_t>{100, 61});
  auto out = encoder->forward(features, lengths);
  REQUIRE(out.x.dim() == 3);
  CHECK(out.x.size(0) == 2);
  CHECK(out.x.size(1) == 24);  // ((100 - 1) / 2 - 1) / 2
  CHECK(out.x.size(2) == 32);
  CHECK(out.x.dtype() == torch::kFloat32);
  CHECK(torch::isfinite(out.x).all().item<bool>());
  REQUIRE(out.lengths.dtype() == torch::kInt64);
  CHECK(out.lengths[0].item<std::int64_t>() == 24);
  CHECK(out.lengths[1].item<std::int64_t>() == ((61 - 1) / 2 - 1) / 2);  // 14

  // embed alone gives the same subsampled shape.
  auto embedded = encoder->embed(features, lengths);
  CHECK(embedded.x.sizes() == out.x.sizes());
  CHECK(torch::equal(embedded.lengths, out.lengths));

  for (std::int64_t T : {7, 8, 9, 10, 11, 57}) {
    INFO("T = " << T);
    auto o = encoder->forward(torch::randn({1, T, 80}), torch::tensor(std::vector<std::int64_t>{T}));
    CHECK(o.x.size(1) == ((T - 1) / 2 - 1) / 2);
    CHECK(o.lengths[0].item<std::int64_t>() == ((T - 1) / 2 - 1) / 2);
  }

  // Clips shorter than the subsampling's receptive field (7 frames) do not crash: they come out with
  // length 0 and finite values.
  for (std::int64_t T : {1, 3, 6}) {
    INFO("T = " << T);
    auto o = encoder->forward(torch::randn({2, T, 80}), torch::tensor(std::vector<std::int64_t>{T, 1}));
    CHECK(o.x.size(1) == 1);
    CHECK(torch::isfinite(o.x).all().item<bool>());
    CHECK(o.lengths[0].item<std::int64_t>() == 0);
    CHECK(o.lengths[1].item<std::int64_t>() == 0);
  }
}

TEST_CASE("a plugin's ConfigError passes through create unchanged", "[registry][conformer]") {
  Registry registry;
  registry.load_directory(Registry::builtin_plugin_dir());
  BuildContext ctx;
  ctx.input_dim = 80;
  Options even = tiny_conformer_options(registry);
  even.set("kernel_size", std::int64_t{8}, "exp.toml:7:15");
  auto msg = config_error([&] { registry.create(PluginKind::Encoder, "conformer", even, ctx); });
  CHECK_THAT(msg, Contains("exp.toml:7:15") && Contains("kernel_size") && Contains("odd"));

  Options heads = tiny_conformer_options(registry);
  heads.set("heads", std::int64_t{3}, "--set model.speech_encoder.heads");
  msg = config_error([&] { registry.create(PluginKind::Encoder, "conformer", heads, ctx); });
  CHECK_THAT(msg, Contains("--set model.speech_encoder.heads") && Contains("divisible"));
}

TEST_CASE("create_as refuses an object of the wrong interface", "[registry]") {
  Registry registry;
  registry.load_directory(Registry::builtin_plugin_dir());
  BuildContext ctx;
  ctx.input_dim = 80;
  const std::string path = registry.get(PluginKind::Encoder, "conformer", "test").path;
  auto msg = plugin_error(
      [&] { registry.create_as<Loss>(PluginKind::Encoder, "conformer", tiny_conformer_options(registry), ctx); });
  CHECK_THAT(msg, Contains("conformer") && Contains(path) && Contains("does not implement"));
}

TEST_CASE("objects made by a plugin keep working after their Registry is gone", "[registry]") {
  std::shared_ptr<Encoder> encoder;
  std::shared_ptr<Loss> loss;
  {
    Registry registry;
    registry.load_directory(Registry::builtin_plugin_dir());
    BuildContext ctx;
    ctx.input_dim = 80;
    encoder = registry.create_as<Encoder>(PluginKind::Encoder, "conformer", tiny_conformer_options(registry), ctx);
    BuildContext loss_ctx;
    loss_ctx.model_dim = encoder->output_dim();
    loss_ctx.vocabulary = std::make_shared<const Vocabulary>(Vocabulary::from_texts({"ab"}));
    loss = registry.create_as<Loss>(PluginKind::Loss, "ctc",
                                    defaults_of(*registry.find(PluginKind::Loss, "ctc"), "objectives.ctc"), loss_ctx);
  }  // the Registry (and its LoadedPlugin records) is destroyed here
  REQUIRE(encoder);
  REQUIRE(loss);
  // Virtual calls run code in the plugin libraries.
  CHECK(encoder->output_dim() == 32);
  CHECK((loss->accepts() == std::vector<BatchKind>{BatchKind::Paired}));
  auto* predictor = dynamic_cast<FramePredictor*>(loss.get());
  REQUIRE(predictor != nullptr);
  CHECK(predictor->vocabulary().size() == 4);

  torch::NoGradGuard no_grad;
  encoder->module().eval();
  loss->module()->eval();
  Batch batch;
  batch.features = torch::randn({1, 40, 80});
  batch.feature_lengths = torch::tensor(std::vector<std::int64_t>{40});
  batch.tokens = torch::tensor(std::vector<std::int64_t>{2, 3}).unsqueeze(0);
  batch.token_lengths = torch::tensor(std::vector<std::int64_t>{2});
  ModelParts model;
  model.speech_encoder = encoder;
  auto [log_probs, lengths] = predictor->frame_log_probs(batch, model);
  CHECK(log_probs.sizes() == torch::IntArrayRef({1, 9, 4}));
  auto out = loss->compute(batch, model, StepInfo{});
  CHECK(std::isfinite(out.loss.item<double>()));
  // Dropping the objects last runs their destructors, also plugin code, after the registry is gone.
  encoder.reset();
  loss.reset();
}

// ---------------------------------------------------------------------------------------------------
// Refusals. Every message must name the file and say what is wrong.

TEST_CASE("refused: a shared library that is not a plugin", "[registry][errors]") {
  REQUIRE(fs::exists(kNotAPlugin));
  Registry registry;
  auto msg = plugin_error([&] { registry.load_file(kNotAPlugin); });
  CHECK_THAT(msg, Contains(kNotAPlugin));
  CHECK_THAT(msg, Contains("not a workbench plugin") && Contains("workbench_plugin_abi"));
  CHECK(registry.plugins().empty());

  // load_directory on a folder holding it fails the same way: every .so there must be a plugin.
  msg = plugin_error([&] { registry.load_directory(fs::path(kNotAPlugin).parent_path().string()); });
  CHECK_THAT(msg, Contains("wbtest_not_a_plugin.so") && Contains("not a workbench plugin"));
}

TEST_CASE("refused: a plugin built for another plugin API version", "[registry][errors]") {
  REQUIRE(fs::exists(kWrongApi));
  Registry registry;
  auto msg = plugin_error([&] { registry.load_file(kWrongApi); });
  CHECK_THAT(msg, Contains(kWrongApi));
  CHECK_THAT(msg, Contains("API version 999"));
  CHECK_THAT(msg, Contains("API version " + std::to_string(kPluginApiVersion)));
  CHECK(kPluginApiVersion == 8);
  CHECK(registry.plugins().empty());
}

TEST_CASE("refused: a plugin built against another LibTorch", "[registry][errors]") {
  REQUIRE(fs::exists(kWrongTorch));
  Registry registry;
  auto msg = plugin_error([&] { registry.load_file(kWrongTorch); });
  CHECK_THAT(msg, Contains(kWrongTorch) && Contains("LibTorch 0.0.1") && Contains(torch_header_version()));
  CHECK(registry.plugins().empty());
}

TEST_CASE("refused: a second plugin with the same kind and name", "[registry][errors]") {
  REQUIRE(fs::exists(kDuplicateCtc));
  Registry registry;
  registry.load_directory(Registry::builtin_plugin_dir());
  const std::string builtin_ctc = registry.get(PluginKind::Loss, "ctc", "test").path;
  const auto before = registry.plugins().size();
  auto msg = plugin_error([&] { registry.load_file(kDuplicateCtc); });
  CHECK_THAT(msg, Contains("duplicate") && Contains("loss") && Contains("'ctc'"));
  CHECK_THAT(msg, Contains(builtin_ctc));
  CHECK_THAT(msg, Contains(kDuplicateCtc));
  CHECK(registry.plugins().size() == before);
  CHECK(registry.get(PluginKind::Loss, "ctc", "test").path == builtin_ctc);

  // On its own it is a perfectly good plugin.
  Registry alone;
  const LoadedPlugin& p = alone.load_file(kDuplicateCtc);
  CHECK(p.descriptor.kind == PluginKind::Loss);
  CHECK(p.descriptor.name == "ctc");
}

TEST_CASE("refused: a plugin whose factory throws", "[registry][errors]") {
  REQUIRE(fs::exists(kThrowingFactory));
  Registry registry;
  const LoadedPlugin& p = registry.load_file(kThrowingFactory);  // loading is fine
  CHECK(p.descriptor.name == "throwing_factory");
  CHECK(p.path == kThrowingFactory);
  auto msg = plugin_error([&] {
    registry.create(PluginKind::Loss, "throwing_factory", defaults_of(p, "objectives.boom"), BuildContext{});
  });
  CHECK_THAT(msg, Contains("throwing_factory") && Contains(kThrowingFactory));
  CHECK_THAT(msg, Contains("deliberate failure inside the factory"));
  CHECK_THAT(msg, Contains("objectives.boom"));
}

TEST_CASE("refused: a plugin whose descriptor function throws", "[registry][errors]") {
  REQUIRE(fs::exists(kThrowingDescribe));
  Registry registry;
  auto msg = plugin_error([&] { registry.load_file(kThrowingDescribe); });
  CHECK_THAT(msg, Contains(kThrowingDescribe) && Contains("deliberate failure inside describe()"));
  CHECK(registry.plugins().empty());
}

TEST_CASE("refused: a file that does not exist, a folder that does not exist, a file that is no ELF",
          "[registry][errors]") {
  Registry registry;
  const std::string missing = WORKBENCH_BINARY_DIR "/test-plugins/no_such_plugin.so";
  auto msg = plugin_error([&] { registry.load_file(missing); });
  CHECK_THAT(msg, Contains(missing) && Contains("does not exist"));

  const std::string missing_dir = WORKBENCH_BINARY_DIR "/test-plugins/no_such_folder";
  msg = plugin_error([&] { registry.load_directory(missing_dir); });
  CHECK_THAT(msg, Contains(missing_dir));

  // A file with a .so name that dlopen refuses: the message carries dlopen's reason.
  const fs::path garbage = fs::temp_directory_path() / ("wbtest_garbage_" + std::to_string(::getpid()) + ".so");
  {
    std::ofstream out(garbage);
    out << "this is not an ELF file\n";
  }
  msg = plugin_error([&] { registry.load_file(garbage.string()); });
  fs::remove(garbage);
  CHECK_THAT(msg, Contains(garbage.string()) && Contains("cannot load plugin"));
  CHECK_THAT(msg, Contains("ELF") || Contains("too short") || Contains("header"));
  CHECK(registry.plugins().empty());
}

TEST_CASE("unknown plugin names are ConfigErrors listing what is available", "[registry][errors]") {
  Registry registry;
  registry.load_directory(Registry::builtin_plugin_dir());
  auto msg = config_error([&] { registry.get(PluginKind::Encoder, "transformer", "exp.toml:12:10"); });
  CHECK_THAT(msg, Contains("exp.toml:12:10") && Contains("unknown encoder plugin 'transformer'"));
  CHECK_THAT(msg, Contains("Available: ") && Contains("conformer"));
  // Text embeddings are a kind of their own: not offered where an encoder goes.
  CHECK_THAT(msg, !Contains("char_embedding"));
  msg = config_error([&] { registry.get(PluginKind::TextEmbedding, "chars", "[model.text_embedding]"); });
  CHECK_THAT(msg, Contains("unknown text_embedding plugin 'chars'") && Contains("char_embedding") &&
                      Contains("sentencepiece_embedding"));

  msg = config_error([&] { registry.get(PluginKind::Dataset, "librispeech", "[data.train]"); });
  CHECK_THAT(msg, Contains("[data.train]") && Contains("'librispeech'"));
  CHECK_THAT(msg, Contains("asterisk") && Contains("manifest"));
  CHECK_THAT(msg, !Contains("conformer"));  // only plugins of the asked kind

  // create() goes through the same lookup.
  msg = config_error([&] { registry.create(PluginKind::Loss, "hubert", Options("objectives.mlm"), BuildContext{}); });
  CHECK_THAT(msg, Contains("[objectives.mlm]") && Contains("'hubert'") && Contains("ctc") && Contains("w2v_bert"));

  // An empty registry says so.
  Registry empty;
  msg = config_error([&] { empty.get(PluginKind::Loss, "ctc", "here"); });
  CHECK_THAT(msg, Contains("here") && Contains("'ctc'") && Contains("none"));
}
