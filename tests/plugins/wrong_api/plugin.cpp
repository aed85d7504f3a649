// Test fixture: a well-formed plugin compiled with -DWORKBENCH_PLUGIN_API_VERSION_OVERRIDE=999, as if it
// had been built against a future workbench. The registry must refuse it naming both versions.
#include <memory>

#include "workbench/plugin.h"

namespace wbtest_wrong_api {

workbench::PluginDescriptor describe() {
  workbench::PluginDescriptor d;
  d.kind = workbench::PluginKind::Loss;
  d.name = "wrong_api";
  d.version = "0.0.1";
  d.description = "test fixture: built for plugin API version 999";
  d.create = [](const workbench::Options&, const workbench::BuildContext&) -> std::shared_ptr<workbench::Component> {
    return std::make_shared<workbench::Component>();
  };
  return d;
}

}  // namespace wbtest_wrong_api

WORKBENCH_PLUGIN(wbtest_wrong_api::describe)
