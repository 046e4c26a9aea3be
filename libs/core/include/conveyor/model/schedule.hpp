#pragma once
// Periodic schedules of job types (DESIGN §4 `schedule`, §8 catch-up) as pure
// logic, so the scheduler in conveyor-creation and the CLI compute the same
// slots and the rules are unit-tested without a clock.
//
// A schedule is "@every <N>(s|m|h|d)..." (slots at whole multiples of the
// period since the Unix epoch, so they do not depend on when a service
// started) or a 5-field cron line "minute hour day-of-month month
// day-of-week" (numbers, *, a-b, */n, a-b/n, lists, JAN-DEC, SUN-SAT; 7 is
// Sunday too; when both day fields are restricted either may match, as in
// Vixie cron). All times are UTC. Thread-safe: immutable values.
#include <bitset>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace conveyor::model {

// The database's clock in whole seconds, truncated: a slot is due once its
// second has begun, never half a second before it (a cast of the epoch to
// bigint would round). The scheduler and the CLI read "now" with it.
inline constexpr std::string_view kScheduleNowSql = "SELECT floor(extract(epoch FROM now()))::bigint";

using TimePoint = std::chrono::sys_seconds;

class Schedule {
 public:
  // Throws Error(bad_input) naming what is wrong ("schedule '61 * * * *':
  // minute: 61 is out of 0-59").
  static Schedule parse(const std::string& text);
  // The first slot strictly after `t`. Throws Error(bad_input) for a cron
  // line that matches no date within five years (e.g. "0 0 31 2 *").
  TimePoint next_after(TimePoint t) const;
  const std::string& text() const noexcept { return text_; }

 private:
  bool day_matches(std::chrono::sys_days d) const;
  std::string text_;
  std::chrono::seconds every_{0};  // > 0: an @every schedule
  std::bitset<60> minutes_;
  std::bitset<24> hours_;
  std::bitset<32> days_;     // 1..31
  std::bitset<13> months_;   // 1..12
  std::bitset<7> weekdays_;  // 0 = Sunday
  bool any_day_of_month_ = true;
  bool any_day_of_week_ = true;
};

// What a schedule does with the slots it missed (downtime, a pause, a job
// type outside job_types_list): `all` creates every missed run, oldest first
// (in batches); `latest` one run for the newest missed slot (the others are
// skipped); `none` only a slot that is on time; `collapse` one run that
// carries the whole missed range (model::collapsed_request: its first and last
// slot and their count), or the plain run of the slot when only one is due.
enum class CatchupPolicy { all, latest, none, collapse };
std::optional<CatchupPolicy> parse_catchup_policy(std::string_view name) noexcept;

// The slots [first, last] of a schedule as one run (policy collapse).
struct SlotRange {
  TimePoint first;
  TimePoint last;
  std::int64_t count = 0;
};

struct DuePlan {
  std::vector<TimePoint> create;       // slots to create a job for, oldest first
  std::optional<SlotRange> collapsed;  // collapse: one run for these due slots (not in `create`)
  std::int64_t skipped = 0;            // due slots not created (policy, window)
  // The new last slot: the newest due slot dealt with (created or skipped);
  // `after` when nothing is due. With `all` and a full batch, the last
  // created one, so the next tick goes on from there.
  TimePoint last_slot;
};

// The slots in (after, now] and what to do with them. Slots older than
// `window` before now are skipped whatever the policy. `max_create` bounds
// one call (the scheduler calls again at once). A slot counts as on time
// (policy none) when now - slot <= on_time. The search looks back at most
// 400 days, so a schedule untouched for longer skips what lies before that.
DuePlan plan_due(const Schedule& schedule, TimePoint after, TimePoint now, CatchupPolicy policy,
                 std::optional<std::chrono::seconds> window, std::size_t max_create, std::chrono::seconds on_time);

// The slots of `schedule` in [from, to]: how many, the first and the last
// (count 0: none). Walks them all, without keeping them: a year of a
// one-second schedule takes about a second.
SlotRange slots_between(const Schedule& schedule, TimePoint from, TimePoint to);

// "2026-12-01T10:00:00Z" (what the scheduler puts in idempotency keys and
// params) and back; parse throws Error(bad_input).
std::string format_utc(TimePoint t);
TimePoint parse_utc(const std::string& text);
// As parse_utc, or a date alone, "2026-12-01" (its midnight, UTC): how an
// operator gives a point in time (schedule_catchup_start, --from, --since).
TimePoint parse_utc_day_or_time(const std::string& text);

}  // namespace conveyor::model
