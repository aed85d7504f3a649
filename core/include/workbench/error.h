#pragma once
// Error types shared by the core, the plugin loader and plugins.
//
// Every class here has an out-of-line destructor in libworkbench_core (the key function), so that its
// typeinfo lives in one library and `catch (const workbench::ConfigError&)` works for exceptions thrown
// inside a plugin .so.
#include <stdexcept>
#include <string>

namespace workbench {

/// Base of every error the workbench throws on purpose.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
  ~Error() override;
};

/// Bad experiment configuration. The message starts with where the problem is
/// ("experiments/x.toml:12:3", "--set trainer.lr", or "[model.speech_encoder]").
class ConfigError : public Error {
 public:
  using Error::Error;
  ~ConfigError() override;
};

/// A plugin could not be found, loaded, checked or created. The message names the .so path.
class PluginError : public Error {
 public:
  using Error::Error;
  ~PluginError() override;
};

/// Data could not be read or is malformed. The message names the file.
class DataError : public Error {
 public:
  using Error::Error;
  ~DataError() override;
};

/// Thrown by the trainer when the user pressed Ctrl-C; the run is recorded as interrupted.
class Interrupted : public Error {
 public:
  Interrupted() : Error("interrupted by signal") {}
  ~Interrupted() override;
};

}  // namespace workbench
