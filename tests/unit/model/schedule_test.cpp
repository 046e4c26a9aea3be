// Schedules and catch-up as pure logic (libs/core model/schedule): slots,
// cron fields, and what each catch-up policy creates after a downtime.
#include "conveyor/model/schedule.hpp"

#include <gtest/gtest.h>

#include "conveyor/error/error.hpp"

namespace {

using conveyor::model::CatchupPolicy;
using conveyor::model::format_utc;
using conveyor::model::parse_utc;
using conveyor::model::plan_due;
using conveyor::model::Schedule;
using namespace std::chrono_literals;

std::string next(const std::string& schedule, const std::string& after) {
  return format_utc(Schedule::parse(schedule).next_after(parse_utc(after)));
}

std::string parse_error(const std::string& schedule) {
  try {
    Schedule::parse(schedule);
  } catch (const conveyor::Error& e) {
    EXPECT_EQ(e.code(), conveyor::errc::bad_input);
    return e.what();
  }
  return "";
}

TEST(Schedule, EverySlotsAreMultiplesOfThePeriodSinceTheEpoch) {
  EXPECT_EQ(next("@every 1h", "2026-12-01T10:20:00Z"), "2026-12-01T11:00:00Z");
  EXPECT_EQ(next("@every 1h", "2026-12-01T11:00:00Z"), "2026-12-01T12:00:00Z") << "strictly after";
  EXPECT_EQ(next("@every 1h30m", "2026-12-01T00:10:00Z"), "2026-12-01T01:30:00Z");
  EXPECT_EQ(next("@every 1d", "2026-12-01T23:59:59Z"), "2026-12-02T00:00:00Z");
  EXPECT_EQ(next("@every 45s", "2026-12-01T00:00:00Z"), "2026-12-01T00:00:45Z");
}

TEST(Schedule, CronFields) {
  EXPECT_EQ(next("*/15 * * * *", "2026-12-01T10:07:30Z"), "2026-12-01T10:15:00Z");
  EXPECT_EQ(next("0 2 * * MON", "2026-12-01T10:00:00Z"), "2026-12-07T02:00:00Z") << "2026-12-01 is a Tuesday";
  EXPECT_EQ(next("0 0 1 JAN *", "2026-12-01T10:00:00Z"), "2027-01-01T00:00:00Z");
  EXPECT_EQ(next("30 6 * * 7", "2026-12-01T10:00:00Z"), "2026-12-06T06:30:00Z") << "7 is Sunday";
  EXPECT_EQ(next("0 9-17/4 * * *", "2026-12-01T10:00:00Z"), "2026-12-01T13:00:00Z");
  EXPECT_EQ(next("5,35 * * * *", "2026-12-01T10:05:00Z"), "2026-12-01T10:35:00Z");
  // Both day fields restricted: either matches (the 13th, or a Friday).
  EXPECT_EQ(next("0 12 13 * FRI", "2026-12-01T00:00:00Z"), "2026-12-04T12:00:00Z");
  EXPECT_EQ(next("0 12 13 * FRI", "2026-12-11T13:00:00Z"), "2026-12-13T12:00:00Z");
  EXPECT_EQ(next("0 0 29 2 *", "2026-03-01T00:00:00Z"), "2028-02-29T00:00:00Z") << "the next leap day";
}

TEST(Schedule, BadSchedulesAreRefusedNamingTheField) {
  EXPECT_NE(parse_error("61 * * * *").find("minute: 61 is out of 0-59"), std::string::npos);
  EXPECT_NE(parse_error("* 24 * * *").find("hour: 24 is out of 0-23"), std::string::npos);
  EXPECT_NE(parse_error("* * * FOO *").find("month: 'FOO' is not a number or a name"), std::string::npos);
  EXPECT_NE(parse_error("* * *").find("5 cron fields, got 3"), std::string::npos);
  EXPECT_NE(parse_error("0 5-2 * * *").find("range 5-2 goes backwards"), std::string::npos);
  EXPECT_NE(parse_error("*/0 * * * *").find("step '0'"), std::string::npos);
  EXPECT_NE(parse_error("@every 0s").find("at least 1s"), std::string::npos);
  EXPECT_NE(parse_error("@every 5x").find("unknown unit 'x'"), std::string::npos);
  EXPECT_THROW(Schedule::parse("0 0 31 2 *").next_after(parse_utc("2026-12-01T00:00:00Z")), conveyor::Error)
      << "February 31st never comes";
}

struct Plan {
  std::vector<std::string> create;
  std::int64_t skipped;
  std::string last;
};

Plan plan(CatchupPolicy policy, const std::string& now, std::optional<std::chrono::seconds> window = std::nullopt,
          std::size_t max = 100) {
  const auto p = plan_due(Schedule::parse("@every 1h"), parse_utc("2026-12-01T10:00:00Z"), parse_utc(now), policy,
                          window, max, 60s);
  Plan out{{}, p.skipped, format_utc(p.last_slot)};
  for (const auto t : p.create) out.create.push_back(format_utc(t).substr(11, 5));
  return out;
}

using Slots = std::vector<std::string>;

// Last run 10:00, back at 15:30: 11:00 .. 15:00 were missed.
TEST(CatchUp, AllCreatesEveryMissedRunOldestFirstInBatches) {
  auto p = plan(CatchupPolicy::all, "2026-12-01T15:30:00Z");
  EXPECT_EQ(p.create, (Slots{"11:00", "12:00", "13:00", "14:00", "15:00"}));
  EXPECT_EQ(p.skipped, 0);
  EXPECT_EQ(p.last, "2026-12-01T15:00:00Z");
  p = plan(CatchupPolicy::all, "2026-12-01T15:30:00Z", std::nullopt, 2);
  EXPECT_EQ(p.create, (Slots{"11:00", "12:00"}));
  EXPECT_EQ(p.last, "2026-12-01T12:00:00Z") << "the next call goes on from there";
}

TEST(CatchUp, LatestCreatesOneRunForTheNewestSlot) {
  const auto p = plan(CatchupPolicy::latest, "2026-12-01T15:30:00Z");
  EXPECT_EQ(p.create, (Slots{"15:00"}));
  EXPECT_EQ(p.skipped, 4);
  EXPECT_EQ(p.last, "2026-12-01T15:00:00Z");
}

TEST(CatchUp, NoneCreatesOnlyASlotThatIsOnTime) {
  auto p = plan(CatchupPolicy::none, "2026-12-01T15:30:00Z");
  EXPECT_TRUE(p.create.empty());
  EXPECT_EQ(p.skipped, 5);
  EXPECT_EQ(p.last, "2026-12-01T15:00:00Z");
  p = plan(CatchupPolicy::none, "2026-12-01T15:00:30Z");
  EXPECT_EQ(p.create, (Slots{"15:00"}));
  EXPECT_EQ(p.skipped, 4);
}

// Issue 13, item 11: the missed range as one run; a single due slot stays a plain run.
TEST(CatchUp, CollapseMakesOneRunOfTheWholeMissedRange) {
  const auto p = plan_due(Schedule::parse("@every 1h"), parse_utc("2026-12-01T10:00:00Z"),
                          parse_utc("2026-12-01T15:30:00Z"), CatchupPolicy::collapse, std::nullopt, 2, 60s);
  EXPECT_TRUE(p.create.empty());
  ASSERT_TRUE(p.collapsed.has_value());
  EXPECT_EQ(format_utc(p.collapsed->first), "2026-12-01T11:00:00Z");
  EXPECT_EQ(format_utc(p.collapsed->last), "2026-12-01T15:00:00Z");
  EXPECT_EQ(p.collapsed->count, 5) << "the batch bound is for `all` only";
  EXPECT_EQ(p.skipped, 0);
  EXPECT_EQ(format_utc(p.last_slot), "2026-12-01T15:00:00Z");
  const auto on_time = plan(CatchupPolicy::collapse, "2026-12-01T11:00:10Z");
  EXPECT_EQ(on_time.create, (Slots{"11:00"}));
  EXPECT_EQ(conveyor::model::parse_catchup_policy("collapse"), CatchupPolicy::collapse);
}

TEST(Slots, BetweenCountsBothEndsWithoutKeepingThem) {
  const auto r = conveyor::model::slots_between(Schedule::parse("0 * * * *"), parse_utc("2026-12-01T10:00:00Z"),
                                                parse_utc("2026-12-02T10:00:00Z"));
  EXPECT_EQ(r.count, 25);
  EXPECT_EQ(format_utc(r.first), "2026-12-01T10:00:00Z");
  EXPECT_EQ(format_utc(r.last), "2026-12-02T10:00:00Z");
  EXPECT_EQ(conveyor::model::slots_between(Schedule::parse("0 * * * *"), parse_utc("2026-12-01T10:01:00Z"),
                                           parse_utc("2026-12-01T10:59:00Z"))
                .count,
            0);
}

TEST(CatchUp, TheWindowSkipsSlotsTooOldWhateverThePolicy) {
  const auto p = plan(CatchupPolicy::all, "2026-12-01T15:30:00Z", std::chrono::hours(2));
  EXPECT_EQ(p.create, (Slots{"14:00", "15:00"}));
  EXPECT_EQ(p.skipped, 3);
  EXPECT_EQ(p.last, "2026-12-01T15:00:00Z");
}

TEST(CatchUp, NothingDueChangesNothing) {
  const auto p = plan(CatchupPolicy::all, "2026-12-01T10:59:59Z");
  EXPECT_TRUE(p.create.empty());
  EXPECT_EQ(p.skipped, 0);
  EXPECT_EQ(p.last, "2026-12-01T10:00:00Z");
}

TEST(UtcTimes, RoundTripAndRefuseWhatIsNotOne) {
  EXPECT_EQ(format_utc(parse_utc("2026-02-28T23:59:07Z")), "2026-02-28T23:59:07Z");
  EXPECT_THROW(parse_utc("2026-02-30T00:00:00Z"), conveyor::Error);
  EXPECT_THROW(parse_utc("2026-02-01 00:00:00"), conveyor::Error);
  EXPECT_THROW(parse_utc("yesterday"), conveyor::Error);
}

}  // namespace
