// SvgChart: a line chart written as plain SVG (opens in any browser): axes from 0 with "nice"
// ticks and labels, light grid, one polyline with point markers per series, and a legend.
#pragma once
#include <string>
#include <utility>
#include <vector>

namespace kiln::bench {

struct ChartSeries {
  std::string label;
  std::vector<std::pair<double, double>> points;  // (x, y), drawn in this order
};

struct Chart {
  std::string title, x_label, y_label;
  std::vector<ChartSeries> series;
  int width = 760, height = 460;
};

std::string render_svg_chart(const Chart& chart);

// 0, step, 2 step, ... up to the first tick >= max, with step 1, 2 or 5 x 10^k (about `count` ticks).
std::vector<double> nice_ticks(double max, int count = 5);

}  // namespace kiln::bench
