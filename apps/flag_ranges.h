// CLI11 validators for floating-point flags that reject NaN and infinities: CLI::Range and
// CLI::PositiveNumber let NaN through (every comparison with NaN is false), so `--top-p nan` would
// reach the sampler. The message names the flag through CLI11 ("--top-p: 'nan' is not a finite
// number in (0, 1]").
#pragma once
#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <string>

namespace kiln::apps {

// A finite number in [lo, hi], or (lo, hi] when lo_open.
inline CLI::Validator finite_range(double lo, double hi, bool lo_open = false) {
  auto num = [](double v) {
    if (v == std::numeric_limits<double>::max()) return std::string("inf");
    std::string s = std::to_string(v);
    s.erase(s.find_last_not_of('0') + 1);
    if (!s.empty() && s.back() == '.') s.pop_back();
    return s;
  };
  const std::string range = (lo_open ? "(" : "[") + num(lo) + ", " + num(hi) + (hi == std::numeric_limits<double>::max() ? ")" : "]");
  return CLI::Validator(
      [=](std::string& text) -> std::string {
        char* end = nullptr;
        const double v = std::strtod(text.c_str(), &end);
        if (text.empty() || end != text.c_str() + text.size() || !std::isfinite(v) || (lo_open ? !(v > lo) : !(v >= lo)) ||
            !(v <= hi))
          return "'" + text + "' is not a finite number in " + range;
        return "";
      },
      "FLOAT in " + range);
}

// A finite number > 0.
inline CLI::Validator finite_positive() { return finite_range(0.0, std::numeric_limits<double>::max(), true); }

}  // namespace kiln::apps
