// Metrics: the engine's and the server's counters in Prometheus text exposition format (0.0.4),
// for GET /metrics.
#pragma once
#include <cstdint>
#include <string>

#include "kiln/engine/engine_stats.h"

namespace kiln::server {

struct ServerStats {
  int64_t in_flight_requests = 0;     // HTTP requests being answered (completions and chat)
  int64_t requests_total = 0;         // completions and chat requests received
  int64_t client_errors_total = 0;    // answered with a 4xx
  int64_t disconnects_total = 0;      // clients gone before their answer ended
};

std::string render_metrics(const EngineStats& engine, const ServerStats& server, const std::string& model_name);

}  // namespace kiln::server
