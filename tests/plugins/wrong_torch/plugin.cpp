// Test fixture: a plugin whose ABI block claims LibTorch 0.0.1. WORKBENCH_PLUGIN always writes the real
// version, so the block is written by hand here, the same way the macro does it.
#include <memory>

#include "workbench/plugin.h"

extern "C" BOOST_SYMBOL_EXPORT const ::workbench::PluginAbi workbench_plugin_abi;
extern "C" const ::workbench::PluginAbi workbench_plugin_abi = {::workbench::kPluginMagic,
                                                                 ::workbench::kPluginApiVersion, "0.0.1",
                                                                 _GLIBCXX_USE_CXX11_ABI};

namespace wbtest_wrong_torch {

workbench::PluginDescriptor describe() {
  workbench::PluginDescriptor d;
  d.kind = workbench::PluginKind::Loss;
  d.name = "wrong_torch";
  d.version = "0.0.1";
  d.description = "test fixture: claims LibTorch 0.0.1";
  d.create = [](const workbench::Options&, const workbench::BuildContext&) -> std::shared_ptr<workbench::Component> {
    return std::make_shared<workbench::Component>();
  };
  return d;
}

}  // namespace wbtest_wrong_torch

BOOST_DLL_ALIAS(wbtest_wrong_torch::describe, workbench_describe_plugin)
