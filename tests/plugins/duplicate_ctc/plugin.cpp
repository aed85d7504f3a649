// Test fixture: a valid loss plugin that is also called "ctc", so loading it next to the built-in ctc
// plugin is a duplicate (kind, name).
#include <memory>

#include "workbench/plugin.h"

namespace wbtest_duplicate_ctc {

workbench::PluginDescriptor describe() {
  workbench::PluginDescriptor d;
  d.kind = workbench::PluginKind::Loss;
  d.name = "ctc";
  d.version = "0.0.1";
  d.description = "test fixture: a second loss plugin named ctc";
  d.create = [](const workbench::Options&, const workbench::BuildContext&) -> std::shared_ptr<workbench::Component> {
    return std::make_shared<workbench::Component>();
  };
  return d;
}

}  // namespace wbtest_duplicate_ctc

WORKBENCH_PLUGIN(wbtest_duplicate_ctc::describe)
