#pragma once
// Training progress on stderr: one updating line on a terminal, plain periodic lines otherwise (logs, CI).
#include <chrono>
#include <cstdint>
#include <string>

namespace workbench {

class Progress {
 public:
  enum class Mode { Tty, Lines, None };
  /// "auto" picks Tty when stderr is a terminal, else Lines.
  static Mode mode_from_string(const std::string& text);

  Progress(Mode mode, std::int64_t total_steps);
  /// Called every step; prints at most every 0.2 s (Tty) or 10 s (Lines).
  void update(std::int64_t step, double loss, double lr, double steps_per_second);
  /// A message that must not be overwritten (an evaluation result, a warning).
  void message(const std::string& text);
  void finish();

 private:
  void clear_line();
  Mode mode_;
  std::int64_t total_;
  std::chrono::steady_clock::time_point last_print_{};
  bool line_open_ = false;
};

}  // namespace workbench
