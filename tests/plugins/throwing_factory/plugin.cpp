// Test fixture: a valid loss plugin whose factory always throws a plain std::runtime_error; the
// registry must turn it into a PluginError naming the plugin and its path.
#include <memory>
#include <stdexcept>

#include "workbench/plugin.h"

namespace wbtest_throwing_factory {

workbench::PluginDescriptor describe() {
  workbench::PluginDescriptor d;
  d.kind = workbench::PluginKind::Loss;
  d.name = "throwing_factory";
  d.version = "0.0.1";
  d.description = "test fixture: its factory throws";
  d.options.add_int("size", 3, "an option, so that the schema is not empty", 1);
  d.create = [](const workbench::Options&, const workbench::BuildContext&) -> std::shared_ptr<workbench::Component> {
    throw std::runtime_error("deliberate failure inside the factory");
  };
  return d;
}

}  // namespace wbtest_throwing_factory

WORKBENCH_PLUGIN(wbtest_throwing_factory::describe)
