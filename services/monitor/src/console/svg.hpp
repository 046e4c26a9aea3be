#pragma once
// Graphs of the console drawn on the server as inline SVG: no script, no
// library, nothing fetched. Thread-safe: stateless.
#include <string>
#include <vector>

namespace conveyor::monitor::console {

struct Series {
  std::string name;
  std::string color;           // a CSS colour of our own, not user input
  std::vector<double> values;  // one per step, oldest first
};

// A line chart of `series` (all the same length) with its title, the largest
// value on the y axis, `from_label` and "now" under the x axis, and a legend.
std::string line_chart(const std::string& title, const std::string& from_label, const std::vector<Series>& series);

}  // namespace conveyor::monitor::console
