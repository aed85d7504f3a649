#include "workbench/plugin.h"

#include <stdexcept>

#include "workbench/batch.h"

namespace workbench {

const char* to_string(BatchKind kind) {
  switch (kind) {
    case BatchKind::Speech: return "speech";
    case BatchKind::Text: return "text";
    case BatchKind::Paired: return "paired";
  }
  return "?";
}

std::string torch_header_version() {
  return WORKBENCH_STRINGIFY(TORCH_VERSION_MAJOR) "." WORKBENCH_STRINGIFY(TORCH_VERSION_MINOR) "." WORKBENCH_STRINGIFY(
      TORCH_VERSION_PATCH);
}

}  // namespace workbench
