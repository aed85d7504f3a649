#pragma once
// What `workbench new-plugin KIND NAME` writes for each plugin kind.
#include <string>
#include <vector>

namespace workbench::app {

struct PluginTemplate {
  std::string source;      ///< NAME.cpp, with @NAME@ for the plugin's name
  std::string experiment;  ///< experiment.toml that runs it, with @NAME@ and @KIND@
};

/// loss, encoder, text_embedding, dataset, evaluator.
const std::vector<std::string>& template_kinds();
/// Throws std::invalid_argument for a kind not in template_kinds().
PluginTemplate plugin_template(const std::string& kind);

}  // namespace workbench::app
