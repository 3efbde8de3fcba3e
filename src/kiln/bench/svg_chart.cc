// SvgChart: layout (margins, scales), then the elements back to front: background, grid, axes,
// ticks, labels, series, legend. Class names (axis, x-label, y-label, series, legend) let tests
// and stylesheets find the parts.
#include "kiln/bench/svg_chart.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace kiln::bench {
namespace {

constexpr const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"};

std::string escape_xml(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      default: o += c;
    }
  }
  return o;
}

std::string num(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f", v);
  return b;
}

std::string tick_label(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%g", std::abs(v) < 1e-12 ? 0.0 : v);
  return b;
}

}  // namespace

std::vector<double> nice_ticks(double max, int count) {
  if (!(max > 0) || !std::isfinite(max)) max = 1;
  const double raw = max / std::max(1, count);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    step = m * mag;
    if (step >= raw) break;
  }
  std::vector<double> ticks;
  for (int i = 0;; ++i) {
    ticks.push_back(step * i);
    if (step * i >= max * (1 - 1e-9)) break;
  }
  return ticks;
}

namespace {

// The plot area inside the margins and the data -> pixel scales (axes start at 0).
struct Frame {
  double left = 80, right = 24, top = 48, bottom = 64;
  double width = 0, height = 0;  // of the plot area
  std::vector<double> x_ticks, y_ticks;
  double X(double x) const { return left + x * width / x_ticks.back(); }
  double Y(double y) const { return top + height - y * height / y_ticks.back(); }
};

Frame frame_of(const Chart& c) {
  Frame f;
  f.width = c.width - f.left - f.right;
  f.height = c.height - f.top - f.bottom;
  double xmax = 0, ymax = 0;
  for (const ChartSeries& s : c.series)
    for (const auto& [x, y] : s.points) {
      if (std::isfinite(x)) xmax = std::max(xmax, x);
      if (std::isfinite(y)) ymax = std::max(ymax, y);
    }
  f.x_ticks = nice_ticks(xmax * 1.05);
  f.y_ticks = nice_ticks(ymax * 1.05);
  return f;
}

std::string svg_line(double x1, double y1, double x2, double y2, const std::string& attrs = "") {
  return "<line" + attrs + " x1=\"" + num(x1) + "\" y1=\"" + num(y1) + "\" x2=\"" + num(x2) + "\" y2=\"" + num(y2) + "\"/>\n";
}

void draw_axes(const Chart& c, const Frame& f, std::string& o) {
  const double bottom = f.top + f.height, right = f.left + f.width;
  o += "<g class=\"grid\" stroke=\"#e5e5e5\" stroke-width=\"1\">\n";
  for (double t : f.x_ticks) o += svg_line(f.X(t), f.top, f.X(t), bottom);
  for (double t : f.y_ticks) o += svg_line(f.left, f.Y(t), right, f.Y(t));
  o += "</g>\n<g class=\"axis\" stroke=\"black\" stroke-width=\"1.5\">\n";
  o += svg_line(f.left, bottom, right, bottom, " class=\"x-axis\"");
  o += svg_line(f.left, f.top, f.left, bottom, " class=\"y-axis\"");
  for (double t : f.x_ticks) o += svg_line(f.X(t), bottom, f.X(t), bottom + 5);
  for (double t : f.y_ticks) o += svg_line(f.left - 5, f.Y(t), f.left, f.Y(t));
  o += "</g>\n<g class=\"tick-labels\" fill=\"#333\">\n";
  for (double t : f.x_ticks)
    o += "<text class=\"x-tick\" x=\"" + num(f.X(t)) + "\" y=\"" + num(bottom + 20) + "\" text-anchor=\"middle\">" + tick_label(t) + "</text>\n";
  for (double t : f.y_ticks)
    o += "<text class=\"y-tick\" x=\"" + num(f.left - 9) + "\" y=\"" + num(f.Y(t) + 4) + "\" text-anchor=\"end\">" + tick_label(t) + "</text>\n";
  o += "</g>\n";
  o += "<text class=\"x-label\" x=\"" + num(f.left + f.width / 2) + "\" y=\"" + num(c.height - 16) +
       "\" text-anchor=\"middle\" font-size=\"14\">" + escape_xml(c.x_label) + "</text>\n";
  o += "<text class=\"y-label\" x=\"0\" y=\"0\" transform=\"translate(20 " + num(f.top + f.height / 2) +
       ") rotate(-90)\" text-anchor=\"middle\" font-size=\"14\">" + escape_xml(c.y_label) + "</text>\n";
}

void draw_series(const ChartSeries& s, const char* color, const Frame& f, std::string& o) {
  std::string pts, marks;
  for (const auto& [x, y] : s.points) {
    if (!std::isfinite(x) || !std::isfinite(y)) continue;
    if (!pts.empty()) pts += ' ';
    pts += num(f.X(x));
    pts += ',';
    pts += num(f.Y(y));
    marks += "<circle cx=\"" + num(f.X(x)) + "\" cy=\"" + num(f.Y(y)) + "\" r=\"3.5\" fill=\"" + color + "\"/>\n";
  }
  o += "<g class=\"run\">\n<polyline class=\"series\" data-label=\"" + escape_xml(s.label) + "\" fill=\"none\" stroke=\"" +
       color + "\" stroke-width=\"2\" points=\"" + pts + "\"/>\n" + marks + "</g>\n";
}

void draw_legend(const Chart& c, const Frame& f, std::string& o) {
  size_t longest = 0;
  for (const ChartSeries& s : c.series) longest = std::max(longest, s.label.size());
  const double w = 44 + 7.0 * static_cast<double>(longest), h = 8 + 18.0 * static_cast<double>(c.series.size());
  o += "<g class=\"legend\">\n<rect x=\"" + num(f.left + 10) + "\" y=\"" + num(f.top + 8) + "\" width=\"" + num(w) +
       "\" height=\"" + num(h) + "\" fill=\"white\" fill-opacity=\"0.85\" stroke=\"#999\"/>\n";
  for (size_t i = 0; i < c.series.size(); ++i) {
    const double y = f.top + 8 + 14 + 18.0 * static_cast<double>(i);
    const std::string color = kColors[i % std::size(kColors)];
    o += svg_line(f.left + 18, y - 4, f.left + 42, y - 4, " stroke=\"" + color + "\" stroke-width=\"2\"");
    o += "<text x=\"" + num(f.left + 48) + "\" y=\"" + num(y) + "\">" + escape_xml(c.series[i].label) + "</text>\n";
  }
  o += "</g>\n";
}

}  // namespace

std::string render_svg_chart(const Chart& c) {
  const Frame f = frame_of(c);
  const std::string w = std::to_string(c.width), h = std::to_string(c.height);
  std::string o = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + w + "\" height=\"" + h + "\" viewBox=\"0 0 " + w +
                  " " + h + "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  o += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  o += "<text class=\"title\" x=\"" + num(f.left + f.width / 2) +
       "\" y=\"28\" text-anchor=\"middle\" font-size=\"16\" font-weight=\"bold\">" + escape_xml(c.title) + "</text>\n";
  draw_axes(c, f, o);
  for (size_t i = 0; i < c.series.size(); ++i) draw_series(c.series[i], kColors[i % std::size(kColors)], f, o);
  draw_legend(c, f, o);
  o += "</svg>\n";
  return o;
}

}  // namespace kiln::bench
