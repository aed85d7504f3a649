// `workbench compare`: the ablation table. One row per run, or per sweep point with the mean +- standard
// deviation over its seeds and their count; only the params that differ; the chosen metrics, aggregated
// over each run's steps as its last, best, min or max value.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "commands.h"
#include "run_adapters.h"
#include "workbench/error.h"
#include "workbench/run_store.h"

namespace workbench::app {

namespace {

using results::RunStore;

// Losses and error rates go down; accuracies, BLEU, F1 and recall go up. The same rule as
// results/views.sql's metric_best.
bool lower_is_better(const std::string& key) {
  std::size_t start = 0;
  while (start <= key.size()) {
    const auto end = std::min(key.find('/', start), key.size());
    const std::string part = key.substr(start, end - start);
    if (part == "cer" || part == "wer" || part == "error" ||
        (part.size() >= 4 && part.compare(part.size() - 4, 4, "loss") == 0))
      return true;
    start = end + 1;
  }
  return false;
}

struct RunFacts {
  std::int64_t id = 0;
  std::string name, status, stage, point, seed;
  std::map<std::string, std::string> params;
  std::map<std::string, double> metrics;  ///< aggregated; absent when never logged
};

// Params that say nothing about what was compared: facts found while running, where the weights came
// from, where files went. The seed is what a point's rows repeat over.
bool incidental(const std::string& key, bool grouped) {
  for (const char* prefix : {"derived.", "runtime."})
    if (key.rfind(prefix, 0) == 0) return true;
  if (key == "trainer.checkpoint_dir" || key == "init.checkpoint") return true;
  if (grouped && (key == "experiment.seed" || key == "init.from_run")) return true;
  return false;
}

std::optional<double> aggregate(const std::vector<results::MetricRow>& rows, const std::string& agg, bool lower) {
  std::optional<double> out;
  for (const auto& r : rows) {
    if (!std::isfinite(r.value)) continue;
    if (agg == "last") out = r.value;  // rows come by step
    else if (!out) out = r.value;
    else if (agg == "min" || (agg == "best" && lower)) out = std::min(*out, r.value);
    else out = std::max(*out, r.value);
  }
  if (agg == "last" && !rows.empty() && !std::isfinite(rows.back().value)) return rows.back().value;
  return out;
}

std::string number(double v) {
  if (std::isnan(v)) return "nan";
  return fmt::format("{:.4f}", v);
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out + "\"";
}

// Whether `s` is a number as JSON writes one (no "nan", "inf", "+1", ".5" or "1.").
bool json_number(const std::string& s) {
  std::size_t i = 0;
  auto digits = [&] {
    const std::size_t start = i;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
    return i > start;
  };
  if (i < s.size() && s[i] == '-') ++i;
  if (i < s.size() && s[i] == '0') ++i;
  else if (!digits()) return false;
  if (i < s.size() && s[i] == '.') {
    ++i;
    if (!digits()) return false;
  }
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
    if (!digits()) return false;
  }
  return i == s.size();
}

std::string csv_cell(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

}  // namespace

int compare_command(const CompareArgs& args) {
  static const std::set<std::string> aggs = {"last", "best", "min", "max"};
  static const std::set<std::string> formats = {"table", "csv", "markdown", "json"};
  if (!aggs.count(args.agg)) throw ConfigError("--agg " + args.agg + ": expected last, best, min or max");
  if (!formats.count(args.format))
    throw ConfigError("--format " + args.format + ": expected table, csv, markdown or json");
  if (args.sweep.empty() == args.runs.empty())
    throw ConfigError("workbench compare: give either --sweep ID or run ids");
  const RunStore store(args.db);

  std::vector<RunFacts> runs;
  if (!args.sweep.empty()) {
    // The newest run of each (stage, point, seed): an older one was superseded.
    const std::string sql = fmt::format(
        "SELECT max(run_id), stage, point, seed FROM sweep_runs WHERE sweep = {}{} GROUP BY stage, point, seed "
        "ORDER BY min(run_id)",
        sql_literal(args.sweep), args.stage.empty() ? "" : " AND stage = " + sql_literal(args.stage));
    for (const auto& row : store.query_rows(sql).rows) {
      RunFacts f;
      f.id = std::stoll(row[0].value_or("0"));
      f.stage = row[1].value_or("");
      f.point = row[2].value_or("");
      f.seed = row[3].value_or("");
      runs.push_back(std::move(f));
    }
    if (runs.empty())
      throw ConfigError(fmt::format("workbench compare: no runs of sweep '{}'{} in {}", args.sweep,
                                    args.stage.empty() ? "" : " stage '" + args.stage + "'", args.db));
  } else {
    for (auto id : args.runs) {
      RunFacts f;
      f.id = id;
      runs.push_back(std::move(f));
    }
  }
  std::vector<std::string> metric_keys = args.metrics;
  for (auto& f : runs) {
    results::RunRow row;
    try {
      row = store.run(f.id);
    } catch (const results::StoreError&) {
      throw ConfigError(fmt::format("workbench compare: there is no run {} in {}", f.id, args.db));
    }
    f.name = row.experiment_name;
    f.status = row.status;
    for (const auto& p : store.params(f.id)) f.params[p.key] = p.text;
    if (args.metrics.empty()) {
      auto it = f.params.find("derived.headline_metric");
      if (it != f.params.end() && std::find(metric_keys.begin(), metric_keys.end(), it->second) == metric_keys.end())
        metric_keys.push_back(it->second);
    }
  }
  for (auto& f : runs)
    for (const auto& key : metric_keys) {
      bool lower = lower_is_better(key);
      if (f.params.count("trainer.keep_best") && f.params["trainer.keep_best"] == key)
        lower = f.params["trainer.keep_best_mode"] == "min";
      if (auto v = aggregate(store.metrics(f.id, key), args.agg, lower)) f.metrics[key] = *v;
    }

  // Rows: a run each, or a (stage, point) each with its seeds' runs.
  const bool grouped = !args.sweep.empty() && !args.per_run;
  struct Row {
    std::vector<const RunFacts*> runs;
  };
  std::vector<Row> rows;
  if (grouped) {
    std::map<std::pair<std::string, std::string>, std::size_t> at;
    for (const auto& f : runs) {
      auto key = std::make_pair(f.stage, f.point);
      if (!at.count(key)) {
        at[key] = rows.size();
        rows.push_back({});
      }
      rows[at[key]].runs.push_back(&f);
    }
  } else {
    for (const auto& f : runs) rows.push_back({{&f}});
  }

  // The params whose value differs between rows (a row's value: its first run's).
  std::set<std::string> all_keys;
  for (const auto& f : runs)
    for (const auto& [k, v] : f.params)
      if (!incidental(k, grouped)) all_keys.insert(k);
  // Within a stage: pre-training and fine-tuning runs differ in most of their keys, and a key that only
  // tells the stages apart says nothing the stage column does not.
  std::vector<std::string> differing;
  for (const auto& k : all_keys) {
    std::map<std::string, std::set<std::string>> values;  // by stage
    for (const auto& r : rows) {
      auto it = r.runs.front()->params.find(k);
      values[r.runs.front()->stage].insert(it == r.runs.front()->params.end() ? "-" : it->second);
    }
    if (std::any_of(values.begin(), values.end(), [](const auto& v) { return v.second.size() > 1; }))
      differing.push_back(k);
  }

  // The table as cells: identity columns, params, then per metric its value (mean, std, n when grouped).
  std::vector<std::string> header;
  if (grouped) {
    header = {"stage", "point", "n"};
  } else {
    header = {"run", "name", "status"};
    if (!args.sweep.empty()) header.insert(header.end(), {"stage", "point", "seed"});
  }
  for (const auto& k : differing) header.push_back(k);
  for (const auto& m : metric_keys) {
    header.push_back(m);
    if (grouped && args.format != "table" && args.format != "markdown") {
      header.back() += " mean";
      header.push_back(m + " std");
    }
  }
  std::vector<std::vector<std::string>> cells;
  for (const auto& r : rows) {
    const RunFacts& first = *r.runs.front();
    std::vector<std::string> line;
    if (grouped) {
      line = {first.stage, first.point, std::to_string(r.runs.size())};
    } else {
      line = {std::to_string(first.id), first.name, first.status};
      if (!args.sweep.empty()) line.insert(line.end(), {first.stage, first.point, first.seed});
    }
    for (const auto& k : differing) {
      auto it = first.params.find(k);
      line.push_back(it == first.params.end() ? "-" : it->second);
    }
    for (const auto& m : metric_keys) {
      std::vector<double> values;
      for (const auto* f : r.runs)
        if (auto it = f->metrics.find(m); it != f->metrics.end()) values.push_back(it->second);
      if (values.empty()) {
        line.push_back("-");
        if (grouped && args.format != "table" && args.format != "markdown") line.push_back("-");
        continue;
      }
      double mean = 0;
      for (double v : values) mean += v;
      mean /= static_cast<double>(values.size());
      double var = 0;
      for (double v : values) var += (v - mean) * (v - mean);
      // The sample standard deviation over seeds; one seed has none.
      const double sd = values.size() > 1 ? std::sqrt(var / static_cast<double>(values.size() - 1)) : NAN;
      if (!grouped) {
        line.push_back(number(values[0]));
      } else if (args.format == "table" || args.format == "markdown") {
        line.push_back(values.size() > 1 ? fmt::format("{} ± {} ({})", number(mean), number(sd), values.size())
                                         : fmt::format("{} (1)", number(mean)));
      } else {
        line.push_back(number(mean));
        line.push_back(values.size() > 1 ? number(sd) : "");
      }
    }
    cells.push_back(std::move(line));
  }

  if (args.format == "csv") {
    for (std::size_t c = 0; c < header.size(); ++c) std::printf("%s%s", c ? "," : "", csv_cell(header[c]).c_str());
    std::printf("\n");
    for (const auto& line : cells) {
      for (std::size_t c = 0; c < line.size(); ++c) std::printf("%s%s", c ? "," : "", csv_cell(line[c]).c_str());
      std::printf("\n");
    }
  } else if (args.format == "json") {
    std::printf("[\n");
    for (std::size_t r = 0; r < cells.size(); ++r) {
      std::printf("  {");
      for (std::size_t c = 0; c < header.size(); ++c) {
        const std::string& v = cells[r][c];
        const bool numeric = header[c] != "point" && header[c] != "name" && json_number(v);
        std::printf("%s%s: %s", c ? ", " : "", json_string(header[c]).c_str(),
                    v.empty() || v == "-" ? "null" : numeric ? v.c_str() : json_string(v).c_str());
      }
      std::printf("}%s\n", r + 1 < cells.size() ? "," : "");
    }
    std::printf("]\n");
  } else {
    // Column widths count characters, not bytes ("±" is two bytes).
    auto width = [](const std::string& s) {
      std::size_t n = 0;
      for (unsigned char c : s) n += (c & 0xC0) != 0x80;
      return n;
    };
    std::vector<std::size_t> w(header.size());
    for (std::size_t c = 0; c < header.size(); ++c) {
      w[c] = width(header[c]);
      for (const auto& line : cells) w[c] = std::max(w[c], width(line[c]));
    }
    auto pad = [&](const std::string& s, std::size_t c) { return s + std::string(w[c] - width(s), ' '); };
    const bool md = args.format == "markdown";
    auto print_line = [&](const std::vector<std::string>& line) {
      std::string out = md ? "| " : "";
      for (std::size_t c = 0; c < line.size(); ++c) out += pad(line[c], c) + (c + 1 < line.size() ? (md ? " | " : "  ") : "");
      if (md) out += " |";
      while (!md && !out.empty() && out.back() == ' ') out.pop_back();
      std::printf("%s\n", out.c_str());
    };
    print_line(header);
    if (md) {
      std::string sep = "|";
      for (std::size_t c = 0; c < header.size(); ++c) sep += std::string(w[c] + 2, '-') + "|";
      std::printf("%s\n", sep.c_str());
    }
    for (const auto& line : cells) print_line(line);
    if (!md)
      std::printf("(%s over each run's steps%s)\n", args.agg.c_str(),
                  grouped ? "; mean ± sample std over seeds, (n)" : "");
  }
  return 0;
}

}  // namespace workbench::app
