// The errors' key functions (see anchors.cpp), in a file of their own because it needs no LibTorch:
// the fuzz targets (fuzz/) build the configuration and audio code without it.
#include "workbench/error.h"

namespace workbench {

Error::~Error() = default;
ConfigError::~ConfigError() = default;
PluginError::~PluginError() = default;
DataError::~DataError() = default;
Interrupted::~Interrupted() = default;

}  // namespace workbench
