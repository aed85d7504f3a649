// A valid plugin except that its library depends on libwbtest_dependency.so, which the dynamic loader
// cannot find at run time (no RPATH, not on the system path).
#include "workbench/loss.h"
#include "workbench/plugin.h"

extern "C" int wbtest_dependency_value();

namespace {
workbench::PluginDescriptor describe() {
  workbench::PluginDescriptor d;
  d.kind = workbench::PluginKind::Loss;
  d.name = "wbtest_missing_dependency";
  d.version = "0.0.0";
  d.description = "cannot be loaded: its dependency is missing";
  d.create = [](const workbench::Options&, const workbench::BuildContext&) -> std::shared_ptr<workbench::Component> {
    return wbtest_dependency_value() == 42 ? nullptr : nullptr;
  };
  return d;
}
}  // namespace

WORKBENCH_PLUGIN(describe)
