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

std::string render_svg_chart(const Chart& c) {
  const double left = 80, right = 24, top = 48, bottom = 64;
  const double pw = c.width - left - right, ph = c.height - top - bottom;
  double xmax = 0, ymax = 0;
  for (const ChartSeries& s : c.series)
    for (const auto& [x, y] : s.points) {
      if (std::isfinite(x)) xmax = std::max(xmax, x);
      if (std::isfinite(y)) ymax = std::max(ymax, y);
    }
  const std::vector<double> xt = nice_ticks(xmax * 1.05), yt = nice_ticks(ymax * 1.05);
  const double xs = pw / xt.back(), ys = ph / yt.back();
  auto X = [&](double x) { return left + x * xs; };
  auto Y = [&](double y) { return top + ph - y * ys; };

  std::string o;
  o += "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + std::to_string(c.width) + "\" height=\"" +
       std::to_string(c.height) + "\" viewBox=\"0 0 " + std::to_string(c.width) + " " + std::to_string(c.height) +
       "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  o += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  o += "<text class=\"title\" x=\"" + num(left + pw / 2) + "\" y=\"28\" text-anchor=\"middle\" font-size=\"16\" font-weight=\"bold\">" +
       escape_xml(c.title) + "</text>\n";
  o += "<g class=\"grid\" stroke=\"#e5e5e5\" stroke-width=\"1\">\n";
  for (double t : xt) o += "<line x1=\"" + num(X(t)) + "\" y1=\"" + num(top) + "\" x2=\"" + num(X(t)) + "\" y2=\"" + num(top + ph) + "\"/>\n";
  for (double t : yt) o += "<line x1=\"" + num(left) + "\" y1=\"" + num(Y(t)) + "\" x2=\"" + num(left + pw) + "\" y2=\"" + num(Y(t)) + "\"/>\n";
  o += "</g>\n<g class=\"axis\" stroke=\"black\" stroke-width=\"1.5\">\n";
  o += "<line class=\"x-axis\" x1=\"" + num(left) + "\" y1=\"" + num(top + ph) + "\" x2=\"" + num(left + pw) + "\" y2=\"" + num(top + ph) + "\"/>\n";
  o += "<line class=\"y-axis\" x1=\"" + num(left) + "\" y1=\"" + num(top) + "\" x2=\"" + num(left) + "\" y2=\"" + num(top + ph) + "\"/>\n";
  for (double t : xt) o += "<line x1=\"" + num(X(t)) + "\" y1=\"" + num(top + ph) + "\" x2=\"" + num(X(t)) + "\" y2=\"" + num(top + ph + 5) + "\"/>\n";
  for (double t : yt) o += "<line x1=\"" + num(left - 5) + "\" y1=\"" + num(Y(t)) + "\" x2=\"" + num(left) + "\" y2=\"" + num(Y(t)) + "\"/>\n";
  o += "</g>\n<g class=\"tick-labels\" fill=\"#333\">\n";
  for (double t : xt)
    o += "<text class=\"x-tick\" x=\"" + num(X(t)) + "\" y=\"" + num(top + ph + 20) + "\" text-anchor=\"middle\">" + tick_label(t) + "</text>\n";
  for (double t : yt)
    o += "<text class=\"y-tick\" x=\"" + num(left - 9) + "\" y=\"" + num(Y(t) + 4) + "\" text-anchor=\"end\">" + tick_label(t) + "</text>\n";
  o += "</g>\n";
  o += "<text class=\"x-label\" x=\"" + num(left + pw / 2) + "\" y=\"" + num(c.height - 16) + "\" text-anchor=\"middle\" font-size=\"14\">" +
       escape_xml(c.x_label) + "</text>\n";
  o += "<text class=\"y-label\" x=\"0\" y=\"0\" transform=\"translate(20 " + num(top + ph / 2) +
       ") rotate(-90)\" text-anchor=\"middle\" font-size=\"14\">" + escape_xml(c.y_label) + "</text>\n";
  for (size_t i = 0; i < c.series.size(); ++i) {
    const ChartSeries& s = c.series[i];
    const char* color = kColors[i % std::size(kColors)];
    std::string pts;
    for (const auto& [x, y] : s.points)
      if (std::isfinite(x) && std::isfinite(y)) {
        if (!pts.empty()) pts += ' ';
        pts += num(X(x));
        pts += ',';
        pts += num(Y(y));
      }
    o += "<g class=\"run\">\n<polyline class=\"series\" data-label=\"" + escape_xml(s.label) + "\" fill=\"none\" stroke=\"" + color +
         "\" stroke-width=\"2\" points=\"" + pts + "\"/>\n";
    for (const auto& [x, y] : s.points)
      if (std::isfinite(x) && std::isfinite(y))
        o += "<circle cx=\"" + num(X(x)) + "\" cy=\"" + num(Y(y)) + "\" r=\"3.5\" fill=\"" + color + "\"/>\n";
    o += "</g>\n";
  }
  size_t longest = 0;
  for (const ChartSeries& s : c.series) longest = std::max(longest, s.label.size());
  const double lw = 44 + 7.0 * static_cast<double>(longest), lh = 8 + 18.0 * static_cast<double>(c.series.size());
  o += "<g class=\"legend\">\n<rect x=\"" + num(left + 10) + "\" y=\"" + num(top + 8) + "\" width=\"" + num(lw) + "\" height=\"" + num(lh) +
       "\" fill=\"white\" fill-opacity=\"0.85\" stroke=\"#999\"/>\n";
  for (size_t i = 0; i < c.series.size(); ++i) {
    const double y = top + 8 + 14 + 18.0 * static_cast<double>(i);
    const char* color = kColors[i % std::size(kColors)];
    o += "<line x1=\"" + num(left + 18) + "\" y1=\"" + num(y - 4) + "\" x2=\"" + num(left + 42) + "\" y2=\"" + num(y - 4) + "\" stroke=\"" +
         color + "\" stroke-width=\"2\"/>\n";
    o += "<text x=\"" + num(left + 48) + "\" y=\"" + num(y) + "\">" + escape_xml(c.series[i].label) + "</text>\n";
  }
  o += "</g>\n</svg>\n";
  return o;
}

}  // namespace kiln::bench
