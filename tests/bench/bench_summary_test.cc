// BenchSummary: the two per-token definitions, numpy-style percentiles, throughput, goodput.
#include "kiln/bench/bench_summary.h"

#include <gtest/gtest.h>

namespace kiln::bench {
namespace {

RequestRecord rec(double ttft, double e2e, int64_t out, bool ok = true) {
  RequestRecord r;
  r.ok = ok;
  r.ttft = ttft;
  r.e2e = e2e;
  r.output_tokens = out;
  r.prompt_tokens = 10;
  r.usage_reported = true;
  return r;
}

TEST(RequestRecord, TpotAndLatencyPerToken) {
  RequestRecord r = rec(0.1, 1.0, 10);
  EXPECT_DOUBLE_EQ(*r.tpot(), 0.9 / 9);   // vLLM: (e2e - ttft) / (n - 1)
  EXPECT_DOUBLE_EQ(*r.lpt(), 0.9 / 10);   // Fireworks: (end - first token) / n
  EXPECT_FALSE(rec(0.1, 0.1, 1).tpot());
  EXPECT_FALSE(rec(0.1, 0.1, 0).lpt());
}

TEST(BenchSummary, PercentilesLikeNumpy) {
  const std::vector<double> v = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  EXPECT_DOUBLE_EQ(percentile(v, 50), 5.5);
  EXPECT_DOUBLE_EQ(percentile(v, 90), 9.1);
  EXPECT_DOUBLE_EQ(percentile(v, 99), 9.91);
  EXPECT_DOUBLE_EQ(percentile(v, 100), 10);
  EXPECT_EQ(percentile_key(99), "99");
  EXPECT_EQ(percentile_key(99.9), "99.9");
}

TEST(BenchSummary, ThroughputGoodputAndFailures) {
  LoadResult run;
  run.duration_s = 2.0;
  run.records = {rec(0.1, 1.0, 10), rec(0.3, 1.2, 10), rec(0.2, 0.5, 4), rec(0, 0, 0, false)};
  run.records[3].error = "HTTP 500: boom";
  SummaryOptions o;
  o.slos = *parse_slos("ttft=250,tpot=120");
  nlohmann::json j = summarize(run, o);
  EXPECT_EQ(j["completed"], 3);
  EXPECT_EQ(j["failed"], 1);
  EXPECT_EQ(j["errors"][0], "HTTP 500: boom");
  EXPECT_EQ(j["total_output_tokens"], 24);
  EXPECT_DOUBLE_EQ(j["request_throughput"].get<double>(), 1.5);
  EXPECT_DOUBLE_EQ(j["output_throughput"].get<double>(), 12);
  EXPECT_DOUBLE_EQ(j["total_token_throughput"].get<double>(), 27);
  // tpot: 100, 100, 100 ms; ttft 100, 300, 200: the second misses the ttft SLO.
  EXPECT_DOUBLE_EQ(j["request_goodput"].get<double>(), 1.0);
  EXPECT_NEAR(j["mean_ttft_ms"].get<double>(), 200, 1e-9);
  EXPECT_NEAR(j["median_ttft_ms"].get<double>(), 200, 1e-9);
  EXPECT_NEAR(j["mean_tpot_ms"].get<double>(), 100, 1e-9);
  EXPECT_NEAR(j["mean_lpt_ms"].get<double>(), (90 + 90 + 75) / 3.0, 1e-9);
  EXPECT_TRUE(j.contains("p99.9_e2el_ms"));
  EXPECT_EQ(*parse_slos("ttft:500 e2el:2000"), (std::vector<Slo>{{"ttft", 500}, {"e2el", 2000}}) );
  EXPECT_FALSE(parse_slos("ttft=fast").ok());
  EXPECT_FALSE(parse_slos("latency=5").ok());
}

}  // namespace
}  // namespace kiln::bench
