#pragma once
// Typed plugin options: the schema a plugin declares and the validated values it receives.
//
// A plugin never sees raw TOML. The core checks each key of the plugin's table against the schema
// (unknown keys and wrong types are ConfigErrors with file:line:column), fills in the defaults, and hands
// the plugin an Options object in which every declared option is present with its declared type.
#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <variant>
#include <vector>

namespace workbench {

enum class OptionType { Bool, Int, Float, String, StringList, FloatTable };
const char* to_string(OptionType type);

/// A TOML table of numbers, `{ speech_encoder = 0.1, "objectives.ctc" = 10 }` (FloatTable options).
using FloatTable = std::map<std::string, double>;
using OptionValue = std::variant<bool, std::int64_t, double, std::string, std::vector<std::string>, FloatTable>;

/// Renders a value as TOML (strings quoted, lists bracketed).
std::string to_toml(const OptionValue& value);

/// One declared option: name, type, default and one line of documentation.
struct OptionSpec {
  std::string name;
  OptionType type = OptionType::String;
  OptionValue default_value;
  std::string doc;
  /// For String options: the allowed values (empty = any string).
  std::vector<std::string> choices;
  /// For Int/Float options: inclusive bounds (NaN = unbounded).
  double min = std::numeric_limits<double>::quiet_NaN();
  double max = std::numeric_limits<double>::quiet_NaN();
};

/// A plugin's option schema, built with chained calls:
///   OptionSchema().add_int("d_model", 144, "model dimension", 1)
///                 .add_choice("conv_norm", "batch", {"batch", "group", "layer"}, "conv-module norm")
class OptionSchema {
 public:
  OptionSchema& add_bool(std::string name, bool def, std::string doc);
  OptionSchema& add_int(std::string name, std::int64_t def, std::string doc,
                        double min = std::numeric_limits<double>::quiet_NaN(),
                        double max = std::numeric_limits<double>::quiet_NaN());
  OptionSchema& add_float(std::string name, double def, std::string doc,
                          double min = std::numeric_limits<double>::quiet_NaN(),
                          double max = std::numeric_limits<double>::quiet_NaN());
  OptionSchema& add_string(std::string name, std::string def, std::string doc);
  OptionSchema& add_choice(std::string name, std::string def, std::vector<std::string> choices, std::string doc);
  OptionSchema& add_strings(std::string name, std::vector<std::string> def, std::string doc);
  /// A table of numbers keyed by name; every value must be within [min, max].
  OptionSchema& add_float_table(std::string name, FloatTable def, std::string doc,
                                double min = std::numeric_limits<double>::quiet_NaN(),
                                double max = std::numeric_limits<double>::quiet_NaN());
  OptionSchema& add(OptionSpec spec);  // throws std::logic_error on a duplicate name

  const std::vector<OptionSpec>& specs() const { return specs_; }
  const OptionSpec* find(const std::string& name) const;
  /// "a, b, c": used in "allowed keys are ..." messages.
  std::string names() const;

 private:
  std::vector<OptionSpec> specs_;
};

/// Validated option values for one component, each with where it came from.
class Options {
 public:
  struct Entry {
    OptionValue value;
    std::string origin;  ///< "file.toml:12:3", "--set", or "default"
  };

  Options() = default;
  /// `section` is the config table these came from, e.g. "model.speech_encoder".
  explicit Options(std::string section) : section_(std::move(section)) {}

  void set(const std::string& name, OptionValue value, std::string origin);
  bool has(const std::string& name) const { return entries_.count(name) != 0; }

  // Typed getters. A missing option or a type mismatch is a programming error in the plugin
  // (it read an option its schema does not declare) and throws std::logic_error.
  bool get_bool(const std::string& name) const;
  std::int64_t get_int(const std::string& name) const;
  double get_float(const std::string& name) const;  // Int values widen
  const std::string& get_string(const std::string& name) const;
  const std::vector<std::string>& get_strings(const std::string& name) const;
  const FloatTable& get_float_table(const std::string& name) const;

  /// "file.toml:12:3" for a key set in a file, "--set" or "default".
  std::string origin(const std::string& name) const;
  const std::string& section() const { return section_; }
  const std::map<std::string, Entry>& entries() const { return entries_; }

  /// Throws ConfigError "<origin>: [section] name: message" so a plugin can reject a value
  /// (for example an odd kernel size) with the place the user wrote it.
  [[noreturn]] void fail(const std::string& name, const std::string& message) const;

 private:
  const Entry& entry(const std::string& name) const;
  std::string section_;
  std::map<std::string, Entry> entries_;
};

}  // namespace workbench
