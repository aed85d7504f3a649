// `workbench plot`: learning curves of runs from the run store, drawn with cairo (SVG, PNG or PDF by the
// file's extension). One stroked path per run, in its own colour; the legend's swatches are filled
// rectangles, so that a run's colour strokes exactly one path (what tests/test_sweep.cpp counts).
#include <cairo-pdf.h>
#include <cairo-svg.h>
#include <cairo.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "commands.h"
#include "workbench/error.h"
#include "workbench/run_store.h"

namespace workbench::app {

namespace {

namespace fs = std::filesystem;

struct Curve {
  std::string label;
  std::vector<double> x, y;
};

// Tableau 10: distinct for up to ten runs, then repeating.
constexpr double kColours[][3] = {{0.122, 0.467, 0.706}, {1.000, 0.498, 0.055}, {0.173, 0.627, 0.173},
                                  {0.839, 0.153, 0.157}, {0.580, 0.404, 0.741}, {0.549, 0.337, 0.294},
                                  {0.890, 0.467, 0.761}, {0.498, 0.498, 0.498}, {0.737, 0.741, 0.133},
                                  {0.090, 0.745, 0.812}};

// About `n` round tick values (1, 2 or 5 times a power of ten apart) covering [lo, hi].
std::vector<double> ticks(double lo, double hi, int n) {
  const double span = hi - lo;
  if (!(span > 0)) return {lo};
  const double raw = span / n;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (raw <= m * mag) {
      step = m * mag;
      break;
    }
  std::vector<double> out;
  for (double t = std::ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push_back(std::abs(t) < step * 1e-9 ? 0 : t);
  return out;
}

std::string tick_label(double v) {
  if (v != 0 && (std::abs(v) >= 1e5 || std::abs(v) < 1e-3)) return fmt::format("{:.0e}", v);
  std::string s = fmt::format("{:.4f}", v);
  while (s.back() == '0') s.pop_back();
  if (s.back() == '.') s.pop_back();
  return s;
}

}  // namespace

int plot_command(const PlotArgs& args) {
  if (args.runs.empty()) throw ConfigError("workbench plot: name at least one run");
  if (args.metric.empty()) throw ConfigError("workbench plot: --metric KEY is required");
  if (args.x != "step" && args.x != "time") throw ConfigError("--x " + args.x + ": expected step or time");
  if (!(args.smooth >= 0 && args.smooth < 1)) throw ConfigError("--smooth: expected a weight in [0, 1)");
  const std::string ext = fs::path(args.output).extension().string();
  if (ext != ".svg" && ext != ".png" && ext != ".pdf")
    throw ConfigError(fmt::format("-o {}: expected a .svg, .png or .pdf file", args.output));

  const results::RunStore store(args.db);
  std::vector<Curve> curves;
  for (auto id : args.runs) {
    results::RunRow row;
    try {
      row = store.run(id);
    } catch (const results::StoreError&) {
      throw ConfigError(fmt::format("workbench plot: there is no run {} in {}", id, args.db));
    }
    const auto rows = store.metrics(id, args.metric);
    if (rows.empty())
      throw ConfigError(fmt::format("workbench plot: run {} ({}) has no metric '{}'", id, row.experiment_name, args.metric));
    Curve c;
    c.label = fmt::format("run {} {}", id, row.experiment_name);
    // Exponential moving average, debiased (as TensorBoard's smoothing): the first points are not pulled
    // towards zero.
    double ema = 0, weight = 0;
    for (const auto& r : rows) {
      if (!std::isfinite(r.value)) continue;
      ema = args.smooth * ema + (1 - args.smooth) * r.value;
      weight = args.smooth * weight + (1 - args.smooth);
      c.x.push_back(args.x == "step" ? static_cast<double>(r.step) : (r.wall_time - rows.front().wall_time) / 60.0);
      c.y.push_back(ema / weight);
    }
    if (c.x.empty()) throw ConfigError(fmt::format("workbench plot: run {}'s '{}' is never finite", id, args.metric));
    curves.push_back(std::move(c));
  }
  double x0 = std::numeric_limits<double>::infinity(), x1 = -x0, y0 = x0, y1 = -x0;
  for (const auto& c : curves) {
    x0 = std::min(x0, *std::min_element(c.x.begin(), c.x.end()));
    x1 = std::max(x1, *std::max_element(c.x.begin(), c.x.end()));
    y0 = std::min(y0, *std::min_element(c.y.begin(), c.y.end()));
    y1 = std::max(y1, *std::max_element(c.y.begin(), c.y.end()));
  }
  if (x1 <= x0) x1 = x0 + 1;
  if (y1 <= y0) {
    y0 -= 0.5;
    y1 += 0.5;
  }
  const double pad = (y1 - y0) * 0.05;
  y0 -= pad;
  y1 += pad;

  const double W = 800, H = 500, left = 80, right = 220, top = 40, bottom = 60;
  fs::path out(args.output);
  if (out.has_parent_path()) fs::create_directories(out.parent_path());
  cairo_surface_t* surface = ext == ".svg"   ? cairo_svg_surface_create(args.output.c_str(), W, H)
                             : ext == ".pdf" ? cairo_pdf_surface_create(args.output.c_str(), W, H)
                                             : cairo_image_surface_create(CAIRO_FORMAT_ARGB32, W, H);
  std::unique_ptr<cairo_surface_t, decltype(&cairo_surface_destroy)> surface_holder(surface, cairo_surface_destroy);
  if (cairo_surface_status(surface) != CAIRO_STATUS_SUCCESS)
    throw DataError(fmt::format("{}: cannot write a plot ({})", args.output,
                                cairo_status_to_string(cairo_surface_status(surface))));
  cairo_t* cr = cairo_create(surface);
  std::unique_ptr<cairo_t, decltype(&cairo_destroy)> cr_holder(cr, cairo_destroy);
  const double pw = W - left - right, ph = H - top - bottom;
  auto px = [&](double x) { return left + (x - x0) / (x1 - x0) * pw; };
  auto py = [&](double y) { return top + (1 - (y - y0) / (y1 - y0)) * ph; };

  cairo_set_source_rgb(cr, 1, 1, 1);
  cairo_paint(cr);
  cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
  cairo_set_font_size(cr, 12);
  cairo_text_extents_t ext_text;
  // Grid and tick labels.
  cairo_set_line_width(cr, 1);
  for (double t : ticks(x0, x1, 8)) {
    cairo_set_source_rgb(cr, 0.9, 0.9, 0.9);
    cairo_move_to(cr, px(t), top);
    cairo_line_to(cr, px(t), top + ph);
    cairo_stroke(cr);
    const std::string s = tick_label(t);
    cairo_text_extents(cr, s.c_str(), &ext_text);
    cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
    cairo_move_to(cr, px(t) - ext_text.width / 2, top + ph + 18);
    cairo_show_text(cr, s.c_str());
  }
  for (double t : ticks(y0, y1, 6)) {
    cairo_set_source_rgb(cr, 0.9, 0.9, 0.9);
    cairo_move_to(cr, left, py(t));
    cairo_line_to(cr, left + pw, py(t));
    cairo_stroke(cr);
    const std::string s = tick_label(t);
    cairo_text_extents(cr, s.c_str(), &ext_text);
    cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
    cairo_move_to(cr, left - 8 - ext_text.width, py(t) + ext_text.height / 2);
    cairo_show_text(cr, s.c_str());
  }
  cairo_set_source_rgb(cr, 0, 0, 0);
  cairo_rectangle(cr, left, top, pw, ph);
  cairo_stroke(cr);
  // Axis labels and title.
  const std::string xlabel = args.x == "step" ? "step" : "minutes since the first value";
  cairo_text_extents(cr, xlabel.c_str(), &ext_text);
  cairo_move_to(cr, left + pw / 2 - ext_text.width / 2, H - 18);
  cairo_show_text(cr, xlabel.c_str());
  cairo_save(cr);
  cairo_text_extents(cr, args.metric.c_str(), &ext_text);
  cairo_move_to(cr, 22, top + ph / 2 + ext_text.width / 2);
  cairo_rotate(cr, -M_PI / 2);
  cairo_show_text(cr, args.metric.c_str());
  cairo_restore(cr);
  cairo_set_font_size(cr, 14);
  const std::string title =
      args.metric + (args.smooth > 0 ? fmt::format(" (smoothed, {})", args.smooth) : std::string());
  cairo_move_to(cr, left, top - 14);
  cairo_show_text(cr, title.c_str());
  cairo_set_font_size(cr, 12);

  // The curves, clipped to the plot area, then the legend.
  for (std::size_t i = 0; i < curves.size(); ++i) {
    const auto* rgb = kColours[i % 10];
    const auto& c = curves[i];
    cairo_save(cr);
    cairo_rectangle(cr, left, top, pw, ph);
    cairo_clip(cr);
    cairo_set_source_rgb(cr, rgb[0], rgb[1], rgb[2]);
    cairo_set_line_width(cr, 2);
    cairo_move_to(cr, px(c.x[0]), py(c.y[0]));
    for (std::size_t k = 1; k < c.x.size(); ++k) cairo_line_to(cr, px(c.x[k]), py(c.y[k]));
    if (c.x.size() == 1) cairo_line_to(cr, px(c.x[0]) + 0.01, py(c.y[0]));
    cairo_stroke(cr);
    cairo_restore(cr);
    const double ly = top + 10 + 20 * static_cast<double>(i);
    cairo_set_source_rgb(cr, rgb[0], rgb[1], rgb[2]);
    cairo_rectangle(cr, left + pw + 15, ly - 4, 18, 6);
    cairo_fill(cr);
    cairo_set_source_rgb(cr, 0, 0, 0);
    cairo_move_to(cr, left + pw + 40, ly + 4);
    cairo_show_text(cr, c.label.c_str());
  }
  cairo_show_page(cr);
  if (ext == ".png" && cairo_surface_write_to_png(surface, args.output.c_str()) != CAIRO_STATUS_SUCCESS)
    throw DataError(fmt::format("{}: cannot write the PNG", args.output));
  cr_holder.reset();
  cairo_surface_finish(surface);
  if (cairo_surface_status(surface) != CAIRO_STATUS_SUCCESS)
    throw DataError(fmt::format("{}: cannot write the plot ({})", args.output,
                                cairo_status_to_string(cairo_surface_status(surface))));
  std::fprintf(stderr, "%s: %zu run%s, %s against %s\n", args.output.c_str(), curves.size(),
               curves.size() == 1 ? "" : "s", args.metric.c_str(), args.x.c_str());
  return 0;
}

}  // namespace workbench::app
