#pragma once
// The state of a loss's own random engine as text, for resumable checkpoints (Loss::random_state).
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>

namespace workbench {

/// `engine`'s full state (std::mt19937_64's 312 words and position) as text; restore_engine reads it back.
inline std::string engine_state(const std::mt19937_64& engine) {
  std::ostringstream out;
  out << engine;
  return out.str();
}

/// Sets `engine` to a state engine_state() wrote. Throws std::invalid_argument when `state` is not one
/// (the engine is then left as it was).
inline void restore_engine(std::mt19937_64& engine, const std::string& state) {
  std::istringstream in(state);
  std::mt19937_64 read;
  in >> read;
  if (in.fail()) throw std::invalid_argument("not the state of a std::mt19937_64 random engine");
  engine = read;
}

}  // namespace workbench
