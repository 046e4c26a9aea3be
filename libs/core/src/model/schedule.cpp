#include "conveyor/model/schedule.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cstdio>

#include "conveyor/error/error.hpp"

namespace conveyor::model {
namespace {

using namespace std::chrono;

[[noreturn]] void bad(const std::string& text, const std::string& what) {
  throw Error(errc::bad_input, "schedule '" + text + "': " + what);
}

constexpr std::array<const char*, 12> kMonths = {"JAN", "FEB", "MAR", "APR", "MAY", "JUN",
                                                 "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"};
constexpr std::array<const char*, 7> kWeekdays = {"SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"};

struct FieldSpec {
  const char* name;
  int min;
  int max;
  const char* const* names;  // names[i] is min + i; null: numbers only
  std::size_t name_count;
};

int value_of(const std::string& text, const FieldSpec& f, const std::string& token) {
  std::string upper;
  for (char c : token) upper += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  for (std::size_t i = 0; f.names != nullptr && i < f.name_count; ++i) {
    if (upper == f.names[i]) return f.min + static_cast<int>(i);
  }
  int v = 0;
  const auto [end, ec] = std::from_chars(token.data(), token.data() + token.size(), v);
  if (ec != std::errc() || end != token.data() + token.size()) {
    bad(text, std::string(f.name) + ": '" + token + "' is not a number" + (f.names ? " or a name" : ""));
  }
  const int max = std::string(f.name) == "day-of-week" ? 7 : f.max;  // 7 is Sunday too
  if (v < f.min || v > max) {
    bad(text, std::string(f.name) + ": " + token + " is out of " + std::to_string(f.min) + "-" + std::to_string(max));
  }
  return v;
}

// Sets bits[v] for every value the field allows; returns whether it is "*".
template <std::size_t N>
bool parse_field(const std::string& text, const FieldSpec& f, const std::string& field, std::bitset<N>& bits) {
  std::size_t start = 0;
  while (start <= field.size()) {
    const std::size_t comma = field.find(',', start);
    const std::string item = field.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (item.empty()) bad(text, std::string(f.name) + ": empty list item");
    std::string range = item;
    int step = 1;
    if (const auto slash = item.find('/'); slash != std::string::npos) {
      range = item.substr(0, slash);
      const std::string s = item.substr(slash + 1);
      const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), step);
      if (ec != std::errc() || end != s.data() + s.size() || step < 1) {
        bad(text, std::string(f.name) + ": step '" + s + "' is not a positive number");
      }
    }
    int lo = f.min, hi = f.max;
    if (range == "*") {
      // lo, hi: the whole range
    } else if (const auto dash = range.find('-'); dash != std::string::npos) {
      lo = value_of(text, f, range.substr(0, dash));
      hi = value_of(text, f, range.substr(dash + 1));
      if (lo > hi) bad(text, std::string(f.name) + ": range " + range + " goes backwards");
    } else {
      lo = value_of(text, f, range);
      hi = item.find('/') != std::string::npos ? f.max : lo;  // "5/15": from 5 on
    }
    const bool week = std::string(f.name) == "day-of-week";
    for (int v = lo; v <= hi; v += step) bits.set(static_cast<std::size_t>(week && v == 7 ? 0 : v));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return field == "*";
}

seconds parse_every(const std::string& text, const std::string& spec) {
  seconds total{0};
  std::size_t i = 0;
  while (i < spec.size()) {
    std::size_t j = i;
    while (j < spec.size() && std::isdigit(static_cast<unsigned char>(spec[j]))) ++j;
    if (j == i || j == spec.size()) bad(text, "expected @every <N>(s|m|h|d)...");
    const long long n = std::stoll(spec.substr(i, j - i));
    switch (spec[j]) {
      case 's':
        total += seconds(n);
        break;
      case 'm':
        total += minutes(n);
        break;
      case 'h':
        total += hours(n);
        break;
      case 'd':
        total += days(n);
        break;
      default:
        bad(text, std::string("unknown unit '") + spec[j] + "' (s, m, h or d)");
    }
    i = j + 1;
  }
  if (total <= seconds(0)) bad(text, "the period must be at least 1s");
  return total;
}

}  // namespace

Schedule Schedule::parse(const std::string& text) {
  Schedule s;
  s.text_ = text;
  if (text.rfind("@every ", 0) == 0) {
    s.every_ = parse_every(text, text.substr(7));
    return s;
  }
  std::vector<std::string> fields;
  std::string cur;
  for (char c : text + " ") {
    if (c == ' ' || c == '\t') {
      if (!cur.empty()) fields.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (fields.size() != 5)
    bad(text, "expected '@every <N>(s|m|h|d)' or 5 cron fields, got " + std::to_string(fields.size()));
  parse_field(text, {"minute", 0, 59, nullptr, 0}, fields[0], s.minutes_);
  parse_field(text, {"hour", 0, 23, nullptr, 0}, fields[1], s.hours_);
  s.any_day_of_month_ = parse_field(text, {"day-of-month", 1, 31, nullptr, 0}, fields[2], s.days_);
  parse_field(text, {"month", 1, 12, kMonths.data(), kMonths.size()}, fields[3], s.months_);
  s.any_day_of_week_ =
      parse_field(text, {"day-of-week", 0, 6, kWeekdays.data(), kWeekdays.size()}, fields[4], s.weekdays_);
  return s;
}

bool Schedule::day_matches(sys_days d) const {
  const year_month_day ymd{d};
  const bool dom = days_.test(static_cast<unsigned>(ymd.day()));
  const bool dow = weekdays_.test(weekday{d}.c_encoding());
  if (any_day_of_month_ && any_day_of_week_) return true;
  if (any_day_of_month_) return dow;
  if (any_day_of_week_) return dom;
  return dom || dow;
}

TimePoint Schedule::next_after(TimePoint t) const {
  if (every_ > seconds(0)) {
    const auto since_epoch = t.time_since_epoch();
    auto n = since_epoch / every_;
    if (since_epoch.count() < 0 && since_epoch % every_ != seconds(0)) --n;  // floor for times before 1970
    return TimePoint{every_ * (n + 1)};
  }
  auto m = floor<minutes>(t) + minutes(1);
  const auto limit = t + days(5 * 366);
  while (m <= limit) {
    const sys_days d = floor<days>(m);
    const year_month_day ymd{d};
    if (!months_.test(static_cast<unsigned>(ymd.month()))) {
      const year_month next = year_month{ymd.year(), ymd.month()} + months(1);
      m = sys_days{next / day{1}};
      continue;
    }
    if (!day_matches(d)) {
      m = d + days(1);
      continue;
    }
    const auto in_day = m - d;
    const auto h = duration_cast<hours>(in_day);
    if (!hours_.test(static_cast<std::size_t>(h.count()))) {
      m = d + h + hours(1);
      continue;
    }
    const auto min = duration_cast<minutes>(in_day - h);
    if (!minutes_.test(static_cast<std::size_t>(min.count()))) {
      m += minutes(1);
      continue;
    }
    return TimePoint{m};
  }
  bad(text_, "matches no date in the next five years");
}

std::optional<CatchupPolicy> parse_catchup_policy(std::string_view name) noexcept {
  if (name == "all") return CatchupPolicy::all;
  if (name == "latest") return CatchupPolicy::latest;
  if (name == "none") return CatchupPolicy::none;
  if (name == "collapse") return CatchupPolicy::collapse;
  return std::nullopt;
}

DuePlan plan_due(const Schedule& schedule, TimePoint after, TimePoint now, CatchupPolicy policy,
                 std::optional<seconds> window, std::size_t max_create, seconds on_time) {
  DuePlan plan;
  plan.last_slot = after;
  TimePoint from = std::max(after, now - days(400));
  if (window) {
    // Slots at or before now - window are skipped: count them, then start after.
    const TimePoint edge = now - *window;
    while (from < edge) {
      const TimePoint n = schedule.next_after(from);
      if (n > edge) break;
      ++plan.skipped;
      plan.last_slot = n;
      from = n;
    }
    from = std::max(from, edge);
  }
  std::optional<TimePoint> oldest, newest;
  std::int64_t due = 0;
  for (TimePoint t = from;;) {
    const TimePoint n = schedule.next_after(t);
    if (n > now) break;
    ++due;
    if (!oldest) oldest = n;
    newest = n;
    if (policy == CatchupPolicy::all) {
      plan.create.push_back(n);
      plan.last_slot = n;
      if (plan.create.size() >= max_create) return plan;
    }
    t = n;
  }
  if (!newest) return plan;
  if (policy == CatchupPolicy::all) return plan;
  plan.last_slot = *newest;
  if (policy == CatchupPolicy::collapse) {
    if (due == 1) plan.create.push_back(*newest);  // on time: the plain run of its slot
    else plan.collapsed = SlotRange{*oldest, *newest, due};
    return plan;
  }
  const bool on_time_now = now - *newest <= on_time;
  if (policy == CatchupPolicy::latest || on_time_now) {
    plan.create.push_back(*newest);
    plan.skipped += due - 1;
  } else {
    plan.skipped += due;
  }
  return plan;
}

SlotRange slots_between(const Schedule& schedule, TimePoint from, TimePoint to) {
  SlotRange r{from, from, 0};
  for (TimePoint t = schedule.next_after(from - seconds(1)); t <= to; t = schedule.next_after(t)) {
    if (r.count == 0) r.first = t;
    r.last = t;
    ++r.count;
  }
  return r;
}

std::string format_utc(TimePoint t) {
  const sys_days d = floor<days>(t);
  const year_month_day ymd{d};
  const hh_mm_ss hms{t - d};
  char buf[32];
  std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02d:%02d:%02dZ", static_cast<int>(ymd.year()),
                static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()),
                static_cast<int>(hms.hours().count()), static_cast<int>(hms.minutes().count()),
                static_cast<int>(hms.seconds().count()));
  return buf;
}

TimePoint parse_utc_day_or_time(const std::string& text) {
  return parse_utc(text.size() == 10 ? text + "T00:00:00Z" : text);
}

TimePoint parse_utc(const std::string& text) {
  int y = 0;
  unsigned mo = 0, d = 0;
  int h = 0, mi = 0, s = 0;
  char z = 0;
  if (std::sscanf(text.c_str(), "%4d-%2u-%2uT%2d:%2d:%2d%c", &y, &mo, &d, &h, &mi, &s, &z) != 7 || z != 'Z' ||
      text.size() != 20) {
    throw Error(errc::bad_input, "'" + text + "' is not a UTC time like 2026-12-01T10:00:00Z");
  }
  const year_month_day ymd{year{y}, month{mo}, day{d}};
  if (!ymd.ok() || h > 23 || mi > 59 || s > 59 || h < 0 || mi < 0 || s < 0) {
    throw Error(errc::bad_input, "'" + text + "' is not a valid date and time");
  }
  return TimePoint{sys_days{ymd}} + hours(h) + minutes(mi) + seconds(s);
}

}  // namespace conveyor::model
