#include "sweep_plan.h"

#include <filesystem>
#include <set>

#include <fmt/format.h>
#include <toml++/toml.h>

#include "workbench/error.h"

namespace workbench::app {

namespace fs = std::filesystem;

namespace {

std::string at(const std::string& file, const toml::node& node) {
  const auto& b = node.source().begin;
  return b.line ? fmt::format("{}:{}:{}", file, b.line, b.column) : file;
}

// The value as TOML text, as --set reads it.
std::string toml_text(const toml::node& node) {
  if (const auto* s = node.as_string()) {
    std::string out = "\"";
    for (char c : s->get()) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    return out + "\"";
  }
  if (const auto* i = node.as_integer()) return std::to_string(i->get());
  if (const auto* f = node.as_floating_point()) {
    std::string text = fmt::format("{}", f->get());
    if (text.find_first_of(".eEn") == std::string::npos) text += ".0";  // 1 -> 1.0: still a float
    return text;
  }
  if (const auto* b = node.as_boolean()) return b->get() ? "true" : "false";
  if (const auto* a = node.as_array()) {
    std::string out = "[";
    for (std::size_t k = 0; k < a->size(); ++k) out += (k ? ", " : "") + toml_text(*a->get(k));
    return out + "]";
  }
  if (const auto* t = node.as_table()) {
    std::string out = "{";
    bool first = true;
    for (const auto& [k, v] : *t) {
      out += (first ? " " : ", ") + std::string(k.str()) + " = " + toml_text(v);
      first = false;
    }
    return out + " }";
  }
  return "";
}

// Dotted keys of a table's leaves ("objectives.tlm.weight"), in file order.
void flatten(const toml::table& table, const std::string& prefix,
             std::vector<std::pair<std::string, const toml::node*>>& out) {
  for (const auto& [k, v] : table) {
    const std::string key = prefix.empty() ? std::string(k.str()) : prefix + "." + std::string(k.str());
    if (const auto* t = v.as_table())
      flatten(*t, key, out);
    else
      out.emplace_back(key, &v);
  }
}

std::string value_label(const toml::node& node) {
  if (const auto* s = node.as_string()) return s->get();
  return toml_text(node);
}

}  // namespace

SweepPlan read_sweep_plan(const std::string& path) {
  toml::table root;
  try {
    root = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    const auto& b = e.source().begin;
    throw ConfigError(fmt::format("{}:{}:{}: TOML syntax error: {}", path, b.line, b.column, e.description()));
  }
  const toml::table* sweep = root["sweep"].as_table();
  if (!sweep)
    throw ConfigError(fmt::format("{}: no [sweep] table; `workbench sweep` expands one (see docs/sweeps.md), "
                                  "`workbench run` runs a file as it is",
                                  path));
  SweepPlan plan;
  plan.file = path;
  std::string stage_name = "main";
  static const std::set<std::string> keys = {"name", "seeds", "stage", "grid", "point", "then"};
  for (const auto& [k, v] : *sweep) {
    const std::string key(k.str());
    if (!keys.count(key))
      throw ConfigError(fmt::format("{}: [sweep] has no key '{}' (it takes name, seeds, stage, grid, point, then)",
                                    at(path, v), key));
  }
  if (auto name = (*sweep)["name"].value<std::string>()) plan.id = *name;
  if (plan.id.empty()) {
    if (auto n = root["experiment"]["name"].value<std::string>()) plan.id = *n;
    if (plan.id.empty()) plan.id = fs::path(path).stem().string();
  }
  if (auto s = (*sweep)["stage"].value<std::string>()) stage_name = *s;
  if (const auto* seeds = (*sweep)["seeds"].node()) {
    const auto* arr = seeds->as_array();
    if (!arr || arr->empty())
      throw ConfigError(fmt::format("{}: [sweep] seeds: expected a non-empty list of integers", at(path, *seeds)));
    for (const auto& s : *arr) {
      if (!s.is_integer())
        throw ConfigError(fmt::format("{}: [sweep] seeds: expected integers, found {}", at(path, s), toml_text(s)));
      plan.seeds.push_back(s.as_integer()->get());
    }
  } else {
    plan.seeds.push_back(root["experiment"]["seed"].value_or<std::int64_t>(1));
  }

  // The grid: every combination, the first key varying slowest.
  std::vector<std::pair<std::string, std::vector<const toml::node*>>> grid;
  if (const auto* g = (*sweep)["grid"].node()) {
    const auto* table = g->as_table();
    if (!table) throw ConfigError(fmt::format("{}: [sweep] grid: expected a table of key = [values]", at(path, *g)));
    std::vector<std::pair<std::string, const toml::node*>> leaves;
    flatten(*table, "", leaves);
    for (const auto& [key, node] : leaves) {
      const auto* arr = node->as_array();
      if (!arr || arr->empty())
        throw ConfigError(fmt::format("{}: [sweep.grid] {}: expected a non-empty list of the values to try", at(path, *node),
                                      key));
      std::vector<const toml::node*> values;
      for (const auto& v : *arr) values.push_back(&v);
      grid.emplace_back(key, std::move(values));
    }
  }
  std::vector<SweepPoint> combos(1);
  for (const auto& [key, values] : grid) {
    std::vector<SweepPoint> next;
    for (const auto& c : combos)
      for (const auto* v : values) {
        SweepPoint p = c;
        p.label += (p.label.empty() ? "" : ", ") + key + "=" + value_label(*v);
        p.overrides.push_back(key + "=" + toml_text(*v));
        next.push_back(std::move(p));
      }
    combos = std::move(next);
  }

  // Named points, each crossed with the grid.
  std::vector<SweepPoint> named;
  if (const auto* pts = (*sweep)["point"].node()) {
    const auto* arr = pts->as_array();
    if (!arr || !arr->is_array_of_tables())
      throw ConfigError(fmt::format("{}: [sweep] point: expected [[sweep.point]] tables", at(path, *pts)));
    std::set<std::string> labels;
    for (const auto& node : *arr) {
      const auto& t = *node.as_table();
      SweepPoint p;
      p.label = t["name"].value_or<std::string>("");
      std::vector<std::pair<std::string, const toml::node*>> leaves;
      flatten(t, "", leaves);
      for (const auto& [key, v] : leaves) {
        if (key == "name") continue;
        p.overrides.push_back(key + "=" + toml_text(*v));
        if (t["name"].value<std::string>()) continue;
        p.label += (p.label.empty() ? "" : ", ") + key + "=" + value_label(*v);
      }
      if (p.label.empty()) p.label = "as written";
      if (!labels.insert(p.label).second)
        throw ConfigError(fmt::format("{}: [[sweep.point]] '{}' is there twice", at(path, node), p.label));
      named.push_back(std::move(p));
    }
  }
  if (named.empty()) {
    plan.points = combos;
    if (plan.points.size() == 1 && plan.points[0].label.empty()) plan.points[0].label = "as written";
  } else {
    for (const auto& n : named)
      for (const auto& c : combos) {
        SweepPoint p = n;
        if (!c.label.empty()) p.label += ", " + c.label;
        p.overrides.insert(p.overrides.end(), c.overrides.begin(), c.overrides.end());
        plan.points.push_back(std::move(p));
      }
  }

  plan.stages.push_back({stage_name, path, {}});
  std::set<std::string> stage_names = {stage_name};
  if (const auto* then = (*sweep)["then"].node()) {
    const auto* arr = then->as_array();
    if (!arr || !arr->is_array_of_tables())
      throw ConfigError(fmt::format("{}: [sweep] then: expected [[sweep.then]] tables", at(path, *then)));
    for (const auto& node : *arr) {
      const auto& t = *node.as_table();
      SweepStage stage;
      stage.name = t["name"].value_or<std::string>("");
      const auto exp = t["experiment"].value<std::string>();
      if (stage.name.empty() || !exp)
        throw ConfigError(fmt::format("{}: [[sweep.then]] needs a name and an experiment (a file, relative to {})",
                                      at(path, node), path));
      if (!stage_names.insert(stage.name).second)
        throw ConfigError(fmt::format("{}: [[sweep.then]] '{}': a stage of that name comes earlier", at(path, node),
                                      stage.name));
      stage.experiment = fs::path(*exp).is_absolute() ? *exp : (fs::path(path).parent_path() / *exp).lexically_normal().string();
      if (!fs::exists(stage.experiment))
        throw ConfigError(fmt::format("{}: [[sweep.then]] '{}': experiment {} does not exist", at(path, node), stage.name,
                                      stage.experiment));
      std::vector<std::pair<std::string, const toml::node*>> leaves;
      flatten(t, "", leaves);
      for (const auto& [key, v] : leaves) {
        if (key == "name" || key == "experiment") continue;
        const std::string text = toml_text(*v);
        // Each ${name} must be an earlier stage.
        for (auto pos = text.find("${"); pos != std::string::npos; pos = text.find("${", pos + 2)) {
          const auto end = text.find('}', pos);
          const std::string ref = end == std::string::npos ? "" : text.substr(pos + 2, end - pos - 2);
          if (!stage_names.count(ref) || ref == stage.name)
            throw ConfigError(fmt::format("{}: [[sweep.then]] '{}' {}: ${{{}}} names no earlier stage", at(path, *v),
                                          stage.name, key, ref));
        }
        stage.overrides.push_back(key + "=" + text);
      }
      plan.stages.push_back(std::move(stage));
    }
  }
  return plan;
}

std::vector<std::string> substitute_runs(const std::vector<std::string>& overrides,
                                         const std::map<std::string, std::int64_t>& run_ids) {
  std::vector<std::string> out;
  for (std::string o : overrides) {
    for (auto pos = o.find("${"); pos != std::string::npos; pos = o.find("${", pos)) {
      const auto end = o.find('}', pos);
      const std::string ref = end == std::string::npos ? "" : o.substr(pos + 2, end - pos - 2);
      auto it = run_ids.find(ref);
      if (it == run_ids.end()) throw ConfigError(fmt::format("sweep: '{}' names a stage with no run (${{{}}})", o, ref));
      const std::string id = std::to_string(it->second);
      // A whole quoted "${x}" becomes the bare integer.
      const bool quoted = pos > 0 && o[pos - 1] == '"' && end + 1 < o.size() && o[end + 1] == '"';
      if (quoted)
        o.replace(pos - 1, end - pos + 3, id);
      else
        o.replace(pos, end - pos + 1, id);
    }
    out.push_back(std::move(o));
  }
  return out;
}

}  // namespace workbench::app
