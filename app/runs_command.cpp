// `workbench runs`: the latest runs of a store at a glance. A run marked running whose process on this
// host is gone (killed, crashed) is shown as crashed; the store keeps what was recorded.
#include <cmath>
#include <cstdio>

#include <fmt/format.h>

#include "commands.h"
#include "run_adapters.h"
#include "workbench/run_store.h"

namespace workbench::app {

namespace {
std::string duration(const std::optional<double>& s) {
  if (!s) return "-";
  const double v = *s;
  if (v < 120) return fmt::format("{:.0f}s", v);
  if (v < 7200) return fmt::format("{:.1f}m", v / 60);
  return fmt::format("{:.1f}h", v / 3600);
}
}  // namespace

int runs_command(const std::string& db, std::size_t limit) {
  results::RunStore store(db);
  const auto runs = store.recent_runs(limit);
  fmt::print("{:>5}  {:<24} {:<8} {:<11} {:<20} {:>8} {:>6}  {}\n", "ID", "NAME", "KIND", "STATUS", "STARTED",
             "DURATION", "PARENT", "HEADLINE");
  for (const auto& r : runs) {
    std::string headline = "-";
    if (!r.headline_key.empty())
      headline = r.headline_key + " " + (r.headline_value ? fmt::format("{:.4f}", *r.headline_value) : "-");
    fmt::print("{:>5}  {:<24} {:<8} {:<11} {:<20} {:>8} {:>6}  {}\n", r.id, r.experiment_name.substr(0, 24), r.kind,
               run_process_gone(r) ? "crashed" : r.status, r.started_at.substr(0, 19), duration(r.duration_s),
               r.parent_run_id ? std::to_string(*r.parent_run_id) : "-", headline);
  }
  if (runs.empty()) fmt::print("(no runs in {})\n", db);
  return 0;
}

}  // namespace workbench::app
