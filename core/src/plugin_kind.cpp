// PluginKind's names, apart from plugin.cpp: the experiment loader needs them, and the fuzz targets
// (fuzz/) build the loader without LibTorch's libraries (plugin.h itself needs only header-only parts).
#include <stdexcept>

#include "workbench/plugin.h"

namespace workbench {

const char* to_string(PluginKind kind) {
  switch (kind) {
    case PluginKind::Encoder: return "encoder";
    case PluginKind::TextEmbedding: return "text_embedding";
    case PluginKind::Loss: return "loss";
    case PluginKind::Dataset: return "dataset";
    case PluginKind::Evaluator: return "evaluator";
  }
  return "?";
}

const std::vector<PluginKind>& all_plugin_kinds() {
  static const std::vector<PluginKind> kinds = {PluginKind::Encoder, PluginKind::TextEmbedding, PluginKind::Loss,
                                                PluginKind::Dataset, PluginKind::Evaluator};
  return kinds;
}

PluginKind plugin_kind_from_string(const std::string& text) {
  for (auto k : all_plugin_kinds())
    if (text == to_string(k)) return k;
  throw std::invalid_argument("unknown plugin kind '" + text +
                              "' (expected encoder, text_embedding, loss, dataset or evaluator)");
}

}  // namespace workbench
