#include "workbench/progress.h"

#include <cstdio>
#include <unistd.h>

#include <fmt/format.h>

namespace workbench {

Progress::Mode Progress::mode_from_string(const std::string& text) {
  if (text == "tty") return Mode::Tty;
  if (text == "lines") return Mode::Lines;
  if (text == "none") return Mode::None;
  return isatty(fileno(stderr)) ? Mode::Tty : Mode::Lines;
}

Progress::Progress(Mode mode, std::int64_t total_steps) : mode_(mode), total_(total_steps) {}

static std::string format_eta(double seconds) {
  if (!(seconds >= 0) || seconds > 1e7) return "--:--";
  auto s = static_cast<long>(seconds + 0.5);
  if (s >= 3600) return fmt::format("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60);
  return fmt::format("{:02}:{:02}", s / 60, s % 60);
}

void Progress::update(std::int64_t step, double loss, double lr, double steps_per_second) {
  if (mode_ == Mode::None) return;
  auto now = std::chrono::steady_clock::now();
  double since = std::chrono::duration<double>(now - last_print_).count();
  bool last = step >= total_;
  if (!last && since < (mode_ == Mode::Tty ? 0.2 : 10.0)) return;
  last_print_ = now;
  double eta = steps_per_second > 0 ? static_cast<double>(total_ - step) / steps_per_second : -1;
  std::string line = fmt::format("step {}/{}  loss {:.4f}  lr {:.3g}  {:.2f} steps/s  ETA {}", step, total_, loss, lr,
                                 steps_per_second, format_eta(eta));
  if (mode_ == Mode::Tty) {
    std::fprintf(stderr, "\r\033[K%s", line.c_str());
    line_open_ = true;
  } else {
    std::fprintf(stderr, "%s\n", line.c_str());
  }
  std::fflush(stderr);
}

void Progress::clear_line() {
  if (line_open_) {
    std::fprintf(stderr, "\r\033[K");
    line_open_ = false;
  }
}

void Progress::message(const std::string& text) {
  if (mode_ == Mode::None) return;
  clear_line();
  std::fprintf(stderr, "%s\n", text.c_str());
  std::fflush(stderr);
}

void Progress::finish() {
  if (line_open_) std::fprintf(stderr, "\n");
  line_open_ = false;
}

}  // namespace workbench
