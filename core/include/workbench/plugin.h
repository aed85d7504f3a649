#pragma once
// The plugin contract: what a plugin .so exports and how the core checks it before use.
//
// A plugin exports two symbols, both written by WORKBENCH_PLUGIN(describe_function):
//   * `workbench_plugin_abi`: a plain C struct (PluginAbi) that the loader reads *before* touching any
//     C++ type, so that a plugin built for another plugin API version, another LibTorch or another
//     C++ ABI is refused with both sides named instead of crashing (the ggml backend-loader habit);
//   * `workbench_describe_plugin`: a Boost.DLL alias of a function returning the PluginDescriptor
//     (kind, name, version, description, option schema and factory).
// Libraries stay loaded for the life of the process; every object a factory makes also holds its
// library, so nothing a plugin created can outlive its code.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <boost/config.hpp>
#include <boost/dll/alias.hpp>
#include <torch/version.h>

#include "workbench/component.h"
#include "workbench/options.h"

namespace workbench {

/// Bumped whenever a contract header (the installed headers under workbench/, the SDK) changes in a way
/// a built plugin would see: a layout, a virtual function, an inline body. tests/test_plugin_api.cpp
/// keeps a hash of those headers next to this number and fails when one changes without the other.
///   1: the first SDK.
///   2: capabilities connected before training (Loss::connect, Evaluator::connect, Connections) instead of
///      ModelParts::objectives and EvalContext::objectives; text embeddings are their own plugin kind;
///      describe_plugin<T>(). (BuildContext had also changed layout within 1 without a bump.)
///   3: the Transcriber (RNN-T) and UtteranceClassifier (language ID, intent) capabilities.
///   4: translation: Utterance::target, Batch::targets, BuildContext::training_targets, the Translator
///      capability, and EvalContext::examples (decoded examples kept in the run store).
///   5: BuildContext::on_bad_audio and skipped_audio, and load_utterance_audio(utterances, ctx): a dataset
///      can leave out the files it cannot decode ([data.<name>] on_bad_audio = "skip").
///   6: Loss::random_state and restore_random_state (resumable runs), and random_state.h; read_audio and
///      load_audio take a length limit (kMaxAudioSeconds) and refuse truncated files; invalid_utf8_at.
///   7: span_mask_frames draws on the lengths' device from torch's generator, without a std::mt19937_64
///      argument, and valid_frame_std (masking.h): no host round trip per step.
///   8: span_mask_text draws on the tokens' device from torch's generator, without a std::mt19937_64
///      argument, and TextMasking::spans is a tensor; sample_span_lengths (a tensor of lengths) replaces
///      sample_span_length (masking.h); TextMasking gains `positions` and `position_valid`; masked_prediction
///      and gather_positions (masked_prediction.h) are new.
constexpr std::uint32_t kPluginApiVersion = 8;
/// "WBPL": tells a workbench plugin from some other library that happens to export the symbol name.
constexpr std::uint32_t kPluginMagic = 0x4c504257;

/// What a plugin makes: an Encoder, a TextEmbedding, a Loss, a Dataset or an Evaluator.
enum class PluginKind { Encoder, TextEmbedding, Loss, Dataset, Evaluator };
const char* to_string(PluginKind kind);
/// Every kind, in the order above.
const std::vector<PluginKind>& all_plugin_kinds();
/// Parses "encoder", "text_embedding", "loss", "dataset", "evaluator"; throws std::invalid_argument
/// otherwise.
PluginKind plugin_kind_from_string(const std::string& text);

/// Plain-C block checked before anything else. Its layout never changes.
struct PluginAbi {
  std::uint32_t magic;
  std::uint32_t api_version;
  char torch_version[32];  ///< "MAJOR.MINOR.PATCH" of the LibTorch headers the plugin was built with
  std::int32_t cxx11_abi;  ///< _GLIBCXX_USE_CXX11_ABI of the plugin's build
};

/// Describes one plugin and knows how to build its component.
struct PluginDescriptor {
  PluginKind kind = PluginKind::Loss;
  std::string name;         ///< unique per kind, e.g. "conformer", "ctc"
  std::string version;      ///< the plugin's own version, recorded with every run
  std::string description;  ///< one line for `workbench plugins`
  OptionSchema options;
  /// Builds the component from validated options. May throw; the core reports the plugin and path.
  std::function<std::shared_ptr<Component>(const Options&, const BuildContext&)> create;
};

/// The descriptor of a plugin whose component is `T`, built as `T(options, context)`, or `T(options)`
/// when T has no such constructor. The usual describe() is then one statement:
///   PluginDescriptor describe() {
///     return describe_plugin<CtcLoss>(PluginKind::Loss, "ctc", "1.0.0", "CTC over characters",
///                                     OptionSchema().add_float("dropout", 0.0, "dropout before the head", 0, 1));
///   }
template <typename T>
PluginDescriptor describe_plugin(PluginKind kind, std::string name, std::string version, std::string description,
                                 OptionSchema options = OptionSchema()) {
  PluginDescriptor d;
  d.kind = kind;
  d.name = std::move(name);
  d.version = std::move(version);
  d.description = std::move(description);
  d.options = std::move(options);
  d.create = [](const Options& o, const BuildContext& c) -> std::shared_ptr<Component> {
    if constexpr (std::is_constructible_v<T, const Options&, const BuildContext&>)
      return std::make_shared<T>(o, c);
    else
      return std::make_shared<T>(o);
  };
  return d;
}

/// The LibTorch version these headers come from, "MAJOR.MINOR.PATCH".
std::string torch_header_version();

}  // namespace workbench

#define WORKBENCH_STRINGIFY_IMPL(x) #x
#define WORKBENCH_STRINGIFY(x) WORKBENCH_STRINGIFY_IMPL(x)

// Tests build deliberately broken plugins by overriding this.
#ifndef WORKBENCH_PLUGIN_API_VERSION_OVERRIDE
#define WORKBENCH_PLUGIN_API_VERSION_OVERRIDE ::workbench::kPluginApiVersion
#endif

/// Exports a plugin. `describe` is a function `workbench::PluginDescriptor describe()`.
/// Use once per plugin library, at namespace scope.
#define WORKBENCH_PLUGIN(describe)                                                                   \
  extern "C" BOOST_SYMBOL_EXPORT const ::workbench::PluginAbi workbench_plugin_abi;                \
  extern "C" const ::workbench::PluginAbi workbench_plugin_abi = {                                 \
      ::workbench::kPluginMagic, WORKBENCH_PLUGIN_API_VERSION_OVERRIDE,                           \
      WORKBENCH_STRINGIFY(TORCH_VERSION_MAJOR) "." WORKBENCH_STRINGIFY(                            \
          TORCH_VERSION_MINOR) "." WORKBENCH_STRINGIFY(TORCH_VERSION_PATCH),                       \
      _GLIBCXX_USE_CXX11_ABI};                                                                     \
  BOOST_DLL_ALIAS(describe, workbench_describe_plugin)
