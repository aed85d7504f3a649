#include "workbench/experiment.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <toml++/toml.h>

#include "workbench/data_options.h"
#include "workbench/edit_distance.h"
#include "workbench/error.h"
#include "workbench/frontend_options.h"
#include "workbench/slot_options.h"
#include "workbench/trainer_options.h"

namespace workbench {

namespace fs = std::filesystem;

namespace {

const OptionSchema& experiment_schema() {
  static const OptionSchema schema = OptionSchema()
                                         .add_string("name", "", "experiment name (default: the file's stem)")
                                         .add_int("seed", 1, "random seed for initialisation, masking and batching")
                                         .add_string("preset", "",
                                                     "a model-size preset (tiny, slam-600m, mslam-600m, mslam-2b, or a "
                                                     ".toml path): its tables go under this file's, which win")
                                         .add_string("description", "", "free text");
  return schema;
}
const OptionSchema& plugins_schema() {
  static const OptionSchema schema =
      OptionSchema().add_strings("paths", {}, "extra plugin directories, relative to this file");
  return schema;
}
const OptionSchema& encoder_core_schema() {
  static const OptionSchema schema = OptionSchema().add_string("plugin", "", "encoder plugin");
  return schema;
}
const OptionSchema& model_schema() {
  static const OptionSchema schema = OptionSchema().add_bool(
      "modality_embedding", true, "add a learned speech/text embedding to the shared encoder's input");
  return schema;
}
const OptionSchema& stage_schema() {
  static const OptionSchema schema = OptionSchema()
                                         .add_string("name", "", "stage name (default: stage<N>)")
                                         .add_int("steps", 0, "optimizer steps in this stage", 1)
                                         .add_strings("objectives", {}, "the [objectives.<name>] it trains");
  return schema;
}
// The name of `names` closest to a misspelled `given`, when it is close enough to be what was meant: at
// most a third of its characters (and 3) edited. "" when none is.
std::string closest_name(const std::string& given, const std::vector<std::string>& names) {
  auto chars = [](const std::string& x) { return std::vector<char32_t>(x.begin(), x.end()); };
  const std::int64_t limit = std::min<std::int64_t>(3, std::max<std::int64_t>(1, static_cast<std::int64_t>(given.size()) / 3));
  std::string best;
  std::int64_t best_distance = limit + 1;
  for (const auto& n : names) {
    const std::int64_t d = edit_distance(chars(n), chars(given));
    if (d < best_distance) best = n, best_distance = d;
  }
  return best;
}

std::string did_you_mean(const std::string& given, const std::vector<std::string>& names) {
  const std::string c = closest_name(given, names);
  return c.empty() ? std::string() : fmt::format(" Did you mean '{}'?", c);
}

std::string where(const std::string& file, const toml::source_region& src) {
  if (!src.begin) return file;
  // Values merged in from a preset carry the preset's path.
  const std::string& origin = src.path && !src.path->empty() ? *src.path : file;
  return fmt::format("{}:{}:{}", origin, src.begin.line, src.begin.column);
}

// Puts `base`'s keys under `top`: keys `top` has win; tables merge recursively, except that a table
// naming a different plugin replaces the preset's table whole (its options belong to another plugin).
// Nodes are moved out of `base`, not copied: toml++ drops the source position of a copied node, and
// messages about preset values must name the preset file.
void merge_under(toml::table& top, toml::table& base) {
  for (auto&& [key, node] : base) {
    toml::node* mine = top.get(key);
    if (!mine) {
      top.insert(key, std::move(node));
      continue;
    }
    if (mine->is_table() && node.is_table()) {
      auto* a = mine->as_table();
      auto* b = node.as_table();
      const auto* pa = a->get("plugin");
      const auto* pb = b->get("plugin");
      if (pa && pb && pa->value<std::string>() != pb->value<std::string>()) continue;
      merge_under(*a, *b);
    }
  }
}

std::string find_preset(const std::string& experiment_path, const std::string& name) {
  fs::path dir = fs::absolute(fs::path(experiment_path)).parent_path();
  std::vector<fs::path> candidates;
  if (name.find('/') != std::string::npos || fs::path(name).extension() == ".toml") {
    candidates.push_back(fs::path(name).is_absolute() ? fs::path(name) : dir / name);
  } else {
    candidates.push_back(dir / "presets" / (name + ".toml"));
    candidates.push_back(fs::path(WORKBENCH_PRESET_DIR) / (name + ".toml"));
  }
  for (const auto& c : candidates)
    if (fs::exists(c)) return c.lexically_normal().string();
  std::string tried;
  for (const auto& c : candidates) tried += (tried.empty() ? "" : ", ") + c.lexically_normal().string();
  return "!" + tried;
}

std::string type_name(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::string: return "string";
    case toml::node_type::integer: return "integer";
    case toml::node_type::floating_point: return "float";
    case toml::node_type::boolean: return "bool";
    case toml::node_type::array: return "array";
    case toml::node_type::table: return "table";
    default: return "date/time";
  }
}

bool valid_name(const std::string& s) {
  if (s.empty()) return false;
  for (char c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-')) return false;
  return true;
}

}  // namespace

struct ExperimentFile::Impl {
  std::string path;
  toml::table root;
  std::set<std::string> overridden;  // dotted keys set by --set

  std::string origin_of(const std::string& dotted, const toml::node& node) const {
    if (overridden.count(dotted)) return "--set " + dotted;
    return where(path, node.source());
  }
  // Where a key itself is written (its column, not its value's), for errors about the key.
  std::string key_origin(const std::string& dotted, const toml::key& key, const toml::node& node) const {
    if (overridden.count(dotted) || !key.source().begin) return origin_of(dotted, node);
    return where(path, key.source());
  }

  // Converts and checks one value against its spec.
  OptionValue convert(const OptionSpec& spec, const toml::node& node, const std::string& origin,
                      const std::string& section) const {
    auto bad = [&](const std::string& why) -> ConfigError {
      return ConfigError(fmt::format("{}: [{}] {}: {}", origin, section, spec.name, why));
    };
    auto expected = [&]() {
      return bad(fmt::format("expected {}, got {}", to_string(spec.type), type_name(node)));
    };
    OptionValue value;
    switch (spec.type) {
      case OptionType::Bool:
        if (!node.is_boolean()) throw expected();
        value = **node.as_boolean();
        break;
      case OptionType::Int:
        if (!node.is_integer()) throw expected();
        value = static_cast<std::int64_t>(**node.as_integer());
        break;
      case OptionType::Float:
        if (node.is_integer())
          value = static_cast<double>(**node.as_integer());
        else if (node.is_floating_point())
          value = **node.as_floating_point();
        else
          throw expected();
        break;
      case OptionType::String:
        if (!node.is_string()) throw expected();
        value = **node.as_string();
        break;
      case OptionType::StringList: {
        const auto* arr = node.as_array();
        if (!arr) throw expected();
        std::vector<std::string> items;
        for (const auto& item : *arr) {
          if (!item.is_string()) throw bad("expected a list of strings, found a " + type_name(item) + " in it");
          items.push_back(**item.as_string());
        }
        value = std::move(items);
        break;
      }
      case OptionType::FloatTable: {
        const auto* table = node.as_table();
        if (!table) throw expected();
        FloatTable items;
        for (const auto& [key, item] : *table) {
          double x;
          if (item.is_integer())
            x = static_cast<double>(**item.as_integer());
          else if (item.is_floating_point())
            x = **item.as_floating_point();
          else
            throw bad(fmt::format("expected a number for '{}', got a {}", key.str(), type_name(item)));
          if (!std::isnan(spec.min) && x < spec.min)
            throw bad(fmt::format("'{}' = {} is below the minimum {}", key.str(), x, spec.min));
          if (!std::isnan(spec.max) && x > spec.max)
            throw bad(fmt::format("'{}' = {} is above the maximum {}", key.str(), x, spec.max));
          items[std::string(key.str())] = x;
        }
        value = std::move(items);
        break;
      }
    }
    if (spec.type == OptionType::String && !spec.choices.empty()) {
      const auto& s = std::get<std::string>(value);
      bool ok = false;
      for (const auto& c : spec.choices) ok = ok || c == s;
      if (!ok) {
        std::string allowed;
        for (const auto& c : spec.choices) allowed += (allowed.empty() ? "" : ", ") + c;
        throw bad(fmt::format("'{}' is not one of: {}", s, allowed));
      }
    }
    if (spec.type == OptionType::Int || spec.type == OptionType::Float) {
      double x = spec.type == OptionType::Int ? static_cast<double>(std::get<std::int64_t>(value))
                                              : std::get<double>(value);
      if (!std::isnan(spec.min) && x < spec.min) throw bad(fmt::format("{} is below the minimum {}", x, spec.min));
      if (!std::isnan(spec.max) && x > spec.max) throw bad(fmt::format("{} is above the maximum {}", x, spec.max));
    }
    return value;
  }

  // Fills `out` from `table` for the keys in `schemas` (checked in order); unknown keys are errors.
  void fill(const toml::table* table, const std::string& section, const std::vector<const OptionSchema*>& schemas,
            const std::vector<Options*>& outs, const std::string& who) const {
    if (table) {
      for (const auto& [key, node] : *table) {
        std::string k(key.str());
        bool found = false;
        for (const auto* s : schemas) found = found || s->find(k);
        if (!found) {
          std::string allowed;
          std::vector<std::string> names;
          for (const auto* s : schemas) {
            allowed += (allowed.empty() ? "" : ", ") + s->names();
            for (const auto& spec : s->specs()) names.push_back(spec.name);
          }
          throw ConfigError(fmt::format("{}: unknown key '{}' in [{}]{}.{} Allowed keys: {}",
                                        key_origin(section + "." + k, key, node), k, section, who,
                                        did_you_mean(k, names), allowed.empty() ? "(none)" : allowed));
        }
      }
    }
    for (std::size_t i = 0; i < schemas.size(); ++i) {
      for (const auto& spec : schemas[i]->specs()) {
        const toml::node* node = table ? table->get(spec.name) : nullptr;
        if (node) {
          std::string origin = origin_of(section + "." + spec.name, *node);
          outs[i]->set(spec.name, convert(spec, *node, origin, section), origin);
        } else {
          outs[i]->set(spec.name, spec.default_value, "default");
        }
      }
    }
  }

  const toml::table* subtable(const toml::table& parent, const std::string& key, const std::string& dotted) const {
    const toml::node* node = parent.get(key);
    if (!node) return nullptr;
    if (!node->is_table())
      throw ConfigError(fmt::format("{}: '{}' must be a table ([{}]), got a {}", origin_of(dotted, *node), dotted,
                                    dotted, type_name(*node)));
    return node->as_table();
  }

  ComponentConfig component(const toml::table* table, const std::string& section, const std::string& name,
                            PluginKind kind, const OptionSchema& core_schema, const SchemaLookup& lookup) const {
    ComponentConfig c;
    c.section = section;
    c.name = name;
    c.kind = kind;
    c.core = Options(section);
    c.options = Options(section);
    const toml::node* plugin_node = table ? table->get("plugin") : nullptr;
    if (!plugin_node || !plugin_node->is_string())
      throw ConfigError(fmt::format("{}: [{}] needs plugin = \"<{} plugin name>\" (see `workbench plugins`)",
                                    plugin_node ? origin_of(section + ".plugin", *plugin_node) : path, section,
                                    to_string(kind)));
    c.plugin = **plugin_node->as_string();
    const OptionSchema& plugin_schema = lookup(kind, c.plugin, origin_of(section + ".plugin", *plugin_node));
    for (const auto& spec : plugin_schema.specs())
      if (core_schema.find(spec.name))
        throw PluginError(fmt::format("{} plugin '{}' declares option '{}', which the core reserves in [{}]",
                                      to_string(kind), c.plugin, spec.name, section));
    fill(table, section, {&core_schema, &plugin_schema}, {&c.core, &c.options},
         fmt::format(" ({} plugin '{}')", to_string(kind), c.plugin));
    return c;
  }
};

ExperimentFile::ExperimentFile(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ExperimentFile::~ExperimentFile() = default;
ExperimentFile::ExperimentFile(ExperimentFile&&) noexcept = default;
ExperimentFile& ExperimentFile::operator=(ExperimentFile&&) noexcept = default;

ExperimentFile ExperimentFile::parse(const std::string& path, const std::vector<std::string>& overrides) {
  std::ifstream in(path);
  if (!in) throw ConfigError(fmt::format("{}: cannot open the experiment file", path));
  std::stringstream buffer;
  buffer << in.rdbuf();
  return parse_text(buffer.str(), path, overrides);
}

ExperimentFile ExperimentFile::parse_text(const std::string& text, const std::string& path,
                                          const std::vector<std::string>& overrides) {
  auto impl = std::make_unique<Impl>();
  impl->path = path;
  try {
    impl->root = toml::parse(std::string_view(text), std::string_view(path));
  } catch (const toml::parse_error& e) {
    throw ConfigError(fmt::format("{}: TOML syntax error: {}", where(path, e.source()), e.description()));
  }
  for (const auto& o : overrides) {
    auto eq = o.find('=');
    if (eq == std::string::npos || eq == 0)
      throw ConfigError(fmt::format("--set {}: expected key=value, e.g. --set trainer.steps=100", o));
    std::string key = o.substr(0, eq), raw = o.substr(eq + 1);
    toml::table parsed;
    try {
      parsed = toml::parse(std::string_view("v = " + raw), std::string_view("--set"));
    } catch (const toml::parse_error&) {
      parsed = toml::table{{"v", raw}};  // a bare word such as --set data.train.plugin=manifest
    }
    // Walk/create the dotted path. Empty parts ("trainer.", "a..b") are refused, not dropped.
    std::vector<std::string> names;
    std::size_t start = 0;
    while (true) {
      auto dot = key.find('.', start);
      names.push_back(key.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
      if (dot == std::string::npos) break;
      start = dot + 1;
    }
    for (const auto& n : names)
      if (n.empty()) throw ConfigError(fmt::format("--set {}: the key '{}' has an empty part", o, key));
    toml::table* t = &impl->root;
    for (std::size_t i = 0; i + 1 < names.size(); ++i) {
      toml::node* child = t->get(names[i]);
      if (!child) {
        t->insert(names[i], toml::table{});
        child = t->get(names[i]);
      }
      if (!child->is_table())
        throw ConfigError(fmt::format("--set {}: '{}' is not a table", o, names[i]));
      t = child->as_table();
    }
    t->insert_or_assign(names.back(), *parsed.get("v"));
    impl->overridden.insert(key);
  }
  // The preset goes in last, under everything the file and --set gave.
  if (const auto* exp = impl->root.get("experiment"); exp && exp->is_table()) {
    if (const auto* preset = exp->as_table()->get("preset"); preset && preset->is_string() &&
                                                               !preset->value<std::string>()->empty()) {
      const std::string name = *preset->value<std::string>();
      const std::string origin = impl->origin_of("experiment.preset", *preset);
      const std::string found = find_preset(path, name);
      if (found[0] == '!')
        throw ConfigError(fmt::format("{}: preset '{}' not found (looked for {})", origin, name, found.substr(1)));
      std::ifstream in(found);
      std::stringstream text;
      text << in.rdbuf();
      toml::table base;
      try {
        base = toml::parse(text.str(), std::string_view(found));
      } catch (const toml::parse_error& e) {
        throw ConfigError(fmt::format("{}: TOML syntax error: {}", where(found, e.source()), e.description()));
      }
      if (const auto* nested = base.get("experiment"); nested && nested->is_table() && nested->as_table()->get("preset"))
        throw ConfigError(fmt::format("{}: a preset cannot name another preset", found));
      merge_under(impl->root, base);
    }
  }
  return ExperimentFile(std::move(impl));
}

std::vector<std::string> ExperimentFile::plugin_paths() const {
  std::vector<std::string> out;
  const toml::table* t = impl_->subtable(impl_->root, "plugins", "plugins");
  if (!t) return out;
  Options o("plugins");
  impl_->fill(t, "plugins", {&plugins_schema()}, {&o}, "");
  fs::path base = fs::absolute(fs::path(impl_->path)).parent_path();
  for (const auto& p : o.get_strings("paths")) out.push_back((fs::path(p).is_absolute() ? fs::path(p) : base / p).lexically_normal().string());
  return out;
}

const ComponentConfig* ExperimentConfig::find_data(const std::string& n) const {
  for (const auto& d : data)
    if (d.name == n) return &d;
  return nullptr;
}

namespace {

// `commented` keys still go into the flat params, but the TOML only mentions them in a comment.
void emit(std::string& out, std::vector<std::pair<std::string, OptionValue>>& flat, const std::string& section,
          const std::vector<const Options*>& parts, const std::set<std::string>& commented = {}) {
  out += "\n[" + section + "]\n";
  // `plugin` first: it says what the rest of the table means.
  for (const auto* p : parts) {
    auto it = p->entries().find("plugin");
    if (it != p->entries().end()) {
      out += "plugin = " + to_toml(it->second.value) + "\n";
      flat.emplace_back(section + ".plugin", it->second.value);
    }
  }
  for (const auto* p : parts)
    for (const auto& [k, e] : p->entries()) {
      if (k == "plugin") continue;
      const bool comment = commented.count(k) > 0;
      out += (comment ? "# " : "") + k + " = " + to_toml(e.value) + (comment ? " (merged below)\n" : "\n");
      flat.emplace_back(section + "." + k, e.value);
    }
}

}  // namespace

ExperimentConfig ExperimentFile::resolve(const SchemaLookup& lookup) const {
  const Impl& im = *impl_;
  ExperimentConfig cfg;
  cfg.path = im.path;
  static const std::set<std::string> top = {"experiment", "plugins",    "frontend",   "trainer",    "init", "data",
                                            "model",      "objectives", "evaluators", "stages", "sweep"};
  for (const auto& [key, node] : im.root) {
    std::string k(key.str());
    if (!top.count(k))
      throw ConfigError(fmt::format("{}: unknown section '{}'.{} Allowed sections: experiment, plugins, frontend, "
                                    "trainer, init, data, model, objectives, evaluators, stages, sweep",
                                    im.key_origin(k, key, node), k,
                                    did_you_mean(k, std::vector<std::string>(top.begin(), top.end()))));
  }

  Options experiment("experiment");
  im.fill(im.subtable(im.root, "experiment", "experiment"), "experiment", {&experiment_schema()}, {&experiment}, "");
  cfg.name = experiment.get_string("name");
  if (cfg.name.empty()) cfg.name = fs::path(im.path).stem().string();
  experiment.set("name", cfg.name, experiment.origin("name"));
  cfg.description = experiment.get_string("description");
  cfg.seed = experiment.get_int("seed");
  cfg.plugin_paths = plugin_paths();
  Options plugins("plugins");
  im.fill(im.subtable(im.root, "plugins", "plugins"), "plugins", {&plugins_schema()}, {&plugins}, "");

  Options frontend("frontend");
  im.fill(im.subtable(im.root, "frontend", "frontend"), "frontend", {&FrontendOptions::schema()}, {&frontend}, "");
  Options trainer("trainer");
  im.fill(im.subtable(im.root, "trainer", "trainer"), "trainer", {&TrainerOptions::schema()}, {&trainer}, "");
  Options init("init");
  im.fill(im.subtable(im.root, "init", "init"), "init", {&InitOptions::schema()}, {&init}, "");

  auto named_tables = [&](const std::string& group, PluginKind kind, const OptionSchema& core,
                          std::vector<ComponentConfig>& out) {
    const toml::table* t = im.subtable(im.root, group, group);
    if (!t) return;
    for (const auto& [key, node] : *t) {
      std::string name(key.str());
      std::string section = group + "." + name;
      if (!valid_name(name))
        throw ConfigError(fmt::format("{}: [{}]: names may use letters, digits, '_' and '-'", im.origin_of(section, node), section));
      out.push_back(im.component(im.subtable(*t, name, section), section, name, kind, core, lookup));
    }
  };
  named_tables("data", PluginKind::Dataset, DataOptions::schema(), cfg.data);
  named_tables("objectives", PluginKind::Loss, ObjectiveOptions::schema(), cfg.objectives);
  named_tables("evaluators", PluginKind::Evaluator, EvaluatorOptions::schema(), cfg.evaluators);

  const toml::table* model = im.subtable(im.root, "model", "model");
  static const std::set<std::string> parts = {"speech_encoder", "text_embedding", "shared_encoder"};
  if (model) {
    for (const auto& [key, node] : *model) {
      std::string k(key.str());
      if (parts.count(k)) continue;
      if (node.is_table() || !model_schema().find(k))
        throw ConfigError(fmt::format("{}: unknown {} in [model]. Allowed: [model.speech_encoder], "
                                      "[model.text_embedding], [model.shared_encoder], {}",
                                      im.origin_of("model." + k, node),
                                      node.is_table() ? "model part [model." + k + "]" : "key '" + k + "'",
                                      model_schema().names()));
    }
  }
  Options model_options("model");
  // The keys were checked above; convert them from the original table, not a copy: toml++ does not copy
  // source positions, and the messages need them.
  for (const auto& spec : model_schema().specs()) {
    const toml::node* node = model ? model->get(spec.name) : nullptr;
    if (node) {
      const std::string origin = im.origin_of("model." + spec.name, *node);
      model_options.set(spec.name, im.convert(spec, *node, origin, "model"), origin);
    } else {
      model_options.set(spec.name, spec.default_value, "default");
    }
  }
  cfg.modality_embedding = model_options.get_bool("modality_embedding");
  const toml::table* enc = model ? im.subtable(*model, "speech_encoder", "model.speech_encoder") : nullptr;
  if (!enc) throw ConfigError(fmt::format("{}: the experiment needs a [model.speech_encoder] table", im.path));
  cfg.speech_encoder = im.component(enc, "model.speech_encoder", "speech_encoder", PluginKind::Encoder,
                                    encoder_core_schema(), lookup);
  if (const toml::table* t = model ? im.subtable(*model, "text_embedding", "model.text_embedding") : nullptr)
    cfg.text_embedding =
        im.component(t, "model.text_embedding", "text_embedding", PluginKind::TextEmbedding, encoder_core_schema(),
                     lookup);
  if (const toml::table* t = model ? im.subtable(*model, "shared_encoder", "model.shared_encoder") : nullptr)
    cfg.shared_encoder =
        im.component(t, "model.shared_encoder", "shared_encoder", PluginKind::Encoder, encoder_core_schema(), lookup);
  if (!cfg.text_embedding.plugin.empty() && cfg.shared_encoder.plugin.empty())
    throw ConfigError(fmt::format("{}: [model.text_embedding] needs a [model.shared_encoder] to feed", im.path));

  if (const toml::node* st = im.root.get("stages")) {
    const toml::array* arr = st->as_array();
    if (!arr || !arr->is_array_of_tables())
      throw ConfigError(fmt::format("{}: 'stages' must be an array of tables ([[stages]])", im.origin_of("stages", *st)));
    std::set<std::string> names;
    for (std::size_t i = 0; i < arr->size(); ++i) {
      const toml::table* t = arr->get(i)->as_table();
      const std::string section = fmt::format("stages.{}", i);
      Options o(section);
      im.fill(t, section, {&stage_schema()}, {&o}, "");
      StageConfig stage;
      stage.name = o.get_string("name").empty() ? fmt::format("stage{}", i + 1) : o.get_string("name");
      if (!names.insert(stage.name).second) o.fail("name", "two stages are called '" + stage.name + "'");
      if (o.origin("steps") == "default") o.fail("steps", "every stage needs steps = N");
      stage.steps = o.get_int("steps");
      stage.objectives = o.get_strings("objectives");
      if (stage.objectives.empty()) o.fail("objectives", "a stage needs at least one objective");
      for (const auto& name : stage.objectives) {
        bool known = false;
        std::string all;
        for (const auto& obj : cfg.objectives) {
          known = known || obj.name == name;
          all += (all.empty() ? "" : ", ") + obj.name;
        }
        if (!known) o.fail("objectives", fmt::format("no [objectives.{}] (defined: {})", name, all));
      }
      cfg.stages.push_back(std::move(stage));
    }
    for (const auto& obj : cfg.objectives) {
      bool used = false;
      for (const auto& sg : cfg.stages)
        used = used || std::find(sg.objectives.begin(), sg.objectives.end(), obj.name) != sg.objectives.end();
      if (!used)
        obj.core.fail("plugin", fmt::format("[objectives.{}] is in no [[stages]]: it would never train; add it to a "
                                            "stage or remove it",
                                            obj.name));
    }
    std::int64_t total = 0;
    for (const auto& sg : cfg.stages) total += sg.steps;
    // The resolved config writes the sum back, so an equal trainer.steps is fine.
    if (trainer.origin("steps") != "default" && TrainerOptions::from(trainer).steps() != total)
      trainer.fail("steps", fmt::format("the [[stages]] add up to {} steps; remove trainer.steps", total));
    trainer.set("steps", total, "sum of [[stages]] steps");
  }

  if (cfg.objectives.empty())
    throw ConfigError(fmt::format("{}: the experiment needs at least one [objectives.<name>] table", im.path));
  auto check_data = [&](const ComponentConfig& c, const std::string& d) {
    if (!cfg.find_data(d)) {
      std::string known;
      for (const auto& x : cfg.data) known += (known.empty() ? "" : ", ") + x.name;
      c.core.fail("data", fmt::format("no [data.{}] table (defined: {})", d, known.empty() ? "none" : known));
    }
  };
  cfg.frontend = FrontendOptions::from(frontend);
  cfg.trainer = TrainerOptions::from(trainer);
  cfg.init = InitOptions::from(init);
  for (const auto& o : cfg.objectives) check_data(o, ObjectiveOptions::from(o.core).data());
  for (const auto& e : cfg.evaluators) check_data(e, EvaluatorOptions::from(e.core).data());

  // Render the resolved configuration; the same walk produces the flat params.
  std::string& out = cfg.resolved_toml;
  out = "# resolved configuration of " + im.path + "\n";
  // The preset's tables are already merged into what follows; naming it again would make the resolved
  // config depend on finding the preset file wherever it is parsed next (a checkpoint, the run store).
  emit(out, cfg.flat, "experiment", {&experiment},
       experiment.get_string("preset").empty() ? std::set<std::string>{} : std::set<std::string>{"preset"});
  emit(out, cfg.flat, "plugins", {&plugins});
  emit(out, cfg.flat, "frontend", {&frontend});
  emit(out, cfg.flat, "trainer", {&trainer});
  emit(out, cfg.flat, "init", {&init});
  for (const auto& d : cfg.data) emit(out, cfg.flat, d.section, {&d.core, &d.options});
  emit(out, cfg.flat, "model", {&model_options});
  emit(out, cfg.flat, cfg.speech_encoder.section, {&cfg.speech_encoder.core, &cfg.speech_encoder.options});
  for (const auto* part : {&cfg.text_embedding, &cfg.shared_encoder})
    if (!part->plugin.empty()) emit(out, cfg.flat, part->section, {&part->core, &part->options});
  for (const auto& o : cfg.objectives) emit(out, cfg.flat, o.section, {&o.core, &o.options});
  for (const auto& e : cfg.evaluators) emit(out, cfg.flat, e.section, {&e.core, &e.options});
  for (const auto& sg : cfg.stages) {
    std::string list;
    for (const auto& o : sg.objectives) list += (list.empty() ? "" : ", ") + to_toml(OptionValue(o));
    out += fmt::format("\n[[stages]]\nname = {}\nsteps = {}\nobjectives = [{}]\n", to_toml(OptionValue(sg.name)),
                       sg.steps, list);
    cfg.flat.emplace_back("stages." + sg.name + ".steps", OptionValue(sg.steps));
    cfg.flat.emplace_back("stages." + sg.name + ".objectives", OptionValue(sg.objectives));
  }
  return cfg;
}

}  // namespace workbench
