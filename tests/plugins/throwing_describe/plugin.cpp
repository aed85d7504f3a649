// Test fixture: a plugin whose descriptor function throws while the registry loads it.
#include <stdexcept>

#include "workbench/plugin.h"

namespace wbtest_throwing_describe {

workbench::PluginDescriptor describe() { throw std::runtime_error("deliberate failure inside describe()"); }

}  // namespace wbtest_throwing_describe

WORKBENCH_PLUGIN(wbtest_throwing_describe::describe)
