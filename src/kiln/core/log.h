// Logging: leveled, timestamped lines on stderr. KILN_LOG_LEVEL=debug|info|warn|error.
#pragma once
#include <sstream>
#include <string>

namespace kiln {

enum class LogLevel { kDebug = 0, kInfo, kWarn, kError, kOff };

LogLevel log_level();
void set_log_level(LogLevel level);
void log_line(LogLevel level, const std::string& message);

namespace detail {
template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

template <typename... Args> void log_debug(const Args&... a) {
  if (log_level() <= LogLevel::kDebug) log_line(LogLevel::kDebug, detail::concat(a...));
}
template <typename... Args> void log_info(const Args&... a) {
  if (log_level() <= LogLevel::kInfo) log_line(LogLevel::kInfo, detail::concat(a...));
}
template <typename... Args> void log_warn(const Args&... a) {
  if (log_level() <= LogLevel::kWarn) log_line(LogLevel::kWarn, detail::concat(a...));
}
template <typename... Args> void log_error(const Args&... a) {
  if (log_level() <= LogLevel::kError) log_line(LogLevel::kError, detail::concat(a...));
}

}  // namespace kiln
