// SvgChart: nice ticks, and the chart's parts (labels, one polyline per series, legend).
#include "kiln/bench/svg_chart.h"

#include <gtest/gtest.h>

namespace kiln::bench {
namespace {

size_t count(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t i = s.find(what); i != std::string::npos; i = s.find(what, i + 1)) ++n;
  return n;
}

TEST(SvgChart, NiceTicks) {
  EXPECT_EQ(nice_ticks(9.3), (std::vector<double>{0, 2, 4, 6, 8, 10}));
  const std::vector<double> unit = nice_ticks(1);
  ASSERT_EQ(unit.size(), 6u);
  for (size_t i = 0; i < unit.size(); ++i) EXPECT_NEAR(unit[i], 0.2 * static_cast<double>(i), 1e-12);
  EXPECT_EQ(nice_ticks(0).back(), 1);
  EXPECT_EQ(nice_ticks(1234), (std::vector<double>{0, 500, 1000, 1500}));
}

TEST(SvgChart, LabelsSeriesAndLegend) {
  Chart c{"Latency <p99>", "Achieved throughput (requests/s)", "P99 latency (ms)",
          {{"run a", {{1, 100}, {2, 150}, {3.5, 400}}}, {"run b", {{1, 90}, {2.5, 200}}}}};
  const std::string svg = render_svg_chart(c);
  EXPECT_EQ(svg.rfind("<svg xmlns=\"http://www.w3.org/2000/svg\"", 0), 0u);
  EXPECT_NE(svg.find(">Achieved throughput (requests/s)</text>"), std::string::npos);
  EXPECT_NE(svg.find(">P99 latency (ms)</text>"), std::string::npos);
  EXPECT_NE(svg.find("Latency &lt;p99&gt;"), std::string::npos);
  EXPECT_EQ(count(svg, "<polyline"), 2u);
  EXPECT_EQ(count(svg, "<circle"), 5u);
  EXPECT_NE(svg.find("data-label=\"run a\""), std::string::npos);
  EXPECT_NE(svg.find(">run b</text>"), std::string::npos);
  EXPECT_EQ(count(svg, "class=\"x-tick\""), 5u);  // 0 1 2 3 4
  EXPECT_EQ(svg.substr(svg.size() - 7), "</svg>\n");
}

}  // namespace
}  // namespace kiln::bench
