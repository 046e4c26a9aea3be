#include "svg.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "../dashboard.hpp"

namespace conveyor::monitor::console {
namespace {

constexpr double kWidth = 560, kHeight = 170, kLeft = 40, kRight = 10, kTop = 24, kBottom = 36;

std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", v);
  return buf;
}

std::string polyline(const Series& s, double top_value) {
  const double w = kWidth - kLeft - kRight, h = kHeight - kTop - kBottom;
  const std::size_t n = s.values.size();
  std::string points;
  for (std::size_t i = 0; i < n; ++i) {
    const double x = kLeft + (n <= 1 ? 0 : w * static_cast<double>(i) / static_cast<double>(n - 1));
    const double y = kTop + h - h * (top_value > 0 ? s.values[i] / top_value : 0);
    points += number(x) + "," + number(y) + " ";
  }
  return "<polyline fill=\"none\" stroke-width=\"1.5\" stroke=\"" + html_escape(s.color) + "\" points=\"" + points +
         "\"><title>" + html_escape(s.name) + "</title></polyline>";
}

}  // namespace

std::string line_chart(const std::string& title, const std::string& from_label, const std::vector<Series>& series) {
  double top = 0;
  for (const auto& s : series) {
    for (const double v : s.values) top = std::max(top, v);
  }
  top = top <= 0 ? 1 : std::ceil(top);
  const std::string base = number(kHeight - kBottom);
  std::string h = "<svg role=\"img\" width=\"" + number(kWidth) + "\" height=\"" + number(kHeight) +
                  "\" viewBox=\"0 0 " + number(kWidth) + " " + number(kHeight) +
                  "\" font-size=\"11\" font-family=\"sans-serif\"><title>" + html_escape(title) + "</title>";
  h += "<text x=\"" + number(kLeft) + "\" y=\"14\" font-weight=\"bold\">" + html_escape(title) + "</text>";
  h += "<line x1=\"" + number(kLeft) + "\" y1=\"" + number(kTop) + "\" x2=\"" + number(kLeft) + "\" y2=\"" + base +
       "\" stroke=\"#999\"/><line x1=\"" + number(kLeft) + "\" y1=\"" + base + "\" x2=\"" + number(kWidth - kRight) +
       "\" y2=\"" + base + "\" stroke=\"#999\"/>";
  h += "<text x=\"" + number(kLeft - 4) + "\" y=\"" + number(kTop + 4) + "\" text-anchor=\"end\">" +
       html_escape(number(top).substr(0, number(top).find('.'))) + "</text><text x=\"" + number(kLeft - 4) + "\" y=\"" +
       base + "\" text-anchor=\"end\">0</text>";
  h += "<text x=\"" + number(kLeft) + "\" y=\"" + number(kHeight - kBottom + 14) + "\">" + html_escape(from_label) +
       "</text><text x=\"" + number(kWidth - kRight) + "\" y=\"" + number(kHeight - kBottom + 14) +
       "\" text-anchor=\"end\">now</text>";
  double legend_x = kLeft;
  for (const auto& s : series) {
    h += polyline(s, top);
    h += "<rect x=\"" + number(legend_x) + "\" y=\"" + number(kHeight - 12) + "\" width=\"10\" height=\"10\" fill=\"" +
         html_escape(s.color) + "\"/><text x=\"" + number(legend_x + 14) + "\" y=\"" + number(kHeight - 3) + "\">" +
         html_escape(s.name) + "</text>";
    legend_x += 24 + 7.0 * static_cast<double>(s.name.size());
  }
  return h + "</svg>";
}

}  // namespace conveyor::monitor::console
