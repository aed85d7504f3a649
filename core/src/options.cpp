#include "workbench/options.h"

#include <cmath>
#include <sstream>
#include <stdexcept>

#include <fmt/format.h>

#include "workbench/error.h"

namespace workbench {

const char* to_string(OptionType type) {
  switch (type) {
    case OptionType::Bool: return "bool";
    case OptionType::Int: return "integer";
    case OptionType::Float: return "float";
    case OptionType::String: return "string";
    case OptionType::StringList: return "list of strings";
    case OptionType::FloatTable: return "table of numbers";
  }
  return "?";
}

namespace {
std::string quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (c == '\n') { out += "\\n"; continue; }
    out += c;
  }
  return out + "\"";
}
}  // namespace

std::string to_toml(const OptionValue& value) {
  struct Visitor {
    std::string operator()(bool b) const { return b ? "true" : "false"; }
    std::string operator()(std::int64_t i) const { return std::to_string(i); }
    std::string operator()(double d) const {
      std::string s = fmt::format("{}", d);
      if (s.find_first_of(".eEn") == std::string::npos) s += ".0";  // keep it a TOML float
      return s;
    }
    std::string operator()(const std::string& s) const { return quote(s); }
    std::string operator()(const std::vector<std::string>& v) const {
      std::string out = "[";
      for (std::size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + quote(v[i]);
      return out + "]";
    }
    std::string operator()(const FloatTable& t) const {
      std::string out = "{";
      bool first = true;
      for (const auto& [k, v] : t) {
        out += (first ? " " : ", ") + quote(k) + " = " + (*this)(v);
        first = false;
      }
      return out + (t.empty() ? "}" : " }");
    }
  };
  return std::visit(Visitor{}, value);
}

OptionSchema& OptionSchema::add(OptionSpec spec) {
  if (find(spec.name)) throw std::logic_error("option declared twice: " + spec.name);
  specs_.push_back(std::move(spec));
  return *this;
}

OptionSchema& OptionSchema::add_bool(std::string name, bool def, std::string doc) {
  return add({std::move(name), OptionType::Bool, def, std::move(doc), {}});
}

OptionSchema& OptionSchema::add_int(std::string name, std::int64_t def, std::string doc, double min, double max) {
  OptionSpec s{std::move(name), OptionType::Int, def, std::move(doc), {}};
  s.min = min;
  s.max = max;
  return add(std::move(s));
}

OptionSchema& OptionSchema::add_float(std::string name, double def, std::string doc, double min, double max) {
  OptionSpec s{std::move(name), OptionType::Float, def, std::move(doc), {}};
  s.min = min;
  s.max = max;
  return add(std::move(s));
}

OptionSchema& OptionSchema::add_string(std::string name, std::string def, std::string doc) {
  return add({std::move(name), OptionType::String, std::move(def), std::move(doc), {}});
}

OptionSchema& OptionSchema::add_choice(std::string name, std::string def, std::vector<std::string> choices,
                                       std::string doc) {
  return add({std::move(name), OptionType::String, std::move(def), std::move(doc), std::move(choices)});
}

OptionSchema& OptionSchema::add_strings(std::string name, std::vector<std::string> def, std::string doc) {
  return add({std::move(name), OptionType::StringList, std::move(def), std::move(doc), {}});
}

OptionSchema& OptionSchema::add_float_table(std::string name, FloatTable def, std::string doc, double min,
                                            double max) {
  OptionSpec s{std::move(name), OptionType::FloatTable, std::move(def), std::move(doc), {}};
  s.min = min;
  s.max = max;
  return add(std::move(s));
}

const OptionSpec* OptionSchema::find(const std::string& name) const {
  for (const auto& s : specs_)
    if (s.name == name) return &s;
  return nullptr;
}

std::string OptionSchema::names() const {
  std::string out;
  for (const auto& s : specs_) out += (out.empty() ? "" : ", ") + s.name;
  return out;
}

void Options::set(const std::string& name, OptionValue value, std::string origin) {
  entries_[name] = Entry{std::move(value), std::move(origin)};
}

const Options::Entry& Options::entry(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end())
    throw std::logic_error(fmt::format("[{}] has no option '{}' (not declared in the plugin's schema?)", section_, name));
  return it->second;
}

template <typename T>
static const T& typed(const Options::Entry& e, const std::string& section, const std::string& name, const char* what) {
  if (const T* v = std::get_if<T>(&e.value)) return *v;
  throw std::logic_error(fmt::format("[{}] option '{}' is not a {}", section, name, what));
}

bool Options::get_bool(const std::string& name) const { return typed<bool>(entry(name), section_, name, "bool"); }
std::int64_t Options::get_int(const std::string& name) const {
  return typed<std::int64_t>(entry(name), section_, name, "integer");
}
double Options::get_float(const std::string& name) const {
  const Entry& e = entry(name);
  if (const auto* i = std::get_if<std::int64_t>(&e.value)) return static_cast<double>(*i);
  return typed<double>(e, section_, name, "float");
}
const std::string& Options::get_string(const std::string& name) const {
  return typed<std::string>(entry(name), section_, name, "string");
}
const std::vector<std::string>& Options::get_strings(const std::string& name) const {
  return typed<std::vector<std::string>>(entry(name), section_, name, "list of strings");
}
const FloatTable& Options::get_float_table(const std::string& name) const {
  return typed<FloatTable>(entry(name), section_, name, "table of numbers");
}
std::string Options::origin(const std::string& name) const {
  auto it = entries_.find(name);
  return it == entries_.end() ? std::string("default") : it->second.origin;
}

void Options::fail(const std::string& name, const std::string& message) const {
  throw ConfigError(fmt::format("{}: [{}] {}: {}", origin(name), section_, name, message));
}

}  // namespace workbench
